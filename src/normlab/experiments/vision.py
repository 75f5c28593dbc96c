"""CNN claims on MNIST-1D: ICS and smoothness (C01, C02), learning rates (C03), small batches (C09),
regularization (C13), gamma=0 (C30), weight normalization (C33)."""

from __future__ import annotations

import math
from functools import partial

from .plots import curves_plot, pyplot, save_fig, seed_lines
from .registry import register
from .spec import (PerMode, Verdict, by_name, combine_verdicts, compare, equivalent, experiment, fmt, mean,
                   paired_by_seed, threshold)

CNN = PerMode({  # model and budget per mode (MNIST-1D, 4000 train / 1000 test signals of length 40)
    "quick": dict(widths=[16, 32], blocks_per_stage=1, steps=300, batch=32),
    "full": dict(widths=[16, 32, 64], blocks_per_stage=1, steps=800, batch=32),
    "paper": dict(widths=[64, 128, 256], blocks_per_stage=2, steps=3000, batch=32),
})


def model_cfg(mode: str, **overrides) -> dict:
    s = CNN[mode]
    return {"dim": 1, "input_size": 40, "widths": s["widths"], "blocks_per_stage": s["blocks_per_stage"],
            "arch": "vgg", **overrides}


def train_cfg(mode: str, **overrides) -> dict:
    steps = overrides.pop("steps", CNN[mode]["steps"])
    return {"steps": steps, "lr": 3e-3, "warmup_steps": steps // 10, "grad_clip": 1.0,
            "log_every": max(1, steps // 50), **overrides}


def load_data(spec: dict | None):
    """``{"name": "mnist1d" | "digits", **kwargs}`` -> ClassificationData (MNIST-1D by default)."""
    from ..data import digits, mnist1d

    spec = dict(spec or {"name": "mnist1d"})
    name = spec.pop("name")
    return mnist1d(**spec) if name == "mnist1d" else digits(**spec)


def build_net(model: dict):
    from ..models import ConvNet, ConvNetConfig

    cfg = dict(model)
    cfg["widths"] = tuple(cfg["widths"])
    return ConvNet(ConvNetConfig(**cfg))


def train_net(config: dict, seed: int, net=None, data=None):
    """Train the ConvNet of ``config["model"]`` (or ``net``) on ``config["data"]``; return (net, data, record)."""
    import torch

    from ..train import ClassificationTask, TrainConfig, train

    data = data if data is not None else load_data(config.get("data"))
    torch.manual_seed(seed)
    net = net if net is not None else build_net(config["model"])
    tcfg = dict(config["train"])
    if "betas" in tcfg:
        tcfg["betas"] = tuple(tcfg["betas"])
    task = ClassificationTask(data, config.get("batch", 32), ghost_batch=config.get("ghost_batch"))
    rec = train(net, task, TrainConfig(**tcfg, seed=seed, progress=False, device=config.get("device", "cpu")))
    return net.cpu(), data, rec  # trained on the run's device; the analyses that follow run on the CPU


def summary(rec: dict) -> dict:
    return {"status": rec["status"], "diverged_at": rec["diverged_at"], "final": rec["final"],
            "first_loss": rec["metrics"][0]["loss"] if rec["metrics"] else None,
            "curve": [(m["step"], m["loss"]) for m in rec["metrics"]], "evals": rec["evals"],
            "wall_time_s": rec["wall_time_s"], "error": rec["error"]}


def cnn_run(config: dict, seed: int) -> dict:
    """Train a ConvNet and return its summary (final metrics, loss curve, evaluations)."""
    return summary(train_net(config, seed)[2])


def test_accuracy(net, data) -> float:
    """Accuracy on ``data``'s test split in eval mode (the model's mode is restored)."""
    import torch

    from ..train.tasks import _eval_mode

    with _eval_mode(net), torch.no_grad():
        logits = torch.cat([net(c) for c in data.x_test.split(512)])
    return (logits.argmax(-1) == data.y_test).float().mean().item()


def bars(values: dict[str, list[float]], path: str, title: str, ylabel: str) -> str:
    """One bar per group (its mean) with a dot per seed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, vals) in enumerate(values.items()):
        ax.scatter([i] * len(vals), vals, color=f"C{i % 10}", zorder=3)
        ax.bar(i, mean(vals), color=f"C{i % 10}", alpha=0.35)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (dots: seeds; bars: mean)", fontsize=9)
    return save_fig(fig, path)


def _final(r: dict, key: str) -> float:
    res = r["result"]
    return res["final"].get(key, math.nan) if res["status"] == "ok" else math.nan


# ------------------------------------------------------------------- C01 / C02
LANDSCAPE = PerMode({"quick": dict(steps=150, every=50, blocks_per_stage=1),
                     "full": dict(steps=400, every=100, blocks_per_stage=2),
                     "paper": dict(steps=1500, every=150, blocks_per_stage=2)})
ICS_LRS = (0.05, 0.2)  # C01: ICS at two learning rates, both of which train both nets
LANDSCAPE_LR = 0.05  # C02
STEP_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)
STABLE_ACC = 0.3  # C03: a run "trains" if it is not diverged and reaches this test accuracy (chance: 0.1)
TRAINED_ACC = 0.2  # C01, C02: a run whose test accuracy stays below twice chance did not train and is dropped
ICS_MARKED = 0.5  # C01: BN "markedly reduces" ICS if its ICS is below this fraction of the plain net's


def _landscape_grid(measure: str, lrs: tuple[float, ...]):
    def grid(mode):
        s = dict(LANDSCAPE[mode])
        model = model_cfg(mode, blocks_per_stage=s.pop("blocks_per_stage"))
        return [(norm if len(lrs) == 1 else f"{norm} lr{lr:g}",
                 {"model": {**model, "norm": norm}, "lr": lr, "measure": measure, "init": "he", **s})
                for lr in lrs for norm in ("batchnorm", "none")]
    return grid


def _units(net):
    """Parameter groups in forward order: each conv unit (conv + its norm), then the head."""
    from ..models.cnn import ConvUnit

    groups = [list(m.parameters()) for m in net.modules() if isinstance(m, ConvUnit)]
    return groups + [list(net.head.parameters())]


def _grads(net, loss_fn, params):
    import torch

    return torch.autograd.grad(loss_fn(net), params)


def _measure(net, x, y, lr: float, what: str) -> dict:
    """Santurkar et al.'s quantities at the current parameters, on one batch (BN in training mode).

    ``what``: "ics" (each layer's gradient change when the layers below step
    first) or "landscape" (loss and gradient along -g).
    """
    import copy

    import torch
    import torch.nn.functional as F

    def loss_fn(m):
        return F.cross_entropy(m(x), y)

    groups = _units(net)
    params = [p for g in groups for p in g]
    g_all = _grads(net, loss_fn, params)
    if what == "landscape":
        return _landscape(net, loss_fn, g_all, lr)
    by_param = dict(zip(map(id, params), g_all))
    # ICS of layer i: its gradient before vs after the layers below it took their step on the same batch
    ics_l2, ics_cos = [], []
    for i in range(1, len(groups)):
        w = groups[i][0]  # the conv (or head) weight of group i
        g = by_param[id(w)]
        moved = copy.deepcopy(net)
        mgroups = _units(moved)
        with torch.no_grad():
            for k in range(i):
                for p, q in zip(groups[k], mgroups[k]):
                    q.sub_(lr * by_param[id(p)])
        (g2,) = _grads(moved, loss_fn, [mgroups[i][0]])
        ics_l2.append((g - g2).norm().item())
        ics_cos.append(torch.nn.functional.cosine_similarity(g.flatten(), g2.flatten(), dim=0).item())
    return {"ics_l2": ics_l2, "ics_cos": ics_cos}


def _landscape(net, loss_fn, g_all, lr: float) -> dict:
    """Loss range, largest gradient change and effective beta-smoothness along -g."""
    import copy

    import torch

    gnorm = torch.sqrt(sum(t.square().sum() for t in g_all)).item()
    losses, pred = [], []
    beta = 0.0
    for mult in STEP_MULTIPLES:
        s = lr * mult
        moved = copy.deepcopy(net)
        mparams = [p for g in _units(moved) for p in g]
        with torch.no_grad():
            for p, gp in zip(mparams, g_all):
                p.sub_(s * gp)
        loss = loss_fn(moved)
        g2 = torch.autograd.grad(loss, mparams)
        diff = torch.sqrt(sum((a - b).square().sum() for a, b in zip(g2, g_all))).item()
        losses.append(loss.item())
        pred.append(diff)
        beta = max(beta, diff / (s * gnorm) if gnorm > 0 else 0.0)
    return {"loss_range": max(losses) - min(losses), "grad_change": max(pred), "beta": beta, "grad_norm": gnorm}


def landscape_run(config: dict, seed: int) -> dict:
    """Train a VGG-like ConvNet with SGD; every ``every`` steps measure ICS and the landscape on the batch."""
    import torch
    import torch.nn.functional as F

    data = load_data(config.get("data"))
    torch.manual_seed(seed)
    net = build_net(config["model"]).train()
    with torch.no_grad():  # He init, so the plain net trains too (torch's default shrinks the signal per layer)
        for m in net.modules():
            if config.get("init") == "he" and isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()
    opt = torch.optim.SGD(net.parameters(), lr=config["lr"])
    gen = torch.Generator().manual_seed(seed)
    points, curve = [], []
    for step in range(config["steps"] + 1):
        idx = torch.randint(0, len(data.y_train), (64,), generator=gen)
        x, y = data.x_train[idx], data.y_train[idx]
        if step % config["every"] == 0:
            points.append({"step": step, **_measure(net, x, y, config["lr"], config["measure"])})
        if step == config["steps"]:
            break
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append((step, loss.item()))
    return {"points": points, "curve": curve[:: max(1, len(curve) // 50)], "test_acc": test_accuracy(net, data)}


def _norm(r) -> str:
    return r["config"]["model"]["norm"]


def _trained(r) -> bool:
    return r["result"].get("test_acc", 0.0) >= TRAINED_ACC


def _over_checkpoints(r, key) -> list[float]:
    """Per layer (conv layers only: the head's entry, the last, is left out), the mean of ``key`` over the
    checkpoints after step 0; ``ics_cos`` is read as 1 - cos (0 = no shift)."""
    pts = r["result"]["points"][1:]
    if not pts:
        return []
    if not isinstance(pts[0][key], list):
        return [mean(p[key] for p in pts)]
    layers = len(pts[0][key]) - 1
    vals = [[(1 - p[key][i]) if key == "ics_cos" else p[key][i] for p in pts] for i in range(layers)]
    return [mean(v) for v in vals]


def _log_first(r, key) -> float:
    """log10 of the first entry of :func:`_over_checkpoints` (floored at 1e-12)."""
    return math.log10(max(_over_checkpoints(r, key)[0], 1e-12))


def _log_ratio(a: float, b: float) -> float:
    return math.log10(max(a, 1e-12) / max(b, 1e-12))


def _landscape_pairs(records, lr=None):
    """(BN records, plain records) of the seeds where both trained (at ``lr``), and the seeds dropped."""
    rs = [r for r in records if lr is None or r["config"]["lr"] == lr]
    bn = {r["seed"]: r for r in rs if _norm(r) == "batchnorm"}
    no = {r["seed"]: r for r in rs if _norm(r) == "none"}
    seeds = sorted(set(bn) & set(no))
    keep = [s for s in seeds if _trained(bn[s]) and _trained(no[s])]
    return [bn[s] for s in keep], [no[s] for s in keep], sorted(set(seeds) - set(keep))


def _ratio_text(t: dict) -> str:
    if not (math.isfinite(t["lo"]) and math.isfinite(t["hi"])):
        return f"{fmt(10 ** t['estimate'])} (no CI)"
    return f"{fmt(10 ** t['estimate'])} [{fmt(10 ** t['lo'])}, {fmt(10 ** t['hi'])}]"


def _c01_verdict(records) -> Verdict:
    parts, lines, dropped = {}, [], []
    bound = math.log10(ICS_MARKED)
    for lr in sorted({r["config"]["lr"] for r in records}) or [ICS_LRS[0]]:
        bn, no, lost = _landscape_pairs(records, lr)
        dropped += [f"seed {s} at lr {lr:g}" for s in lost]
        for form, key in (("||G - G'||", "ics_l2"), ("1 - cos(G, G')", "ics_cos")):
            a, b = paired_by_seed(bn, no, partial(_over_checkpoints, key=key))
            layers = min((len(x) for x in a + b), default=1)
            texts = []
            for i in range(layers):
                logs = [_log_ratio(x[i], y[i]) for x, y in zip(a, b)]
                what = f"log10 ICS ratio BN/none, {form}, lr {lr:g}, conv layer {i + 2}"
                v = threshold(logs, what=what, above=bound)
                parts[f"lr {lr:g} {key} layer {i + 2}"] = v
                texts.append(f"layer {i + 2}: {_ratio_text(v.tests[0])}")
            lines.append(f"lr {lr:g}, {form}: " + "; ".join(texts))
    v = combine_verdicts(parts)
    ests = [10 ** t["estimate"] for t in v.tests if math.isfinite(t["estimate"])]
    v.summary = ("ICS ratio BN/none per conv layer (geometric mean over seeds, 95% CI, paired by seed; layer 1 "
                 "has nothing below it, the head is left out): " + " | ".join(lines)
                 + (f"; dropped (an arm at chance): {', '.join(dropped)}" if dropped else ""))
    v.rule = (f"per learning rate, form (||G - G'|| and 1 - cos) and conv layer: the t interval (paired by seed) "
              f"of log10(ICS with BN / ICS without); a part is supported if its CI lies wholly above "
              f"log10({ICS_MARKED}) (BN does not cut ICS below {ICS_MARKED:g}x), not supported if wholly below, "
              f"else inconclusive; the claim is supported only if every part is, not supported if any part is "
              f"(one layer where BN markedly cuts ICS refutes 'does not markedly reduce'); seeds where either "
              f"arm stayed below {TRAINED_ACC:.0%} test accuracy (twice chance) are dropped")
    v.key_number = (f"ICS ratio BN/none {fmt(min(ests))}-{fmt(max(ests))} over layers, forms, lrs" if ests
                    else "no pairs")
    v.versus_paper = ("paper: BN networks' ICS comparable to or larger than standard networks' in both ||G - G'|| "
                      "and cos (ratio about 1 or above; VGG on CIFAR-10, Figure 3, read second-hand); here: ratio "
                      f"{fmt(min(ests)) if ests else '?'}-{fmt(max(ests)) if ests else '?'} per layer; scale: a "
                      "3- (quick) or 7-unit (full) 1-D VGG on MNIST-1D, a few hundred SGD steps")
    return v


def _c02_verdict(records) -> Verdict:
    bn, no, lost = _landscape_pairs(records)
    parts = {}
    for key, what in (("beta", "effective beta-smoothness"), ("loss_range", "loss range along -g")):
        a, b = paired_by_seed(bn, no, partial(_log_first, key=key))
        parts[what] = compare(a, b, expect="less", paired=True, what=f"log10 {what} (mean over checkpoints)",
                              label_a="BN", label_b="none")
    v = combine_verdicts(parts)
    gchg = [_log_ratio(_over_checkpoints(x, "grad_change")[0], _over_checkpoints(y, "grad_change")[0])
            for x, y in zip(*paired_by_seed(bn, no, lambda r: r))]
    ratios = {name: _ratio_text(p.tests[0]) for name, p in parts.items()}
    v.summary = (f"BN/none ratio (geometric mean over seeds, 95% CI, paired by seed; each run averaged over "
                 f"checkpoints): effective beta-smoothness {ratios['effective beta-smoothness']}, loss range along "
                 f"-g {ratios['loss range along -g']}; largest gradient change {fmt(10 ** mean(gchg))} (not judged)"
                 + (f"; dropped seeds (an arm at chance): {lost}" if lost else ""))
    v.rule = ("both parts must be supported: the t interval (paired by seed) of log10(BN) - log10(none) lies "
              "wholly below 0 for the effective beta-smoothness and for the loss range along -g (not supported if "
              "either lies wholly above 0; else inconclusive); seeds where either arm stayed below "
              f"{TRAINED_ACC:.0%} test accuracy (twice chance) are dropped")
    v.key_number = (f"BN/none: beta {ratios['effective beta-smoothness']}, loss range "
                    f"{ratios['loss range along -g']}")
    v.versus_paper = ("paper: loss variation, gradient change and effective beta-smoothness all markedly smaller "
                      "with BN along training (VGG on CIFAR-10, Figure 4; the figure gives curves, no single "
                      f"number); here: BN/none beta ratio {ratios['effective beta-smoothness']}, loss-range ratio "
                      f"{ratios['loss range along -g']}; scale: 1-D VGG on MNIST-1D, a few hundred SGD steps")
    return v


def _landscape_plot(keys, ylabels, suffix):
    def plot(records, verdict, prefix):
        plt = pyplot()
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6))
        for ax, key, ylabel in zip(axes, keys, ylabels):
            def xy(r, key=key):
                pts = r["result"]["points"]
                vals = [mean(p[key][:-1]) if isinstance(p[key], list) else p[key] for p in pts]  # head left out
                return [p["step"] for p in pts], [1 - v for v in vals] if key == "ics_cos" else vals
            seed_lines(ax, records, xy, marker="o", ms=3)
            ax.set_yscale("log")
            ax.set_xlabel("training step")
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=8)
        lrs = ", ".join(f"{lr:g}" for lr in sorted({r["config"]["lr"] for r in records}))
        fig.suptitle(f"VGG-like 1-D CNN on MNIST-1D, SGD lr {lrs} (one line per seed; mean over conv layers)",
                     fontsize=9)
        return [save_fig(fig, f"{prefix}-{suffix}.png")]
    return plot


_LANDSCAPE_SETUP = ("VGG-like 1-D CNN (quick: 3 conv units, widths 16/32; full: 7, widths 16/32/64), He-initialized, "
                    "on MNIST-1D, with BatchNorm and without normalization, plain SGD, batches of 64 (quick 150 "
                    "steps, full 400), seeds: quick 4, full 5; every 50/100 steps on the current batch: ")
_ICS_SETUP = (_LANDSCAPE_SETUP + f"at lr {ICS_LRS[0]:g} and {ICS_LRS[1]:g}, the ICS of each conv layer after the "
              "first (its weight gradient G vs G' after the layers below took their SGD step on the same batch), "
              "as ||G - G'|| and 1 - cos(G, G'), averaged over checkpoints; judged per layer, form and lr on "
              f"log10(BN/none) paired by seed; a seed whose BN or plain run ends below {TRAINED_ACC:.0%} test accuracy "
              "(twice chance) is dropped.")
_SMOOTH_SETUP = (_LANDSCAPE_SETUP + f"at lr {LANDSCAPE_LR:g}, along -g for steps of {{0.25, 0.5, 1, 2, 4}} x lr: the "
                 "loss range, max ||grad(theta - s g) - g|| and the effective beta-smoothness "
                 "max ||grad(theta - s g) - g|| / ||s g||, averaged over checkpoints; judged on log10 BN - log10 "
                 "none paired by seed.")

register(experiment(
    claim="C01", title="BatchNorm does not markedly reduce internal covariate shift",
    statement="Measured as the change of a layer's gradient when the layers before it are updated first, "
              "BatchNorm does not reduce internal covariate shift much (if at all).",
    setup=_ICS_SETUP, grid=_landscape_grid("ics", ICS_LRS), seeds={"quick": 4, "full": 5}, run=landscape_run,
    verdict=_c01_verdict, plot=_landscape_plot(["ics_cos", "ics_l2"], ["ICS: 1 - cos(G, G')", "ICS: ||G - G'||"],
                                               "ics"),
    paper="Santurkar et al. 2018, Figure 3: VGG on CIFAR-10, BN networks show ICS comparable to or larger than "
          "standard ones in both the l2 difference and the cosine.",
))

register(experiment(
    claim="C02", title="BatchNorm smooths the loss landscape",
    statement="Along the gradient direction the loss varies less and the gradient changes less (smaller "
              "effective beta-smoothness) with BatchNorm.",
    setup=_SMOOTH_SETUP, grid=_landscape_grid("landscape", (LANDSCAPE_LR,)), seeds={"quick": 4, "full": 5},
    run=landscape_run, verdict=_c02_verdict,
    plot=_landscape_plot(["loss_range", "grad_change", "beta"],
                         ["loss range along -g (nats)", "max ||grad change||", "effective beta-smoothness"],
                         "landscape"),
    paper="Santurkar et al. 2018, Figure 4: VGG on CIFAR-10, loss landscape variation, gradient predictiveness "
          "and effective beta-smoothness all markedly smaller with BN.",
))


# ------------------------------------------------------------------------ C03
C03_LRS = PerMode({"quick": [0.03, 0.1, 0.3, 1.0, 3.0], "full": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]})
C03_STEPS = PerMode({"quick": 150, "full": 300})  # quick: at 100 steps a plain net at lr 0.03 had not yet reached 30%
C03_NORMS = PerMode({"quick": ("batchnorm", "none"), "full": ("batchnorm", "groupnorm", "layernorm", "none")})

def _c03_grid(mode):
    steps = C03_STEPS[mode]
    return [(f"{norm} lr{lr:g}", {"model": model_cfg(mode, norm=norm), "norm": norm, "lr": lr,
                                  "train": train_cfg(mode, steps=steps, lr=lr, optimizer="sgd", momentum=0.9,
                                                     warmup_steps=0, grad_clip=None, schedule="constant")})
            for norm in C03_NORMS[mode] for lr in C03_LRS[mode]]


def _largest_stable(records) -> dict[str, dict[int, float]]:
    """norm -> seed -> log10 of the largest lr that trained (one decade-half below the sweep if none did)."""
    out: dict[str, dict[int, float]] = {}
    lrs = sorted({r["config"]["lr"] for r in records})
    for r in records:
        norm, seed = r["config"]["norm"], r["seed"]
        best = out.setdefault(norm, {}).setdefault(seed, math.log10(lrs[0]) - 0.5)
        ok = r["result"]["status"] == "ok" and _final(r, "test_acc") >= STABLE_ACC
        if ok:
            out[norm][seed] = max(best, math.log10(r["config"]["lr"]))
    return out


def _c03_verdict(records) -> Verdict:
    best = _largest_stable(records)
    if "batchnorm" not in best or "none" not in best:
        return Verdict("inconclusive", "missing runs", "needs BN and no-norm sweeps",
                       tests=[compare([], [], expect="greater", what="log10 largest trainable lr",
                                      label_a="BatchNorm", label_b="no norm", paired=True).tests[0]])
    seeds = sorted(set(best["batchnorm"]) & set(best["none"]))
    v = compare([best["batchnorm"][s] for s in seeds], [best["none"][s] for s in seeds], expect="greater",
                paired=True, what="log10 largest trainable lr", label_a="BatchNorm", label_b="no norm")
    others = "; ".join(f"{n}: {', '.join(fmt(10 ** x) for x in s.values())}" for n, s in sorted(best.items()))
    v.summary = f"largest trainable SGD lr per seed -- {others}. " + v.summary
    v.rule = (f"a run trains if it did not diverge and reached {STABLE_ACC:.0%} test accuracy; per seed, log10 of the "
              "largest lr of the sweep that trained (half a decade below the sweep if none did), so the values "
              "sit on the sweep's half-decade grid; the interval is the paired t interval (by seed) of the "
              "per-seed log10 difference (all seeds equal: an exact, zero-width interval at the grid's "
              "resolution); " + v.rule)
    v.key_number = (f"BN {fmt(10 ** mean(best['batchnorm'].values()))} vs none "
                    f"{fmt(10 ** mean(best['none'].values()))} (geometric means)")
    v.versus_paper = ("paper: BN allowed up to 30x the learning rate in Ioffe & Szegedy's Inception runs; here: "
                      f"BN/none ratio of the largest trainable lr {fmt(10 ** v.tests[0]['estimate'])} (geometric "
                      "mean over seeds); scale: a 3- (quick) or 4-unit (full) 1-D VGG on MNIST-1D, SGD with "
                      "momentum, a few hundred steps, half-decade lr grid")
    return v


def _c03_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    norms = sorted({r["config"]["norm"] for r in records})
    for i, norm in enumerate(norms):
        rs = [r for r in records if r["config"]["norm"] == norm]
        lrs = sorted({r["config"]["lr"] for r in rs})
        accs = [[_final(r, "test_acc") if r["result"]["status"] == "ok" else 0.0 for r in rs
                 if r["config"]["lr"] == lr] for lr in lrs]
        ax.plot(lrs, [mean(a) for a in accs], marker="o", color=f"C{i}", label=norm)
        ax.fill_between(lrs, [min(a) for a in accs], [max(a) for a in accs], color=f"C{i}", alpha=0.2)
    ax.axhline(STABLE_ACC, color="k", ls=":", lw=0.8, label="'trains' threshold")
    ax.set_xscale("log")
    ax.set_xlabel("SGD learning rate (momentum 0.9, no warm-up, no clipping)")
    ax.set_ylabel("final test accuracy (0 = diverged)")
    ax.set_title("Learning-rate sweep (mean, min-max band over seeds)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-lr.png")]


register(experiment(
    claim="C03", title="Normalization allows larger learning rates",
    statement="The largest learning rate at which a network still trains is higher with BatchNorm (or LN/GN) "
              "than without normalization.",
    setup="VGG-like 1-D CNN on MNIST-1D with BN or nothing (full mode adds GN and LN, shown, not judged), SGD "
          "with momentum 0.9, constant lr on a half-decade grid 0.03-3 (full: 0.01-10), no warm-up or clipping, "
          f"{C03_STEPS['quick']} (quick) or {C03_STEPS['full']} (full) steps of batch 32; seeds: quick 3, full 4; divergence as "
          "the training loop defines it (NaN, or the loss's moving average above 1.5x the first loss). Judged: "
          "per seed log10 of the largest lr that trains, BN - none by a paired t interval (not a bootstrap: with "
          "3-4 seeds a percentile bootstrap is too narrow).",
    grid=_c03_grid, seeds={"quick": 3, "full": 4}, run=cnn_run, verdict=_c03_verdict, plot=_c03_plot,
    paper="Ioffe & Szegedy 2015, Section 3.3 and 4.2: BN enables higher learning rates (up to 30x in their "
          "Inception experiments); Bjorck et al. 2018 tie BN's benefit to the larger usable learning rate.",
))


# ------------------------------------------------------------------------ C09
# One worker whose batch is the per-worker batch, so GN's and LN's batches change too (Wu & He's setup, on one
# worker); every batch size sees the same samples (Wu & He keep the epochs), so a batch of b takes 32/b times the
# steps of a batch of 32, and the lr follows AdamW's square-root rule, lr(b) = C09_LR * sqrt(b / 32) (Wu & He scale
# SGD's lr linearly).  C09_STEPS32 steps at 32 (4 epochs of the 4000 signals) bring GN within a few points of BN.
C09 = PerMode({"quick": dict(batches=[32, 8], norms=("batchnorm", "groupnorm")),  # b=2 (16x the steps): full only
               "full": dict(batches=[32, 8, 2], norms=("batchnorm", "groupnorm", "layernorm")),
               "paper": dict(batches=[32, 16, 8, 4, 2], norms=("batchnorm", "groupnorm", "layernorm"))})  # Wu & He
C09_STEPS32 = PerMode({"quick": 500, "full": 500, "paper": 1000})
C09_WIDTHS = [16, 32]  # both modes: the full widths would cost 1.5x per step, on top of 16x the steps at b=2
C09_LR = 0.02
C09_MIN_EFFECT = 0.02  # BN must lose at least 2 accuracy points more than GN (LN)


def _c09_grid(mode):
    runs = []
    for norm in C09[mode]["norms"]:
        for b in C09[mode]["batches"]:
            steps = C09_STEPS32[mode] * 32 // b
            train = train_cfg(mode, steps=steps, lr=C09_LR * math.sqrt(b / 32), grad_clip=None,
                              log_every=max(1, steps // 50))
            model = model_cfg(mode, norm=norm, widths=C09_WIDTHS)  # VGG-like: GN(32) 0.94 vs BN 0.96
            runs.append((f"{norm} per-worker {b}", {"model": model, "norm": norm,
                                                    "per_worker": b, "batch": b, "train": train}))
    return runs


def _acc_by(records, norm) -> dict[int, dict[int, float]]:
    """per-worker batch -> seed -> test accuracy (0 if the run diverged)."""
    out: dict[int, dict[int, float]] = {}
    for r in records:
        if r["config"]["norm"] == norm:
            acc = _final(r, "test_acc")
            out.setdefault(r["config"]["per_worker"], {})[r["seed"]] = 0.0 if math.isnan(acc) else acc
    return out


WU_HE = {"batchnorm": {32: 23.6, 4: 27.3, 2: 34.7}, "groupnorm": {32: 24.1, 4: 24.2, 2: 24.1}}  # top-1 error, %


def _drops(records, norm) -> tuple[list[float], list[float]]:
    """Per seed (aligned on BN's seeds): accuracy at the largest per-worker batch minus at the smallest."""
    acc, ref = _acc_by(records, norm), _acc_by(records, "batchnorm")
    if not acc or not ref:
        return [], []
    seeds = sorted(set(acc[max(acc)]) & set(acc[min(acc)]) & set(ref[max(ref)]) & set(ref[min(ref)]))
    return ([ref[max(ref)][s] - ref[min(ref)][s] for s in seeds], [acc[max(acc)][s] - acc[min(acc)][s] for s in seeds])


def _gaps_by_batch(records, other: str) -> dict[int, dict]:
    """Per per-worker batch: the paired interval of BN's accuracy minus ``other``'s (negative: BN below)."""
    from .stats import interval

    bn, ot = _acc_by(records, "batchnorm"), _acc_by(records, other)
    out = {}
    for b in sorted(set(bn) & set(ot), reverse=True):
        seeds = sorted(set(bn[b]) & set(ot[b]))
        out[b] = interval(f"accuracy BN - {other} at {b}", [bn[b][s] for s in seeds], [ot[b][s] for s in seeds],
                          paired=True).to_dict()
    return out


def _c09_verdict(records) -> Verdict:
    others = [n for n in ("groupnorm", "layernorm") if any(r["config"]["norm"] == n for r in records)]
    parts = {}
    for other in others or ["groupnorm"]:
        bn, ot = _drops(records, other)
        parts[f"BN vs {other}"] = compare(
            bn, ot, expect="greater", paired=True, min_effect=C09_MIN_EFFECT,
            what="accuracy drop from the largest to the smallest per-worker batch", label_a="BatchNorm",
            label_b=other)
    v = combine_verdicts(parts) if len(parts) > 1 else next(iter(parts.values()))
    crossing = []
    for other in others:
        gaps = _gaps_by_batch(records, other)
        below = [b for b, t in gaps.items() if t["hi"] < 0]
        crossing.append(f"BN - {other} accuracy by per-worker batch (paired 95% CI): "
                        + ", ".join(f"{b}: {fmt(t['estimate'])} [{fmt(t['lo'])}, {fmt(t['hi'])}]"
                                    for b, t in gaps.items())
                        + (f" (BN below {other} at {', '.join(map(str, below))})" if below else
                           f" (BN never wholly below {other})"))
    v.summary += "; " + "; ".join(crossing)
    v.rule = ("one worker whose batch is the per-worker batch (AdamW lr scaled with its square root, the same "
              "samples seen at every batch); the drop is accuracy at the largest per-worker batch minus at the smallest, per "
              "seed; " + v.rule)
    err = {n: {b: 100 * (1 - mean(a.values())) for b, a in _acc_by(records, n).items()} for n in ("batchnorm",
                                                                                                   "groupnorm")}
    if err["batchnorm"] and err["groupnorm"]:
        here = "; ".join(f"{n} " + ", ".join(f"{fmt(e[b], 3)}% at {b}" for b in sorted(e, reverse=True))
                         for n, e in (("BN", err["batchnorm"]), ("GN", err["groupnorm"])))
        v.versus_paper = ("paper: ResNet-50 on ImageNet, 8 workers, lr 0.1 x per-worker batch / 32: top-1 error BN "
                          "23.6% at 32 images per worker, 27.3% at 4, 34.7% at 2 (+11.1 points); GN 24.1%, 24.2%, "
                          f"24.1% (flat); here (test error): {here}; scale: a small 1-D CNN on MNIST-1D (4000 "
                          "training signals), one worker, a few epochs instead of 100")
        bn, gn = _drops(records, "groupnorm")
        v.key_number = (f"drop 32->{min(err['batchnorm'])}: BN {fmt(mean(bn))} vs GN {fmt(mean(gn))}; "
                        f"diff {fmt(v.tests[0]['estimate'])} [{fmt(v.tests[0]['lo'])}, {fmt(v.tests[0]['hi'])}]")
    return v


def _c09_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    norms = [n for n in ("batchnorm", "groupnorm", "layernorm") if any(r["config"]["norm"] == n for r in records)]
    for i, norm in enumerate(norms):
        acc = _acc_by(records, norm)
        bs = sorted(acc, reverse=True)
        err = [[100 * (1 - a) for a in acc[b].values()] for b in bs]
        ax.plot(bs, [mean(e) for e in err], marker="o", color=f"C{i}", label=f"{norm} (here)")
        for b, e in zip(bs, err):
            ax.scatter([b] * len(e), e, color=f"C{i}", s=8, alpha=0.5)
    paper = ax.twinx()
    for i, norm in enumerate(n for n in norms if n in WU_HE):
        bs = sorted(WU_HE[norm], reverse=True)
        paper.plot(bs, [WU_HE[norm][b] for b in bs], ls="--", marker="x", color=f"C{i}", alpha=0.6,
                   label=f"{norm} (Wu & He, right axis)")
    paper.set_ylabel("Wu & He ResNet-50 ImageNet top-1 error (%)", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([32, 16, 8, 4, 2], ["32", "16", "8", "4", "2"])
    ax.invert_xaxis()
    ax.set_xlabel("per-worker batch (= the optimizer's batch; same samples seen at every size)")
    ax.set_ylabel("test error here (%)")
    ax.set_title("Error vs per-worker batch (dots: seeds; dashed: Wu & He 2018)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    paper.legend(fontsize=7, loc="upper center")
    return [save_fig(fig, prefix + "-batch.png")]


register(experiment(
    claim="C09", title="BatchNorm degrades at small batches; GroupNorm and LayerNorm hold",
    statement="Accuracy with BatchNorm falls as the batch its statistics see shrinks (below ~16-32), while "
              "GroupNorm and LayerNorm stay put.",
    setup="VGG-like 1-D CNN on MNIST-1D (3 conv units, widths 16/32, in both modes), one worker whose batch is the "
          "per-worker batch, so BN's, GN's and LN's batches all change: per-worker "
          f"{'/'.join(map(str, C09['quick']['batches']))} (quick: BN, GN) or "
          f"{'/'.join(map(str, C09['full']['batches']))} (full: BN, GN, LN); every size sees the same samples "
          f"({C09_STEPS32['quick']} steps at 32, 4 epochs; 32/b times as many at b), AdamW with lr "
          f"{C09_LR:g} x sqrt(b/32) (Adam's square-root rule; Wu & He scaled SGD's linearly), 10% warm-up + "
          "cosine, no clipping; seeds: quick 3, full 4; test accuracy in eval mode. Judged: per seed, accuracy at "
          "32 minus at the smallest batch, BN's minus GN's (and LN's in full), paired by seed, above "
          f"{C09_MIN_EFFECT}; the per-size BN - GN differences (paired CIs) show where BN crosses below.",
    grid=_c09_grid, seeds={"quick": 3, "full": 4}, run=cnn_run, verdict=_c09_verdict, plot=_c09_plot,
    paper="Wu & He 2018, Figure 1 (ResNet-50, ImageNet, 8 workers): BN 23.6% error at 32 images/worker vs 34.7% "
          "at 2; GN 24.1% at both.",
))


# ------------------------------------------------------------------------ C13
C13_TARGET = 0.15  # the training loss (eval mode, whole train set) at which the gap is read ...
C13_MAX_TARGET = 0.5  # ... or the lowest one every run reached, if higher, up to this


def _c13_target(records) -> float:
    """The common training loss: C13_TARGET, or the highest of the runs' lowest training losses."""
    return max([C13_TARGET] + [min(e["train_loss"] for e in r["result"]["evals"]) for r in records])


C13_STEPS = PerMode({"quick": 500, "full": 600})  # constant lr: both reach the target loss well before the end


def _c13_grid(mode):
    steps = C13_STEPS[mode]
    data = {"name": "mnist1d", "num_samples": 1000}  # 800 training signals: room to overfit
    norms = ("batchnorm", "layernorm") if mode == "quick" else ("batchnorm", "layernorm", "groupnorm")
    return [(norm, {"model": model_cfg(mode, norm=norm, arch="resnet"), "norm": norm, "data": data,
                    "train": train_cfg(mode, steps=steps, eval_every=steps // 40, schedule="constant")})
            for norm in norms]


def _gap_at_target(r, target: float) -> float:
    """The gap (test - train loss) where the training loss first reaches ``target``, interpolated linearly in
    log training loss between the two evaluations around it (NaN if the run never gets there)."""
    evals = r["result"]["evals"]
    for prev, e in zip([None] + evals[:-1], evals):
        if e["train_loss"] <= target:
            if prev is None or prev["train_loss"] <= target:
                return e["test_loss"] - e["train_loss"]
            x0, x1 = math.log(prev["train_loss"]), math.log(max(e["train_loss"], 1e-12))
            w = (x0 - math.log(target)) / (x0 - x1)
            g0, g1 = prev["test_loss"] - prev["train_loss"], e["test_loss"] - e["train_loss"]
            return g0 + w * (g1 - g0)
    return math.nan


def _c13_verdict(records) -> Verdict:
    target = _c13_target(records)
    g = by_name(records)
    ok = target <= C13_MAX_TARGET
    ln, bn = paired_by_seed(g.get("layernorm", []), g.get("batchnorm", []),
                            lambda r: _gap_at_target(r, target) if ok else math.nan)
    pairs = [(a, b) for a, b in zip(ln, bn) if not (math.isnan(a) or math.isnan(b))]
    v = compare([a for a, _ in pairs], [b for _, b in pairs], expect="greater", paired=True,
                what=f"test - train loss at train loss {fmt(target)}", label_a="LayerNorm", label_b="BatchNorm")
    if not ok:
        v.summary = f"a model only reached training loss {fmt(target)} (> {C13_MAX_TARGET}): no common point; " + \
            v.summary
    v.rule += (f"; constant lr; the gap is read where the training loss (eval mode, whole train set) first reaches "
               f"{C13_TARGET}, interpolated in log loss between the evaluations around it (if some run never got "
               f"there: the highest of the runs' lowest training losses, at most {C13_MAX_TARGET}); paired by seed")
    if g.get("groupnorm"):
        gn = [x for x in (_gap_at_target(r, target) for r in g["groupnorm"]) if not math.isnan(x)]
        v.summary += f"; GroupNorm {fmt(mean(gn))} (n={len(gn)}, not judged)"
    v.key_number = (f"gap at train loss {fmt(target)}: LN {fmt(mean(a for a, _ in pairs))} vs BN "
                    f"{fmt(mean(b for _, b in pairs))}; diff {fmt(v.tests[0]['estimate'])} "
                    f"[{fmt(v.tests[0]['lo'])}, {fmt(v.tests[0]['hi'])}]")
    return v


def _c13_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    seed_lines(ax, records, lambda r: ([e["train_loss"] for e in r["result"]["evals"]],
                                       [e["test_loss"] - e["train_loss"] for e in r["result"]["evals"]]),
               marker=".", alpha=0.8)
    ax.axvline(_c13_target(records), color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("training loss (eval mode, whole train set; training goes right)")
    ax.set_ylabel("test loss - training loss (nats)")
    ax.set_title("Generalization gap along training (one line per seed)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-gap.png")]


register(experiment(
    claim="C13", title="BatchNorm regularizes more than LayerNorm",
    statement="BatchNorm's batch noise regularizes: at equal training loss its train/test gap is smaller than "
              "LayerNorm's (and GroupNorm's).",
    setup=f"Residual 1-D CNN with BN, LN (and GN in full mode, not judged) on a small MNIST-1D (800 training "
          f"signals), AdamW at a constant lr 3e-3 after a 10% warm-up (no decay, so both norms are compared at the "
          f"same schedule phase), {C13_STEPS['quick']} (quick) / {C13_STEPS['full']} (full) steps of batch 32, "
          "evaluated 40 times (eval mode, whole train and test sets); seeds: quick 4, full 5; the gap (test loss "
          f"- train loss) is read where the training loss first reaches {C13_TARGET}, interpolated in log loss "
          "between the evaluations around it (if a run never got there: the highest of the runs' lowest training "
          f"losses, up to {C13_MAX_TARGET}); LN - BN paired by seed.",
    grid=_c13_grid, seeds={"quick": 4, "full": 5}, run=cnn_run, verdict=_c13_verdict, plot=_c13_plot,
))


# ------------------------------------------------------------------------ C30
C30_VANISHED = 1e-3  # the first conv's gradient 'vanishes' below this fraction of gamma=1's
C30_STEPS = PerMode({"quick": 100, "full": 300})


def _c30_grid(mode):
    steps = C30_STEPS[mode]
    base = model_cfg(mode, norm="batchnorm", arch="resnet")
    arms = [("gamma=1", 1.0, False), ("gamma=0", 0.0, False)]
    if mode == "full":  # the contrast (not judged)
        arms.append(("gamma=0 on each block's last norm only", 1.0, True))
    return [(name, {"model": {**base, "gamma_init": g}, "zero_last": zl, "train": train_cfg(mode, steps=steps)})
            for name, g, zl in arms]


def gamma_run(config: dict, seed: int) -> dict:
    """Gradient reaching the first conv and the logits' spread at init, then a training run."""
    import torch
    import torch.nn.functional as F

    data = load_data(config.get("data"))
    torch.manual_seed(seed)
    net = build_net(config["model"])
    if config.get("zero_last"):  # Goyal et al.'s zero-init of the last BN in each residual branch
        with torch.no_grad():
            for name, m in net.named_modules():
                if name.endswith("unit2.norm"):
                    m.weight.zero_()
    x, y = data.x_train[:128], data.y_train[:128]
    logits = net.train()(x)
    F.cross_entropy(logits, y).backward()
    init = {"first_conv_grad": net.stem.conv.weight.grad.norm().item(), "logit_std": logits.std().item()}
    net.zero_grad(set_to_none=True)
    _, _, rec = train_net(config, seed, net=net, data=data)
    return {**summary(rec), "init": init}


def _c30_verdict(records) -> Verdict:
    g = by_name(records)
    zero, one = g.get("gamma=0", []), g.get("gamma=1", [])
    g0, g1 = paired_by_seed(zero, one, lambda r: r["result"]["init"]["first_conv_grad"])
    grad = threshold([a / b for a, b in zip(g0, g1)], below=C30_VANISHED,
                     what="first conv's gradient norm at init, gamma=0 / gamma=1 (per seed)")
    l0, l1 = paired_by_seed(zero, one, lambda r: _final(r, "train_loss"))
    loss = compare(l0, l1, expect="greater", paired=True, what="final training loss", label_a="gamma=0",
                   label_b="gamma=1", min_effect=0.1)
    v = combine_verdicts({"gradient vanishes at init": grad, "training stalls": loss})
    zl = g.get("gamma=0 on each block's last norm only", [])
    v.summary = (f"gradient norm at the first conv at init: gamma=0 {fmt(mean(g0))} vs gamma=1 {fmt(mean(g1))}, "
                 f"ratio {grad.tests[0]['estimate']:.3g}; logit std at init "
                 f"{fmt(mean(r['result']['init']['logit_std'] for r in zero))} vs "
                 f"{fmt(mean(r['result']['init']['logit_std'] for r in one))}; " + loss.summary
                 + (f"; zero-init of each block's last norm only: final train loss "
                    f"{fmt(mean(_final(r, 'train_loss') for r in zl))} (not judged)" if zl else ""))
    v.key_number = f"train loss {fmt(mean(l0))} vs {fmt(mean(l1))}; grad ratio {grad.tests[0]['estimate']:.3g}"
    return v


register(experiment(
    claim="C30", title="gamma = 0 at init stops the signal and the gradient",
    statement="Initializing every norm's gamma to 0 zeroes the signal after the first norm and the gradient to "
              "earlier layers, so training stalls; gamma = 1 trains.",
    setup="Residual 1-D CNN with BatchNorm on MNIST-1D: every gamma 1, every gamma 0, and (full mode, not judged) "
          "gamma 0 only on the last norm of each residual block (the 'zero-init residual' trick, for contrast); "
          "gradient at the first conv and logit spread at init on 128 signals, then AdamW lr 3e-3 for "
          f"{C30_STEPS['quick']} (quick) / {C30_STEPS['full']} (full) steps; seeds: 4. Judged: the per-seed ratio "
          f"of the first conv's gradient (gamma=0 / gamma=1) below {C30_VANISHED:g} (t interval) and the final "
          "training loss gamma=0 - gamma=1 above 0.1 nats (paired by seed); both must hold.",
    grid=_c30_grid, seeds={"quick": 4, "full": 4}, run=gamma_run, verdict=_c30_verdict,
    plot=lambda records, verdict, prefix: [curves_plot(records, prefix, "gamma initialization",
                                                        "training loss (nats)")],
    paper="Goyal et al. 2017: zero-initializing the last BN gamma of each residual block is a useful trick; "
          "zeroing every gamma (no skip around the stem) blocks all signal.",
))


# ------------------------------------------------------------------------ C33
C33_STEPS = PerMode({"quick": 200, "full": 500})
def _c33_grid(mode):
    steps = C33_STEPS[mode]
    norms = ("weightnorm", "batchnorm") if mode == "quick" else ("weightnorm", "batchnorm", "none")
    return [(norm, {"model": model_cfg(mode, norm=norm, arch="resnet"), "norm": norm,
                    "train": train_cfg(mode, steps=steps)}) for norm in norms]


def data_dependent_init(net, x) -> None:
    """Salimans & Kingma's init: layer by layer, scale g and set the bias so each unit's pre-activation
    has zero mean and unit variance on the batch ``x``."""
    import torch

    layers = [m for m in net.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")]
    for m in layers:
        seen: dict[str, torch.Tensor] = {}
        handle = m.register_forward_hook(lambda mod, args, out: seen.setdefault("out", out.detach()))
        with torch.no_grad():
            net(x)
        handle.remove()
        out = seen["out"]
        dims = [d for d in range(out.ndim) if d != 1]
        mu, sd = out.mean(dims), out.std(dims).clamp_min(1e-6)
        with torch.no_grad():
            g = m.parametrizations.weight.original0
            g.div_(sd.view(g.shape))
            m.bias.sub_(mu).div_(sd)


def wn_run(config: dict, seed: int) -> dict:
    """cnn_run, with Salimans & Kingma's data-dependent init for weight-normalized nets."""
    import torch

    if config["norm"] != "weightnorm":
        return cnn_run(config, seed)
    data = load_data(config.get("data"))
    torch.manual_seed(seed)
    net = build_net(config["model"])
    idx = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[:256]
    data_dependent_init(net, data.x_train[idx])
    return summary(train_net(config, seed, net=net, data=data)[2])


C33_TOLERANCE = 0.03  # "about as well": test accuracy within 3 points of BN's


def _c33_verdict(records) -> Verdict:
    g = by_name(records)
    wn, bn = paired_by_seed(g.get("weightnorm", []), g.get("batchnorm", []), lambda r: _final(r, "test_acc"))
    v = equivalent(wn, bn, paired=True, tolerance=C33_TOLERANCE, what="final test accuracy",
                   label_a="weight norm", label_b="BatchNorm")
    none = [_final(r, "test_acc") for r in g.get("none", [])]
    if none:
        v.summary += f"; no normalization {fmt(mean(none))} (n={len(none)}, not judged)"
    v.rule += "; paired by seed"
    v.key_number = f"acc WN {fmt(mean(wn))} vs BN {fmt(mean(bn))}; " + v.key_number
    return v


register(experiment(
    claim="C33", title="Weight normalization vs BatchNorm on a small CNN",
    statement="Weight normalization (w = g v / ||v||) trains the same small nets about as well as BatchNorm.",
    setup="Residual 1-D CNN on MNIST-1D with weight-normalized convs and head (no activation norm) and the "
          "paper's data-dependent init (256 training signals), with BatchNorm, and (full mode, not judged) with "
          f"nothing (torch's default init); AdamW lr 3e-3, warm-up + cosine, {C33_STEPS['quick']} (quick) / "
          f"{C33_STEPS['full']} (full) steps; seeds: quick 4, full 5. Judged as an equivalence test: the paired "
          f"(by seed) 95% CI of the test-accuracy difference WN - BN must lie inside +-{C33_TOLERANCE:g}.",
    grid=_c33_grid, seeds={"quick": 4, "full": 5}, run=wn_run, verdict=_c33_verdict,
    plot=lambda records, verdict, prefix: [curves_plot(records, prefix, "weight norm vs BN vs none",
                                                        "training loss (nats)"),
                                           bars({n: [_final(r, "test_acc") for r in rs] for n, rs in
                                                 by_name(records).items()}, prefix + "-acc.png",
                                                "final test accuracy", "test accuracy")],
    paper="Salimans & Kingma 2016: weight normalization matched or beat BN on CIFAR-10 at lower cost.",
))

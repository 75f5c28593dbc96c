"""C01 and C02's measurements along training: internal covariate shift of each conv layer, and the loss and
gradient along the gradient step (Santurkar et al. 2018's protocol)."""

from __future__ import annotations

import math

from ..plots import pyplot, save_fig, seed_lines
from ..spec import PerMode
from ..verdicts import fmt, mean
from .cnn import build_net, load_data, model_cfg, test_accuracy


LANDSCAPE = PerMode({"quick": dict(steps=150, every=50, blocks_per_stage=1),
                     "full": dict(steps=400, every=100, blocks_per_stage=2),
                     "paper": dict(steps=1500, every=150, blocks_per_stage=2)})

STEP_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)

TRAINED_ACC = 0.2  # C01, C02: a run whose test accuracy stays below twice chance did not train and is dropped


def landscape_grid(measure: str, lrs: tuple[float, ...]):
    def grid(mode):
        s = dict(LANDSCAPE[mode])
        model = model_cfg(mode, blocks_per_stage=s.pop("blocks_per_stage"))
        return [(norm if len(lrs) == 1 else f"{norm} lr{lr:g}",
                 {"model": {**model, "norm": norm}, "lr": lr, "measure": measure, "init": "he", **s})
                for lr in lrs for norm in ("batchnorm", "none")]
    return grid


def units(net):
    """Parameter groups in forward order: each conv unit (conv + its norm), then the head."""
    from ...models.cnn import ConvUnit

    groups = [list(m.parameters()) for m in net.modules() if isinstance(m, ConvUnit)]
    return groups + [list(net.head.parameters())]


def grads(net, loss_fn, params):
    import torch

    return torch.autograd.grad(loss_fn(net), params)


def measure(net, x, y, lr: float, what: str) -> dict:
    """Santurkar et al.'s quantities at the current parameters, on one batch (BN in training mode).

    ``what``: "ics" (each layer's gradient change when the layers below step
    first) or "landscape" (loss and gradient along -g).
    """
    import copy

    import torch
    import torch.nn.functional as F

    def loss_fn(m):
        return F.cross_entropy(m(x), y)

    groups = units(net)
    params = [p for g in groups for p in g]
    g_all = grads(net, loss_fn, params)
    if what == "landscape":
        return landscape(net, loss_fn, g_all, lr)
    by_param = dict(zip(map(id, params), g_all))
    # ICS of layer i: its gradient before vs after the layers below it took their step on the same batch
    ics_l2, ics_cos, g_norm = [], [], []
    for i in range(1, len(groups)):
        w = groups[i][0]  # the conv (or head) weight of group i
        g = by_param[id(w)]
        moved = copy.deepcopy(net)
        mgroups = units(moved)
        with torch.no_grad():
            for k in range(i):
                for p, q in zip(groups[k], mgroups[k]):
                    q.sub_(lr * by_param[id(p)])
        (g2,) = grads(moved, loss_fn, [mgroups[i][0]])
        ics_l2.append((g - g2).norm().item())
        g_norm.append(g.norm().item())  # C01 reads ICS relative to it: ||G - G'|| / ||G||
        ics_cos.append(torch.nn.functional.cosine_similarity(g.flatten(), g2.flatten(), dim=0).item())
    return {"ics_l2": ics_l2, "ics_cos": ics_cos, "ics_g_norm": g_norm}


def landscape(net, loss_fn, g_all, lr: float) -> dict:
    """Loss range, largest gradient change and effective beta-smoothness along -g."""
    import copy

    import torch

    gnorm = torch.sqrt(sum(t.square().sum() for t in g_all)).item()
    losses, pred = [], []
    beta = 0.0
    for mult in STEP_MULTIPLES:
        s = lr * mult
        moved = copy.deepcopy(net)
        mparams = [p for g in units(moved) for p in g]
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
            points.append({"step": step, **measure(net, x, y, config["lr"], config["measure"])})
        if step == config["steps"]:
            break
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append((step, loss.item()))
    return {"points": points, "curve": curve[:: max(1, len(curve) // 50)], "test_acc": test_accuracy(net, data)}


def norm_of(r) -> str:
    return r["config"]["model"]["norm"]


def trained(r) -> bool:
    return r["result"].get("test_acc", 0.0) >= TRAINED_ACC


def over_checkpoints(r, key) -> list[float]:
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


def log_ratio(a: float, b: float) -> float:
    return math.log10(max(a, 1e-12) / max(b, 1e-12))


def landscape_pairs(records, lr=None):
    """(BN records, plain records) of the seeds where both trained (at ``lr``), and the seeds dropped."""
    rs = [r for r in records if lr is None or r["config"]["lr"] == lr]
    bn = {r["seed"]: r for r in rs if norm_of(r) == "batchnorm"}
    no = {r["seed"]: r for r in rs if norm_of(r) == "none"}
    seeds = sorted(set(bn) & set(no))
    keep = [s for s in seeds if trained(bn[s]) and trained(no[s])]
    return [bn[s] for s in keep], [no[s] for s in keep], sorted(set(seeds) - set(keep))


def ratio_text(t: dict) -> str:
    if not (math.isfinite(t["lo"]) and math.isfinite(t["hi"])):
        return f"{fmt(10 ** t['estimate'])} (no CI)"
    return f"{fmt(10 ** t['estimate'])} [{fmt(10 ** t['lo'])}, {fmt(10 ** t['hi'])}]"


def landscape_plot(keys, ylabels, suffix):
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


LANDSCAPE_SETUP = ("VGG-like 1-D CNN (quick: 3 conv units, widths 16/32; full: 7, widths 16/32/64), He-initialized, "
                    "on MNIST-1D, with BatchNorm and without normalization, plain SGD, batches of 64 (quick 150 "
                    "steps, full 400), seeds: quick 4, full 5; every 50/100 steps on the current batch: ")

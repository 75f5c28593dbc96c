"""Training stability without (or with other) normalization: qk-norm and lr sensitivity, init scale, DyT and DeepNorm (C26, C31, C34)."""

from __future__ import annotations

import math

from .lm import SIZES, final_loss, lm_run, model_cfg, train_cfg
from .plots import pyplot, save_fig
from .registry import register
from .spec import PerMode, Verdict, combine_verdicts, compare, experiment, fmt, mean, threshold


def _per_seed(records, name: str) -> dict[int, dict]:
    """The records of one run name by seed."""
    return {r["seed"]: r for r in records if r["name"] == name}


def _complete_seeds(records, names) -> list[int]:
    """Seeds that have a record for every name in ``names`` (a seed with a missing run is left out)."""
    seeds = None
    for name in names:
        have = set(_per_seed(records, name))
        seeds = have if seeds is None else seeds & have
    return sorted(seeds or ())


# ------------------------------------------------------------------------ C26
C26_LRS = [3e-4, 3e-3, 3e-2, 3e-1]  # spans Wortsman et al.'s sweep 3e-4..3e-1 one decade apart (they add the half-decades)
C26_SWEEP = PerMode({"quick": C26_LRS, "full": C26_LRS,
                     "paper": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]})  # paper: their 7 learning rates
C26_STEPS = PerMode({"quick": 90, "full": 200})
C26_ZLOSS = 1e-4  # Wortsman et al.: z-loss 1e-4 * log^2 Z in both arms
C26_DECAY = 1e-4  # ... and weight decay 1e-4 independent of the lr (AdamW's decay is multiplied by the lr)
C26_SENS_EFFECT = 0.02  # nats: a smaller drop in lr sensitivity is not counted as an effect
C26_LOGIT_EFFECT = 1.0  # log10: qk-norm must keep the largest logit at least 10x smaller
C26_ARMS = {"none": "no qk-norm", "layernorm": "qk-layernorm"}


def _c26_name(qk: str, lr: float) -> str:
    return f"qk-{qk}-lr{lr:g}"


def _c26_grid(mode):
    steps = C26_STEPS[mode]
    out = []
    for qk in C26_ARMS:
        for lr in C26_SWEEP[mode]:
            out.append((_c26_name(qk, lr), {
                "model": model_cfg(mode, placement="pre", qk_norm=qk, z_loss=C26_ZLOSS),
                "train": train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, weight_decay=C26_DECAY / lr,
                                   instruments=["attn_logits"], instrument_every=max(1, steps // 10),
                                   log_every=max(1, steps // 25), diverge_factor=3.0)}))
    return out


def _diverged(r) -> bool:
    """Wortsman et al.'s sense: the loss went non-finite or the run ended above its initial loss."""
    res = r["result"]
    final = res["final"].get("val_loss", math.nan) if res["status"] == "ok" else math.nan
    first = res["first_loss"]
    return res["status"] != "ok" or not math.isfinite(final) or (first is not None and final > first)


def _swept_lrs(records) -> list[float]:
    """The learning rates of the sweep the records hold (the mode's sweep)."""
    return sorted({float(r["name"].rsplit("-lr", 1)[1]) for r in records if "-lr" in r["name"]}) or list(C26_LRS)


def _sensitivity(records, qk: str, seeds) -> dict[int, float]:
    """Wortsman et al.'s lr sensitivity per seed: mean over the lr sweep of min(final, initial) - best."""
    out = {}
    for s in seeds:
        finals = []
        for lr in _swept_lrs(records):
            r = _per_seed(records, _c26_name(qk, lr))[s]
            first, final = r["result"]["first_loss"], final_loss(r)
            finals.append(min(final, first) if math.isfinite(final) else first)
        out[s] = mean(f - min(finals) for f in finals)
    return out


def _max_logit(r) -> float:
    vals = [e["attn_logits"].get("blocks.0.attn", math.nan) for e in r["result"].get("instruments", [])
            if "attn_logits" in e]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals) if vals else math.nan


def _sweep_logit(records, qk: str, s: int) -> float:
    """log10 of the largest layer-0 attention logit over the whole lr sweep of one seed."""
    vals = [_max_logit(_per_seed(records, _c26_name(qk, lr))[s]) for lr in _swept_lrs(records)]
    vals = [v for v in vals if math.isfinite(v)]
    return math.log10(max(vals)) if vals and max(vals) > 0 else math.nan


def _c26_verdict(records) -> Verdict:
    lrs = _swept_lrs(records)
    seeds = _complete_seeds(records, [_c26_name(q, lr) for q in C26_ARMS for lr in lrs])
    sens = {q: _sensitivity(records, q, seeds) for q in C26_ARMS}
    sensitivity = compare([sens["none"][s] for s in seeds], [sens["layernorm"][s] for s in seeds],
                          expect="greater", paired=True, min_effect=C26_SENS_EFFECT,
                          what=f"lr sensitivity (mean over the {len(lrs)} lrs of min(final, initial) - best, nats)",
                          label_a="no qk-norm", label_b="qk-layernorm")
    logit_seeds = [s for s in seeds if all(math.isfinite(_sweep_logit(records, q, s)) for q in C26_ARMS)]
    logits = {q: [_sweep_logit(records, q, s) for s in logit_seeds] for q in C26_ARMS}
    growth = compare(logits["none"], logits["layernorm"], expect="greater", paired=True,
                     min_effect=C26_LOGIT_EFFECT,
                     what="log10 of the largest layer-0 attention logit over the lr sweep",
                     label_a="no qk-norm", label_b="qk-layernorm")
    v = combine_verdicts({"lr sensitivity": sensitivity, "attention logits": growth})
    diverged = {q: sum(_diverged(r) for r in records if r["name"].startswith(f"qk-{q}-")) for q in C26_ARMS}
    runs = {q: sum(1 for r in records if r["name"].startswith(f"qk-{q}-")) for q in C26_ARMS}
    div_text = ", ".join(f"{C26_ARMS[q]} {diverged[q]}/{runs[q]}" for q in C26_ARMS)
    v.summary += f"; diverged runs (non-finite, or final loss above the initial): {div_text}"
    v.numbers["diverged"] = {q: [diverged[q], runs[q]] for q in C26_ARMS}
    top = {q: 10 ** max(logits[q]) if logits[q] else math.nan for q in C26_ARMS}
    v.numbers["max_attn_logit_layer0"] = top
    v.key_number = (f"sensitivity {fmt(mean(sens['none'].values()))} vs {fmt(mean(sens['layernorm'].values()))}; "
                    f"max logit {fmt(top['none'])} vs {fmt(top['layernorm'])}; diverged {div_text}")
    v.versus_paper = (
        "paper: Wortsman et al. 2023 (models 9.4M-1.2B parameters, lrs 3e-4..3e-1, z-loss and weight decay in "
        "both arms): every run whose attention logits passed about 1e4 diverged, and qk-layernorm lowered lr "
        "sensitivity at every size (a 1.2B model trains at lr 0.3); "
        f"here: largest layer-0 logit {fmt(top['none'])} without qk-norm vs {fmt(top['layernorm'])} with, "
        f"diverged {div_text}, sensitivity {fmt(mean(sens['none'].values()))} vs "
        f"{fmt(mean(sens['layernorm'].values()))} nats; scale: a "
        f"{SIZES['quick']['n_layer']}-{SIZES['full']['n_layer']} block character model of d="
        f"{SIZES['quick']['d_model']}-{SIZES['full']['d_model']} trained {C26_STEPS['quick']}-"
        f"{C26_STEPS['full']} steps, where the paper's smallest model is ~9M parameters trained far longer")
    return v


def _c26_plot(records, verdict, prefix):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for i, qk in enumerate(C26_ARMS):
        for k, s in enumerate(sorted({r["seed"] for r in records})):
            rr = {r["name"]: r for r in records if r["seed"] == s and r["name"].startswith(f"qk-{qk}-")}
            lrs = [lr for lr in _swept_lrs(records) if _c26_name(qk, lr) in rr]
            axes[0].plot(lrs, [final_loss(rr[_c26_name(qk, lr)]) for lr in lrs], "o-", color=f"C{i}",
                         alpha=0.6, label=C26_ARMS[qk] if k == 0 else None)
            bad = [lr for lr in lrs if _diverged(rr[_c26_name(qk, lr)])]
            axes[0].plot(bad, [final_loss(rr[_c26_name(qk, lr)]) for lr in bad], "x", color="k", ms=8,
                         label="diverged" if (i, k) == (0, 0) and bad else None)
            axes[1].plot(lrs, [_max_logit(rr[_c26_name(qk, lr)]) for lr in lrs], "o-", color=f"C{i}", alpha=0.6,
                         label=C26_ARMS[qk] if k == 0 else None)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (diverged: initial)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("max attention logit, layer 0")
    fig.suptitle("Learning-rate sweep with and without QK-LayerNorm (one line per seed)")
    return [save_fig(fig, prefix + "-sweep.png")]


register(experiment(
    claim="C26", title="QK-norm makes training less sensitive to the learning rate",
    statement="At high learning rates attention logits grow and training diverges unless Q and K are "
              "normalized; QK-norm lowers learning-rate sensitivity.",
    setup=f"Pre-LN GPT (C18 sizes; {C26_STEPS['quick']} steps quick, {C26_STEPS['full']} full; 5 seeds quick, "
          "6 full) over lrs 3e-4, 3e-3, 3e-2, 3e-1 (Wortsman et al.'s range, one decade apart), 10% warm-up then cosine decay, z-loss 1e-4 and "
          "lr-independent weight decay 1e-4 (AdamW weight_decay = 1e-4/lr) in both arms, with and without "
          "LayerNorm on queries and keys (per head). Two parts, both paired by seed (paired t, 95%): lr "
          f"sensitivity (mean over the lrs of min(final, initial) - best) lower with qk-norm by more than "
          f"{C26_SENS_EFFECT} nats, and log10 of the largest layer-0 attention logit over the sweep higher "
          f"without qk-norm by more than {C26_LOGIT_EFFECT:g} (10x). Diverged runs (non-finite loss, or final "
          "loss above the initial) are counted per arm.",
    grid=_c26_grid, seeds={"quick": 5, "full": 6}, run=lm_run, verdict=_c26_verdict, plot=_c26_plot,
    paper="Wortsman et al. 2023, Figure 1/3: without qk-layernorm, runs whose attention logits grew past ~1e4 "
          "diverged at high lr; with it, lr sensitivity dropped markedly at every model size.",
))


# ------------------------------------------------------------------------ C31
C31_SCALES = [2.0 ** k for k in range(7)]  # x1 .. x64 on an x2 grid
C31_STEPS = PerMode({"quick": 80, "full": 150})
C31_MARGIN = 0.25  # nats above the common x1 reference that still count as "trained"
C31_EFFECT = 0.5  # log2: pre-LN's largest good scale must be larger by more than half a grid step
C31_MODELS = {"pre-LN": "layernorm", "no norm": "none"}


def _c31_name(prefix: str, scale: float) -> str:
    return f"{prefix} x{scale:g}"


def _c31_grid(mode):
    steps = C31_STEPS[mode]
    return [(_c31_name(prefix, scale),
             {"model": model_cfg(mode, n_layer=4, placement="pre", norm=norm, init_scale=scale),
              "train": train_cfg(mode, steps=steps, warmup_steps=steps // 10, log_every=max(1, steps // 25),
                                 diverge_factor=3.0)})
            for prefix, norm in C31_MODELS.items() for scale in C31_SCALES]


def _c31_reference(records) -> float:
    """The common reference: mean final loss of every x1 run, both models (the default init)."""
    vals = [final_loss(r) for r in records if r["name"] in {_c31_name(p, 1.0) for p in C31_MODELS}]
    vals = [v for v in vals if math.isfinite(v)]
    return mean(vals)


def _largest_good(records, prefix: str, seeds, bound: float) -> dict[int, float]:
    """Per seed: log2 of the largest scale up to which every scale ends at or below ``bound`` (-1: not even x1)."""
    out = {}
    for s in seeds:
        good = -1.0
        for scale in C31_SCALES:
            loss = final_loss(_per_seed(records, _c31_name(prefix, scale))[s])
            if not (math.isfinite(loss) and loss <= bound):
                break
            good = math.log2(scale)
        out[s] = good
    return out


def _c31_verdict(records) -> Verdict:
    seeds = _complete_seeds(records, [_c31_name(p, sc) for p in C31_MODELS for sc in C31_SCALES])
    ref = _c31_reference(records)
    bound = ref + C31_MARGIN
    good = {p: _largest_good(records, p, seeds, bound) for p in C31_MODELS}
    v = compare([good["pre-LN"][s] for s in seeds], [good["no norm"][s] for s in seeds], expect="greater",
                paired=True, min_effect=C31_EFFECT,
                what=f"log2 of the largest init scale whose run (and every smaller one) ends within {C31_MARGIN} "
                     f"nats of the x1 reference {fmt(ref)}",
                label_a="pre-LN", label_b="no normalization")
    curves = {p: {f"x{sc:g}": mean(final_loss(r) for r in records if r["name"] == _c31_name(p, sc))
                  for sc in C31_SCALES} for p in C31_MODELS}
    v.summary += "; mean final loss by scale: " + "; ".join(
        f"{p}: " + ", ".join(f"{k} {fmt(x)}" for k, x in c.items()) for p, c in curves.items())
    v.numbers.update({"reference": ref, "bound": bound, "largest_good_log2": good, "final_by_scale": curves})
    if seeds:
        v.key_number = (f"largest good scale (mean log2): pre-LN x{fmt(2 ** mean(good['pre-LN'].values()))}, "
                        f"none x{fmt(2 ** mean(good['no norm'].values()))} (bound {fmt(bound)} nats)")
    return v


def _c31_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, p in enumerate(C31_MODELS):
        for k, s in enumerate(sorted({r["seed"] for r in records})):
            rr = {sc: _per_seed(records, _c31_name(p, sc)).get(s) for sc in C31_SCALES}
            xs = [sc for sc in C31_SCALES if rr[sc] is not None]
            ax.plot(xs, [final_loss(rr[sc]) for sc in xs], "o-", color=f"C{i}", alpha=0.6,
                    label=p if k == 0 else None)
    bound = verdict.numbers.get("bound")
    if bound is not None and math.isfinite(bound):
        ax.axhline(bound, color="k", ls="--", lw=1, label=f"x1 reference + {C31_MARGIN} nats")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("init scale of the blocks' weight matrices")
    ax.set_ylabel("final validation loss (diverged: initial)")
    ax.set_title("Final loss by init scale (one line per seed)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-scales.png")]


register(experiment(
    claim="C31", title="Pre-LN tolerates larger initialization scales",
    statement="Pre-LN models tolerate larger initialization scales than un-normalized residual networks.",
    setup=f"4-block GPT (C18 width), pre-LN LayerNorm or no norm, the blocks' weight matrices scaled by "
          f"x1, x2, ..., x64 (embeddings and tied head keep their init); {C31_STEPS['quick']} steps quick, "
          f"{C31_STEPS['full']} full, lr 1e-3 with 10% warm-up, 4 seeds quick, 5 full. A run is good when it "
          f"ends within {C31_MARGIN} nats of a common reference, the mean final loss of all x1 runs of both "
          "models; per seed, the largest scale up to which every run is good (log2; -1 if x1 fails) is "
          f"compared paired by seed (paired t, 95%): pre-LN larger by more than {C31_EFFECT} (half a x2 step).",
    grid=_c31_grid, seeds={"quick": 4, "full": 5}, run=lm_run, verdict=_c31_verdict, plot=_c31_plot,
))


# ------------------------------------------------------------------------ C34
C34_STEPS = PerMode({"quick": 120, "full": 200})  # the DyT sweep (C18 sizes, unit-variance embeddings)
C34_LRS = [3e-3, 1e-2]  # a pilot at 1e-3 and 3e-3 had every arm best at 3e-3
C34_ALPHA0 = [0.5, 2.0]  # DyT's initial alpha: Zhu et al.'s default, and a larger one for a small width
C34_DEEP = PerMode({"quick": dict(n_layer=12, d_model=32, n_head=2, steps=150),
                    "full": dict(n_layer=16, d_model=48, n_head=3, steps=150),  # DeepNorm at depth, thin blocks
                    "paper": dict(n_layer=48, d_model=128, n_head=4, steps=1000)})
C34_DEEP_LRS = {"pre-LN deep": [3e-3], "DeepNorm deep": [3e-3, 1e-2]}  # pre-LN at its pilot best (of 1e-3, 3e-3)
C34_TOLERANCE = 0.05  # nats: "no worse than pre-LN" allows this much


def _c34_dyt_names():
    pre = [f"pre-LN lr{lr:g}" for lr in C34_LRS]
    dyt = [f"DyT a{a:g} lr{lr:g}" for a in C34_ALPHA0 for lr in C34_LRS]
    return pre, dyt


def _c34_deep_names():
    return tuple([f"{arm} lr{lr:g}" for lr in lrs] for arm, lrs in C34_DEEP_LRS.items())


def _c34_grid(mode):
    steps = C34_STEPS[mode]
    train = {lr: train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, log_every=max(1, steps // 25))
             for lr in C34_LRS}
    out = []
    for lr in C34_LRS:
        out.append((f"pre-LN lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="layernorm",
                                                            embed_scale=True), "train": train[lr]}))
    for a in C34_ALPHA0:
        for lr in C34_LRS:
            out.append((f"DyT a{a:g} lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="dyt", dyt_alpha0=a,
                                                                   embed_scale=True), "train": train[lr]}))
    deep = dict(C34_DEEP[mode])
    dsteps = deep.pop("steps")
    for label, placement in (("pre-LN deep", "pre"), ("DeepNorm deep", "deepnorm")):
        for lr in C34_DEEP_LRS[label]:
            out.append((f"{label} lr{lr:g}", {
                "model": model_cfg(mode, placement=placement, norm="layernorm", **deep),
                "train": train_cfg(mode, steps=dsteps, lr=lr, warmup_steps=dsteps // 10,
                                   log_every=max(1, dsteps // 25))}))
    return out


def _best(records, names, seeds) -> str | None:
    """The config with the lowest mean final loss over ``seeds`` (ties: the first listed)."""
    scored = [(mean(final_loss(_per_seed(records, n)[s]) for s in seeds), n) for n in names]
    scored = [(m, n) for m, n in scored if math.isfinite(m)]
    return min(scored, key=lambda t: t[0])[1] if scored else None


def _no_worse(records, base_names, other_names, label: str, base_label: str) -> tuple[Verdict, str, str]:
    """Best config of ``other_names`` against the best of ``base_names``, paired by seed, one-sided."""
    seeds = _complete_seeds(records, base_names + other_names)
    base, other = _best(records, base_names, seeds), _best(records, other_names, seeds)
    if base is None or other is None:
        diffs = []
    else:
        diffs = [final_loss(_per_seed(records, other)[s]) - final_loss(_per_seed(records, base)[s]) for s in seeds]
    v = threshold(diffs, below=C34_TOLERANCE,
                  what=f"final loss, best {label} ({other}) - best {base_label} ({base}), paired by seed (nats)")
    v.rule = (f"one-sided (non-inferiority): supported if the 95% CI of the paired difference lies wholly below "
              f"+{C34_TOLERANCE} nats (no worse than {base_label} by more than that); not supported if it lies "
              "wholly above; otherwise inconclusive")
    v.tests[-1]["rule"] = v.rule
    return v, base or "-", other or "-"


def _c34_verdict(records) -> Verdict:
    pre, dyt = _c34_dyt_names()
    v_dyt, pre_best, dyt_best = _no_worse(records, pre, dyt, "DyT", "pre-LN")
    dpre, deep = _c34_deep_names()
    v_deep, dpre_best, deep_best = _no_worse(records, dpre, deep, "DeepNorm", "pre-LN")

    def loss(name):
        return mean(final_loss(r) for r in records if r["name"] == name)

    v = combine_verdicts({"DyT vs pre-LN": v_dyt, "DeepNorm vs pre-LN at depth": v_deep})
    sweep = {n: loss(n) for n in pre + dyt + dpre + deep}
    v.summary += "; mean final loss per config: " + ", ".join(f"{n} {fmt(x)}" for n, x in sweep.items())
    v.numbers["mean_final"] = sweep
    v.key_number = (f"DyT {fmt(loss(dyt_best))} ({dyt_best}) vs pre-LN {fmt(loss(pre_best))} ({pre_best}): "
                    f"{v_dyt.status}; DeepNorm {fmt(loss(deep_best))} vs pre-LN {fmt(loss(dpre_best))} at "
                    f"depth: {v_deep.status}")
    v.versus_paper = (
        "paper: Zhu et al. 2025: DyT matches LayerNorm (ViT-B 82.3 -> 82.5% top-1; LLMs at their tuned alpha0); "
        "Wang et al. 2022: DeepNorm trains post-LN stably to 1000 layers; "
        f"here: DyT - pre-LN {v_dyt.key_number} nats, DeepNorm - pre-LN {v_deep.key_number} nats at "
        f"{C34_DEEP['quick']['n_layer']}-{C34_DEEP['full']['n_layer']} blocks; scale: character models of "
        f"d={SIZES['quick']['d_model']}-{SIZES['full']['d_model']} (DyT) and d={C34_DEEP['quick']['d_model']}-"
        f"{C34_DEEP['full']['d_model']} (depth) trained a few hundred steps")
    return v


def _c34_plot(records, verdict, prefix):
    plt = pyplot()
    pre, dyt = _c34_dyt_names()
    dpre, deep = _c34_deep_names()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    panels = [(axes[0], [("pre-LN", pre)] + [(f"DyT alpha0={a:g}", [f"DyT a{a:g} lr{lr:g}" for lr in C34_LRS])
                                            for a in C34_ALPHA0], "DyT sweep vs pre-LN"),
              (axes[1], [("pre-LN", dpre), ("DeepNorm", deep)], "at depth (thin blocks)")]
    for ax, arms, title in panels:
        for i, (label, names) in enumerate(arms):
            lrs = [float(n.rsplit(" lr", 1)[1]) for n in names]
            shift = 1 + 0.04 * (i - (len(arms) - 1) / 2)  # arms side by side at each lr
            for lr, name in zip(lrs, names):
                vals = [final_loss(r) for r in records if r["name"] == name]
                ax.scatter([lr * shift] * len(vals), vals, color=f"C{i}", s=12, alpha=0.6)
            means = [mean(final_loss(r) for r in records if r["name"] == n) for n in names]
            ax.plot([lr * shift for lr in lrs], means, "_-", ms=14, color=f"C{i}", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (dots: seeds; lines: mean)")
    fig.suptitle("DyT and DeepNorm against pre-LN, each at its best config")
    return [save_fig(fig, prefix + "-sweeps.png")]


register(experiment(
    claim="C34", title="DyT and DeepNorm-scaled post-LN against pre-LN",
    statement="Normalization-free transformers (Dynamic Tanh) and DeepNorm-scaled post-LN train as well as "
              "pre-LN on the same budget.",
    setup=f"Two parts, judged separately. DyT: the C18 GPT with unit-variance embeddings (embed_scale, as Zhu "
          f"et al.'s inputs) in both arms, {C34_STEPS['quick']} steps quick, {C34_STEPS['full']} full; pre-LN "
          f"LayerNorm at lrs {', '.join(f'{lr:g}' for lr in C34_LRS)}, DyT in the same positions at alpha0 "
          f"{', '.join(f'{a:g}' for a in C34_ALPHA0)} x the same lrs. DeepNorm: depth "
          f"{C34_DEEP['quick']['n_layer']} blocks of d={C34_DEEP['quick']['d_model']} quick "
          f"({C34_DEEP['quick']['steps']} steps), {C34_DEEP['full']['n_layer']} of d={C34_DEEP['full']['d_model']} "
          f"full ({C34_DEEP['full']['steps']} steps), DeepNorm post-LN (residual x (2N)^1/4, beta-scaled Xavier "
          "init) at lrs 3e-3 and 1e-2 against pre-LN at the same depth at lr 3e-3 (its best of 1e-3 and 3e-3 "
          "in a pilot; the extra lr can only favour DeepNorm). 4 seeds per mode. Each part compares the best config "
          f"(lowest mean final loss) with pre-LN's best, paired by seed: one-sided non-inferiority, supported if "
          f"the 95% CI of the difference lies wholly below +{C34_TOLERANCE} nats; the claim needs both parts.",
    grid=_c34_grid, seeds={"quick": 4, "full": 4}, run=lm_run, verdict=_c34_verdict, plot=_c34_plot,
    paper="Zhu et al. 2025 (DyT): matches LayerNorm models across tasks (ViT-B 82.3 -> 82.5); Wang et al. 2022 "
          "(DeepNet): stable post-LN up to 1000 layers.",
))

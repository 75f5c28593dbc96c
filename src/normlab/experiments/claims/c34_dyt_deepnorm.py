"""C34: DyT and DeepNorm-scaled post-LN against pre-LN.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import SIZES, complete_seeds, final_loss, lm_run, model_cfg, per_seed, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import combine_verdicts, fmt, mean, threshold


STEPS = PerMode({"quick": 120, "full": 200})  # the DyT sweep (C18 sizes, unit-variance embeddings)

LRS = [3e-3, 1e-2]  # a pilot at 1e-3 and 3e-3 had every arm best at 3e-3

ALPHA0 = [0.5, 2.0]  # DyT's initial alpha: Zhu et al.'s default, and a larger one for a small width

DEEP = PerMode({"quick": dict(n_layer=12, d_model=32, n_head=2, steps=150),
                    "full": dict(n_layer=16, d_model=48, n_head=3, steps=150),  # DeepNorm at depth, thin blocks
                    "paper": dict(n_layer=48, d_model=128, n_head=4, steps=1000)})

DEEP_LRS = {"pre-LN deep": [3e-3], "DeepNorm deep": [3e-3, 1e-2]}  # pre-LN at its pilot best (of 1e-3, 3e-3)

TOLERANCE = 0.05  # nats: "no worse than pre-LN" allows this much


def _dyt_names():
    pre = [f"pre-LN lr{lr:g}" for lr in LRS]
    dyt = [f"DyT a{a:g} lr{lr:g}" for a in ALPHA0 for lr in LRS]
    return pre, dyt


def _deep_names():
    return tuple([f"{arm} lr{lr:g}" for lr in lrs] for arm, lrs in DEEP_LRS.items())


def grid(mode):
    steps = STEPS[mode]
    train = {lr: train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, log_every=max(1, steps // 25))
             for lr in LRS}
    out = []
    for lr in LRS:
        out.append((f"pre-LN lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="layernorm",
                                                            embed_scale=True), "train": train[lr]}))
    for a in ALPHA0:
        for lr in LRS:
            out.append((f"DyT a{a:g} lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="dyt", dyt_alpha0=a,
                                                                   embed_scale=True), "train": train[lr]}))
    deep = dict(DEEP[mode])
    dsteps = deep.pop("steps")
    for label, placement in (("pre-LN deep", "pre"), ("DeepNorm deep", "deepnorm")):
        for lr in DEEP_LRS[label]:
            out.append((f"{label} lr{lr:g}", {
                "model": model_cfg(mode, placement=placement, norm="layernorm", **deep),
                "train": train_cfg(mode, steps=dsteps, lr=lr, warmup_steps=dsteps // 10,
                                   log_every=max(1, dsteps // 25))}))
    return out


def _best(records, names, seeds) -> str | None:
    """The config with the lowest mean final loss over ``seeds`` (ties: the first listed)."""
    scored = [(mean(final_loss(per_seed(records, n)[s]) for s in seeds), n) for n in names]
    scored = [(m, n) for m, n in scored if math.isfinite(m)]
    return min(scored, key=lambda t: t[0])[1] if scored else None


def _no_worse(records, base_names, other_names, label: str, base_label: str) -> tuple[Verdict, str, str]:
    """Best config of ``other_names`` against the best of ``base_names``, paired by seed, one-sided."""
    seeds = complete_seeds(records, base_names + other_names)
    base, other = _best(records, base_names, seeds), _best(records, other_names, seeds)
    if base is None or other is None:
        diffs = []
    else:
        diffs = [final_loss(per_seed(records, other)[s]) - final_loss(per_seed(records, base)[s]) for s in seeds]
    v = threshold(diffs, below=TOLERANCE,
                  what=f"final loss, best {label} ({other}) - best {base_label} ({base}), paired by seed (nats)")
    v.rule = (f"one-sided (non-inferiority): supported if the 95% CI of the paired difference lies wholly below "
              f"+{TOLERANCE} nats (no worse than {base_label} by more than that); not supported if it lies "
              "wholly above; otherwise inconclusive")
    v.tests[-1]["rule"] = v.rule
    return v, base or "-", other or "-"


def verdict(records) -> Verdict:
    pre, dyt = _dyt_names()
    v_dyt, pre_best, dyt_best = _no_worse(records, pre, dyt, "DyT", "pre-LN")
    dpre, deep = _deep_names()
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
        f"{DEEP['quick']['n_layer']}-{DEEP['full']['n_layer']} blocks; scale: character models of "
        f"d={SIZES['quick']['d_model']}-{SIZES['full']['d_model']} (DyT) and d={DEEP['quick']['d_model']}-"
        f"{DEEP['full']['d_model']} (depth) trained a few hundred steps")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    pre, dyt = _dyt_names()
    dpre, deep = _deep_names()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    panels = [(axes[0], [("pre-LN", pre)] + [(f"DyT alpha0={a:g}", [f"DyT a{a:g} lr{lr:g}" for lr in LRS])
                                            for a in ALPHA0], "DyT sweep vs pre-LN"),
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


SPEC = experiment(
    claim="C34", title="DyT and DeepNorm-scaled post-LN against pre-LN",
    statement="Normalization-free transformers (Dynamic Tanh) and DeepNorm-scaled post-LN train as well as "
              "pre-LN on the same budget.",
    setup=f"Two parts, judged separately. DyT: the C18 GPT with unit-variance embeddings (embed_scale, as Zhu "
          f"et al.'s inputs) in both arms, {STEPS['quick']} steps quick, {STEPS['full']} full; pre-LN "
          f"LayerNorm at lrs {', '.join(f'{lr:g}' for lr in LRS)}, DyT in the same positions at alpha0 "
          f"{', '.join(f'{a:g}' for a in ALPHA0)} x the same lrs. DeepNorm: depth "
          f"{DEEP['quick']['n_layer']} blocks of d={DEEP['quick']['d_model']} quick "
          f"({DEEP['quick']['steps']} steps), {DEEP['full']['n_layer']} of d={DEEP['full']['d_model']} "
          f"full ({DEEP['full']['steps']} steps), DeepNorm post-LN (residual x (2N)^1/4, beta-scaled Xavier "
          "init) at lrs 3e-3 and 1e-2 against pre-LN at the same depth at lr 3e-3 (its best of 1e-3 and 3e-3 "
          "in a pilot; the extra lr can only favour DeepNorm). 4 seeds per mode. Each part compares the best config "
          f"(lowest mean final loss) with pre-LN's best, paired by seed: one-sided non-inferiority, supported if "
          f"the 95% CI of the difference lies wholly below +{TOLERANCE} nats; the claim needs both parts.",
    grid=grid, seeds={"quick": 4, "full": 4}, run=lm_run, verdict=verdict, plot=plot,
    paper="Zhu et al. 2025 (DyT): matches LayerNorm models across tasks (ViT-B 82.3 -> 82.5); Wang et al. 2022 "
          "(DeepNet): stable post-LN up to 1000 layers.",
)

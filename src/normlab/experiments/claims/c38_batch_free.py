"""C38: Batch-free normalizers have no train/eval discrepancy; BatchNorm and EvoNorm-B0 do.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.cnn import model_cfg, train_cfg, train_eval_run
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import by_name, combine_verdicts, mean, threshold


STEPS = {"quick": 75, "full": 250}

BATCH_FREE = ("frn", "evonorm_s0", "groupnorm")

BATCH_DEPENDENT = ("batchnorm", "evonorm_b0")

ROUNDING = 1e-5  # below this relative logit change the two agree to float32 rounding

VISIBLE = 1e-2  # above it: a real discrepancy


def grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm), "norm": norm,
                    "train": train_cfg(mode, steps=STEPS[mode])})
            for norm in (*BATCH_FREE, *BATCH_DEPENDENT)]


def verdict(records) -> Verdict:
    g = by_name(records)
    parts: dict[str, Verdict] = {}
    for norm in BATCH_FREE:
        worst = [max(r["result"]["eval_vs_train"], r["result"]["batch_composition"]) for r in g.get(norm, [])]
        parts[f"{norm}: identical"] = threshold(
            worst, below=ROUNDING, what=f"{norm} relative logit change (largest of eval vs in a batch, and batch "
                                            "vs batch)")
    for norm in BATCH_DEPENDENT:
        for key, what in (("eval_vs_train", "eval mode vs inside a random training batch"),
                          ("batch_composition", "a random batch vs a batch of its own class")):
            parts[f"{norm}: {what}"] = threshold([r["result"][key] for r in g.get(norm, [])], above=VISIBLE,
                                                 what=f"{norm} relative logit change, {what}")
    v = combine_verdicts(parts)
    v.rule = (f"batch-free norms: the t interval of the larger relative logit change wholly below {ROUNDING:g} "
              f"(float32 rounding); BatchNorm and EvoNorm-B0: both changes wholly above {VISIBLE:g}; every part "
              "must hold. " + v.rule)
    v.key_number = "; ".join(f"{k}: {p.key_number}" for k, p in parts.items())
    return v


def plot(records, prefix) -> str:
    """The two relative logit changes per norm, on a log axis (batch-free norms sit at float32 rounding)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    groups = by_name(records)
    names = [n for n in (*BATCH_FREE, *BATCH_DEPENDENT) if groups.get(n)]
    for j, (label, key) in enumerate((("eval vs in a batch", "eval_vs_train"),
                                      ("batch vs batch", "batch_composition"))):
        for i, n in enumerate(names):
            vals = [max(r["result"][key], 1e-12) for r in groups[n]]
            x = i + (j - 0.5) * 0.3
            ax.bar(x, math.exp(mean(math.log(v) for v in vals)), width=0.28, color=f"C{j}", alpha=0.4,
                   label=label if i == 0 else None)
            ax.scatter([x] * len(vals), vals, color=f"C{j}", s=10, zorder=3)
    ax.axhline(ROUNDING, color="k", ls=":", lw=0.8)
    ax.axhline(VISIBLE, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("relative logit change ||a - b|| / ||b||")
    ax.set_title("One signal's logits across modes and batches (dots: seeds; dotted: float32 rounding bound)",
                 fontsize=8)
    ax.legend(fontsize=7)
    return save_fig(fig, prefix + "-gap.png")


SPEC = experiment(
    claim="C38", title="Batch-free normalizers have no train/eval discrepancy; BatchNorm and EvoNorm-B0 do",
    statement="FRN, EvoNorm-S0 and GroupNorm give a sample the same output in training and eval mode and whatever "
              "its batch; BatchNorm and EvoNorm-B0 do not.",
    setup=f"VGG-like 1-D CNN with FRN + TLU, EvoNorm-S0 (4 groups), GroupNorm (4 groups), BatchNorm or EvoNorm-B0, "
          f"trained {STEPS['quick']} (quick) / {STEPS['full']} (full) steps on MNIST-1D; seeds: quick 4, "
          "full 5; for 32 test signals, the logits in eval mode, in training mode inside 31 random training signals "
          "and inside 31 of its own class (training-mode passes on a copy): relative change ||a - b|| / ||b|| "
          f"averaged per seed (C10's measurement). Judged by 95% t intervals over seeds: below {ROUNDING:g} for "
          f"the batch-free norms (the larger of the two changes), above {VISIBLE:g} for both changes of "
          "BatchNorm and EvoNorm-B0.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=train_eval_run, verdict=verdict,
    plot=lambda records, verdict, prefix: [plot(records, prefix)],
    paper="Singh & Krishnan 2019 (FRN) and Liu et al. 2020 (EvoNorm-S0) are independent of the batch by "
          "construction; EvoNorm-B0 keeps BatchNorm's batch variance and its moving average.",
)

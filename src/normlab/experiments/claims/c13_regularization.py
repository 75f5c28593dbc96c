"""C13: BatchNorm regularizes more than LayerNorm.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.cnn import cnn_run, model_cfg, train_cfg
from ..plots import pyplot, save_fig, seed_lines
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, compare, fmt, mean, paired_by_seed


TARGET = 0.15  # the training loss (eval mode, whole train set) at which the gap is read ...

MAX_TARGET = 0.5  # ... or the lowest one every run reached, if higher, up to this


def _target(records) -> float:
    """The common training loss: TARGET, or the highest of the runs' lowest training losses."""
    return max([TARGET] + [min(e["train_loss"] for e in r["result"]["evals"]) for r in records])


STEPS = PerMode({"quick": 500, "full": 600})  # constant lr: both reach the target loss well before the end


def grid(mode):
    steps = STEPS[mode]
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


def verdict(records) -> Verdict:
    target = _target(records)
    g = by_name(records)
    ok = target <= MAX_TARGET
    ln, bn = paired_by_seed(g.get("layernorm", []), g.get("batchnorm", []),
                            lambda r: _gap_at_target(r, target) if ok else math.nan)
    pairs = [(a, b) for a, b in zip(ln, bn) if not (math.isnan(a) or math.isnan(b))]
    v = compare([a for a, _ in pairs], [b for _, b in pairs], expect="greater", paired=True,
                what=f"test - train loss at train loss {fmt(target)}", label_a="LayerNorm", label_b="BatchNorm")
    if not ok:
        v.summary = f"a model only reached training loss {fmt(target)} (> {MAX_TARGET}): no common point; " + \
            v.summary
    v.rule += (f"; constant lr; the gap is read where the training loss (eval mode, whole train set) first reaches "
               f"{TARGET}, interpolated in log loss between the evaluations around it (if some run never got "
               f"there: the highest of the runs' lowest training losses, at most {MAX_TARGET}); paired by seed")
    if g.get("groupnorm"):
        gn = [x for x in (_gap_at_target(r, target) for r in g["groupnorm"]) if not math.isnan(x)]
        v.summary += f"; GroupNorm {fmt(mean(gn))} (n={len(gn)}, not judged)"
    v.key_number = (f"gap at train loss {fmt(target)}: LN {fmt(mean(a for a, _ in pairs))} vs BN "
                    f"{fmt(mean(b for _, b in pairs))}; diff {fmt(v.tests[0]['estimate'])} "
                    f"[{fmt(v.tests[0]['lo'])}, {fmt(v.tests[0]['hi'])}]")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    seed_lines(ax, records, lambda r: ([e["train_loss"] for e in r["result"]["evals"]],
                                       [e["test_loss"] - e["train_loss"] for e in r["result"]["evals"]]),
               marker=".", alpha=0.8)
    ax.axvline(_target(records), color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("training loss (eval mode, whole train set; training goes right)")
    ax.set_ylabel("test loss - training loss (nats)")
    ax.set_title("Generalization gap along training (one line per seed)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-gap.png")]


SPEC = experiment(
    claim="C13", title="BatchNorm regularizes more than LayerNorm",
    quick_differs="quick trains another model, a 2-stage CNN (widths 16/32) instead of full's 3 stages "
                  "(16/32/64), and leaves GroupNorm out",
    statement="BatchNorm's batch noise regularizes: at equal training loss its train/test gap is smaller than "
              "LayerNorm's (and GroupNorm's).",
    setup=f"Residual 1-D CNN with BN, LN (and GN in full mode, not judged) on a small MNIST-1D (800 training "
          f"signals), AdamW at a constant lr 3e-3 after a 10% warm-up (no decay, so both norms are compared at the "
          f"same schedule phase), {STEPS['quick']} (quick) / {STEPS['full']} (full) steps of batch 32, "
          "evaluated 40 times (eval mode, whole train and test sets); seeds: quick 4, full 5; the gap (test loss "
          f"- train loss) is read where the training loss first reaches {TARGET}, interpolated in log loss "
          "between the evaluations around it (if a run never got there: the highest of the runs' lowest training "
          f"losses, up to {MAX_TARGET}); LN - BN paired by seed.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=cnn_run, verdict=verdict, plot=plot,
)

"""C10: BatchNorm's train/eval discrepancy; LayerNorm has none.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.cnn import bars, model_cfg, train_cfg, train_eval_run
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, combine_verdicts, exact, mean, threshold


STEPS = PerMode({"quick": 75, "full": 250})

VISIBLE = 1e-2  # BN: a relative logit change above this is a real train/eval discrepancy

ROUNDING = 1e-5  # LN: below this the two modes agree to float32 rounding


def grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm), "norm": norm, "train": train_cfg(mode, steps=STEPS[mode])})
            for norm in ("batchnorm", "layernorm")]


def verdict(records) -> Verdict:
    g = by_name(records)
    if not g.get("batchnorm") or not g.get("layernorm"):
        return Verdict("inconclusive", "missing runs", "needs BN and LN runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs BN and LN runs")])
    bn = [r["result"]["eval_vs_train"] for r in g["batchnorm"]]
    bnc = [r["result"]["batch_composition"] for r in g["batchnorm"]]
    ln = [max(r["result"]["eval_vs_train"], r["result"]["batch_composition"]) for r in g["layernorm"]]
    parts = {
        "BN: eval vs inside a training batch": threshold(
            bn, what="BN relative logit change, eval mode vs inside a random training batch", above=VISIBLE),
        "BN: batch-mates matter": threshold(
            bnc, what="BN relative logit change, random batch vs a batch of its own class", above=VISIBLE),
        "LN: identical": threshold(
            ln, what="LN relative logit change (largest of the two comparisons)", below=ROUNDING),
    }
    v = combine_verdicts(parts, key_number=(
        f"BN eval vs batch {parts['BN: eval vs inside a training batch'].key_number}; "
        f"LN {parts['LN: identical'].key_number}"))
    flips = [r["result"]["prediction_flips"] for r in g["batchnorm"]]
    v.summary += f"; BN predictions that flip between eval mode and a training batch: {mean(flips):.1%} (reported)"
    return v


SPEC = experiment(
    claim="C10", title="BatchNorm's train/eval discrepancy; LayerNorm has none",
    statement="BN normalizes with batch statistics in training and running averages in eval, so one sample's "
              "output depends on the mode and on its batch-mates; LN's does not.",
    setup="VGG-like 1-D CNN with BN or LN trained 75 (quick) / 250 (full) steps on MNIST-1D, 4 (quick) / 5 (full) "
          "seeds; for 32 test signals the logits in eval mode, in training mode inside 31 random training signals, "
          "and inside 31 signals of its own class: relative change ||a - b|| / ||b||, averaged per seed. Judged by "
          "one-sample 95% t intervals over seeds: BN's two changes above 1e-2 and LN's (the larger of its two) "
          "below 1e-5 (float32 rounding); all three must hold.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=train_eval_run, verdict=verdict,
    plot=lambda records, verdict, prefix: [bars(
        {f"{n}: {k}": [r["result"][key] for r in rs] for n, rs in sorted(by_name(records).items())
         for k, key in (("eval vs batch", "eval_vs_train"), ("batch vs batch", "batch_composition"))},
        prefix + "-gap.png", "Relative logit change of one signal", "||a - b|| / ||b|| (0 = identical)")],
)

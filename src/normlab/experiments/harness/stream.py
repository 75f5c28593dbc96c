"""The residual-stream measurement C23 and C25 share: RMS of the stream after each block, at init and after
training, and the paired growth rule."""

from __future__ import annotations

import math

from ..plots import layer_profile_plot
from ..spec import PerMode, Verdict
from ..verdicts import by_name, ci_text, compare, fmt, mean, paired_by_seed
from .lm import SIZES, log_growth, model_cfg, train_for


DEPTH = PerMode({"quick": 6, "full": 8})

STEPS = PerMode({"quick": 150, "full": 300})

SEEDS = PerMode({"quick": 4, "full": 4})


def stream_grid(mode, placements):
    return [(p, {"model": model_cfg(mode, n_layer=DEPTH[mode], placement="pre" if p == "none" else p,
                                     norm="none" if p == "none" else "layernorm"),
                 "train": train_for(mode, STEPS[mode], instruments=["residual_rms"], lr=1e-3)}) for p in placements]


def stream_rms(rec, when: int) -> list[float]:
    """Residual-stream RMS after each block, at the first (0) or last (-1) instrument step."""
    return rec["result"]["instruments"][when]["residual_rms"]["rms"][1:]  # drop the embedding


def stream_plot(records, verdict, prefix):
    g = by_name(records)
    paths = []
    for when, label in ((0, "at init"), (-1, "after training")):
        p = layer_profile_plot({k: [stream_rms(r, when) for r in v] for k, v in g.items()},
                                f"{prefix}-{'init' if when == 0 else 'trained'}",
                                f"Residual-stream RMS after each block, {label}", "RMS of the residual stream")
        paths.append(p)
    return paths


def growth(records, name: str, when: int = -1) -> list[float]:
    return [log_growth(stream_rms(r, when)) for r in by_name(records).get(name, [])]


def stream_growth_verdict(records, a: str, b: str, label_a: str, label_b: str, min_ratio: float) -> Verdict:
    """Group ``a``'s residual stream grows more from first to last block (after training) than group ``b``'s.

    Paired by seed: the two arms of a seed share init seed and data order.
    """
    g = by_name(records)
    ga, gb = paired_by_seed(g.get(a, []), g.get(b, []), lambda r: log_growth(stream_rms(r, -1)))
    v = compare(ga, gb, expect="greater", what="log(last/first block) of the residual-stream RMS after "
                "training", label_a=label_a, label_b=label_b, min_effect=math.log(min_ratio), paired=True)
    if ga and gb:
        v.key_number = (f"last/first: {a} {fmt(math.exp(mean(ga)))}x, {b} {fmt(math.exp(mean(gb)))}x; "
                        f"log ratio difference {ci_text(v)}")
    init = {name: mean(growth(records, name, 0)) for name in (a, b)}
    v.summary += "; at init (not judged): last/first " + ", ".join(f"{n} {fmt(math.exp(x))}x"
                                                                 for n, x in init.items())
    v.numbers.update({"log_growth_trained": {a: ga, b: gb}, "mean_log_growth_init": init})
    return v


def stream_setup(min_ratio: float, arms: str) -> str:
    return (f"Quick: {DEPTH['quick']} blocks, d={SIZES['quick']['d_model']}, {STEPS['quick']} steps; full: "
            f"{DEPTH['full']} blocks, d={SIZES['full']['d_model']}, {STEPS['full']} steps; lr 1e-3 with "
            f"warm-up and cosine decay; {SEEDS['quick']} seeds quick, {SEEDS['full']} full, the arms of a "
            "seed share init seed and data order. RMS of the residual stream after each block at init and after "
            "training (on that step's training batch), growth = log(last block / first block). Rule: the 95% "
            "paired t interval of "
            f"{arms} growth (after training) lies wholly above log {min_ratio:g}; wholly below: not supported; "
            "otherwise inconclusive.")

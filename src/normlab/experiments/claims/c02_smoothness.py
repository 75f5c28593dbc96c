"""C02: BatchNorm smooths the loss landscape.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
from functools import partial

from ..harness.landscape import (LANDSCAPE_SETUP, TRAINED_ACC, landscape_grid, landscape_pairs, landscape_plot,
                                 landscape_run, log_ratio, over_checkpoints, ratio_text)
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, compare, fmt, mean, paired_by_seed


LANDSCAPE_LR = 0.05  # C02


def _log_first(r, key) -> float:
    """log10 of the first entry of :func:`over_checkpoints` (floored at 1e-12)."""
    return math.log10(max(over_checkpoints(r, key)[0], 1e-12))


def verdict(records) -> Verdict:
    bn, no, lost = landscape_pairs(records)
    parts = {}
    for key, what in (("beta", "effective beta-smoothness"), ("loss_range", "loss range along -g")):
        a, b = paired_by_seed(bn, no, partial(_log_first, key=key))
        parts[what] = compare(a, b, expect="less", paired=True, what=f"log10 {what} (mean over checkpoints)",
                              label_a="BN", label_b="none")
    v = combine_verdicts(parts)
    gchg = [log_ratio(over_checkpoints(x, "grad_change")[0], over_checkpoints(y, "grad_change")[0])
            for x, y in zip(*paired_by_seed(bn, no, lambda r: r))]
    ratios = {name: ratio_text(p.tests[0]) for name, p in parts.items()}
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


_SMOOTH_SETUP = (LANDSCAPE_SETUP + f"at lr {LANDSCAPE_LR:g}, along -g for steps of {{0.25, 0.5, 1, 2, 4}} x lr: the "
                 "loss range, max ||grad(theta - s g) - g|| and the effective beta-smoothness "
                 "max ||grad(theta - s g) - g|| / ||s g||, averaged over checkpoints; judged on log10 BN - log10 "
                 "none paired by seed.")


SPEC = experiment(
    claim="C02", title="BatchNorm smooths the loss landscape",
    statement="Along the gradient direction the loss varies less and the gradient changes less (smaller "
              "effective beta-smoothness) with BatchNorm.",
    setup=_SMOOTH_SETUP, grid=landscape_grid("landscape", (LANDSCAPE_LR,)), seeds={"quick": 4, "full": 5},
    run=landscape_run, verdict=verdict,
    plot=landscape_plot(["loss_range", "grad_change", "beta"],
                         ["loss range along -g (nats)", "max ||grad change||", "effective beta-smoothness"],
                         "landscape"),
    paper="Santurkar et al. 2018, Figure 4: VGG on CIFAR-10, loss landscape variation, gradient predictiveness "
          "and effective beta-smoothness all markedly smaller with BN.",
)

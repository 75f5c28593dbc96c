"""C01: BatchNorm does not markedly reduce internal covariate shift.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
from functools import partial

from ..harness.landscape import (LANDSCAPE_SETUP, TRAINED_ACC, landscape_grid, landscape_pairs, landscape_plot,
                                 landscape_run, log_ratio, over_checkpoints, ratio_text)
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, fmt, paired_by_seed, threshold


ICS_LRS = (0.05, 0.2)  # C01: ICS at two learning rates, both of which train both nets

ICS_MARKED = 0.5  # C01: BN "markedly reduces" ICS if its ICS is below this fraction of the plain net's


def verdict(records) -> Verdict:
    parts, lines, dropped = {}, [], []
    bound = math.log10(ICS_MARKED)
    for lr in sorted({r["config"]["lr"] for r in records}) or [ICS_LRS[0]]:
        bn, no, lost = landscape_pairs(records, lr)
        dropped += [f"seed {s} at lr {lr:g}" for s in lost]
        for form, key in (("||G - G'||", "ics_l2"), ("1 - cos(G, G')", "ics_cos")):
            a, b = paired_by_seed(bn, no, partial(over_checkpoints, key=key))
            layers = min((len(x) for x in a + b), default=1)
            texts = []
            for i in range(layers):
                logs = [log_ratio(x[i], y[i]) for x, y in zip(a, b)]
                what = f"log10 ICS ratio BN/none, {form}, lr {lr:g}, conv layer {i + 2}"
                v = threshold(logs, what=what, above=bound)
                parts[f"lr {lr:g} {key} layer {i + 2}"] = v
                texts.append(f"layer {i + 2}: {ratio_text(v.tests[0])}")
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


_ICS_SETUP = (LANDSCAPE_SETUP + f"at lr {ICS_LRS[0]:g} and {ICS_LRS[1]:g}, the ICS of each conv layer after the "
              "first (its weight gradient G vs G' after the layers below took their SGD step on the same batch), "
              "as ||G - G'|| and 1 - cos(G, G'), averaged over checkpoints; judged per layer, form and lr on "
              f"log10(BN/none) paired by seed; a seed whose BN or plain run ends below {TRAINED_ACC:.0%} test accuracy "
              "(twice chance) is dropped.")


SPEC = experiment(
    claim="C01", title="BatchNorm does not markedly reduce internal covariate shift",
    statement="Measured as the change of a layer's gradient when the layers before it are updated first, "
              "BatchNorm does not reduce internal covariate shift much (if at all).",
    setup=_ICS_SETUP, grid=landscape_grid("ics", ICS_LRS), seeds={"quick": 4, "full": 5}, run=landscape_run,
    verdict=verdict, plot=landscape_plot(["ics_cos", "ics_l2"], ["ICS: 1 - cos(G, G')", "ICS: ||G - G'||"],
                                               "ics"),
    paper="Santurkar et al. 2018, Figure 3: VGG on CIFAR-10, BN networks show ICS comparable to or larger than "
          "standard ones in both the l2 difference and the cosine.",
)

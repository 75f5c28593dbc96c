"""C01: BatchNorm does not markedly reduce internal covariate shift.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
from functools import partial

from ..harness.landscape import (LANDSCAPE_SETUP, landscape_grid, landscape_plot, landscape_run, log_ratio, norm_of,
                                 over_checkpoints, ratio_text)
from ..spec import Verdict, experiment
from ..stats import interval
from ..verdicts import fmt, mean, paired_by_seed, threshold


ICS_LRS = (0.05, 0.2)  # C01: ICS at two learning rates, both of which train both nets

ICS_MARKED = 0.5  # C01: BN "markedly reduces" ICS if its ICS is below this fraction of the plain net's


def relative(r) -> list[float]:
    """Per conv layer: the mean over checkpoints of ||G - G'|| / ||G|| (the shift relative to the gradient)."""
    pts = r["result"]["points"][1:]
    if not pts or "ics_g_norm" not in pts[0]:
        return []
    layers = len(pts[0]["ics_l2"]) - 1  # the head's entry, the last, is left out
    return [mean(p["ics_l2"][i] / max(p["ics_g_norm"][i], 1e-30) for p in pts) for i in range(layers)]


def _seed_logs(bn, no, value) -> list[list[float]]:
    """Per seed (paired), per conv layer: log10(value with BN / value without)."""
    a, b = paired_by_seed(bn, no, value)
    return [[log_ratio(x, y) for x, y in zip(xa, xb)] for xa, xb in zip(a, b)]


def primary(records) -> tuple[list[float], list[int]]:
    """The primary quantity, per seed: log10 of BN's relative ICS over the plain net's, averaged over the conv
    layers and the learning rates (seeds that have both arms at every lr)."""
    lrs = sorted({r["config"]["lr"] for r in records})
    per_seed: dict[int, list[float]] = {}
    for lr in lrs:
        bn, no = _arms(records, lr)
        seeds = sorted(set(r["seed"] for r in bn) & set(r["seed"] for r in no))
        for s, logs in zip(seeds, _seed_logs(bn, no, relative)):
            if logs:
                per_seed.setdefault(s, []).append(mean(logs))
    keep = sorted(s for s, v in per_seed.items() if len(v) == len(lrs))
    return [mean(per_seed[s]) for s in keep], keep


def _arms(records, lr):
    rs = [r for r in records if r["config"]["lr"] == lr]
    return [r for r in rs if norm_of(r) == "batchnorm"], [r for r in rs if norm_of(r) == "none"]


def verdict(records) -> Verdict:
    bound = math.log10(ICS_MARKED)
    values, seeds = primary(records)
    v = threshold(values, above=bound, what="log10 relative ICS ratio BN/none (||G - G'|| / ||G||), mean over conv "
                                              "layers and learning rates, per seed")
    lines = []
    for lr in sorted({r["config"]["lr"] for r in records}):
        bn, no = _arms(records, lr)
        accs = f"test accuracy BN {fmt(mean(r['result']['test_acc'] for r in bn))}, none " \
               f"{fmt(mean(r['result']['test_acc'] for r in no))}"
        for form, value in (("||G - G'|| / ||G||", relative), ("1 - cos(G, G')", partial(over_checkpoints,
                                                                                          key="ics_cos")),
                            ("||G - G'|| (absolute)", partial(over_checkpoints, key="ics_l2"))):
            logs = _seed_logs(bn, no, value)
            layers = min((len(x) for x in logs), default=0)
            texts = [f"layer {i + 2}: {ratio_text(interval('', [x[i] for x in logs]).to_dict())}"
                     for i in range(layers)]
            lines.append(f"lr {lr:g}, {form}: " + "; ".join(texts))
        lines[-1] += f" ({accs})"
    ratio = 10 ** v.tests[0]["estimate"] if values else math.nan
    v.summary = (f"primary: relative ICS ratio BN/none {ratio_text(v.tests[0])} (geometric mean over conv layers and "
                 f"lrs, 95% t interval over {len(values)} seeds, none dropped); reported, not judged, per conv layer "
                 "(ratio BN/none, geometric mean over seeds, 95% CI, paired by seed; layer 1 has nothing below it, "
                 "the head is left out): " + " | ".join(lines))
    v.rule = (f"one primary quantity, named before the runs: per seed, log10(relative ICS with BN / without), "
              f"relative ICS = ||G - G'|| / ||G|| averaged over checkpoints, then over the conv layers and the "
              f"learning rates; its 95% t interval over seeds: supported if wholly above log10({ICS_MARKED:g}) (BN "
              f"does not cut ICS below {ICS_MARKED:g}x), not supported if wholly below, else inconclusive. Relative, "
              "because BN makes a layer's loss invariant to its weights' scale, so its weight gradients scale as "
              "1 / ||W||: the absolute ||G - G'|| compares the gradients' sizes as much as their change. One "
              "quantity, so that no layer, form or lr is picked after the fact (the per-part intervals are shown, "
              "not judged). Every seed counts, whatever its accuracy (each arm's accuracy is shown)")
    v.key_number = f"relative ICS ratio BN/none {ratio_text(v.tests[0])} ({len(values)} seeds)"
    v.versus_paper = ("paper: BN networks' ICS comparable to or larger than standard networks' in both ||G - G'|| "
                      "and cos (ratio about 1 or above; VGG on CIFAR-10, Figure 3, read second-hand); here: relative "
                      f"ICS ratio {ratio_text(v.tests[0])}; scale: a 3- (quick) or 7-unit (full) 1-D VGG on MNIST-1D, "
                      "a few hundred SGD steps")
    return v


_ICS_SETUP = (LANDSCAPE_SETUP + f"at lr {ICS_LRS[0]:g} and {ICS_LRS[1]:g}, the ICS of each conv layer after the "
              "first (its weight gradient G vs G' after the layers below took their SGD step on the same batch), "
              "as ||G - G'|| / ||G|| (relative) with 1 - cos(G, G') and the absolute ||G - G'|| beside, averaged "
              "over checkpoints. Judged on one primary quantity named in advance: log10(BN/none) of the relative "
              "ICS per seed, averaged over conv layers and lrs, by a 95% t interval over seeds (paired by seed), "
              f"against log10({ICS_MARKED:g}); no seed is dropped.")


SPEC = experiment(
    claim="C01", title="BatchNorm does not markedly reduce internal covariate shift",
    statement="Measured as the change of a layer's gradient when the layers before it are updated first, "
              "BatchNorm does not reduce internal covariate shift much (if at all).",
    setup=_ICS_SETUP, grid=landscape_grid("ics", ICS_LRS), seeds={"quick": 4, "full": 5}, run=landscape_run,
    verdict=verdict, plot=landscape_plot(["ics_cos", "ics_l2"], ["ICS: 1 - cos(G, G')", "ICS: ||G - G'||"],
                                               "ics"),
    paper="Santurkar et al. 2018, Figure 3: VGG on CIFAR-10, BN networks show ICS comparable to or larger than "
          "standard ones in both the l2 difference and the cosine (read second-hand).",
)

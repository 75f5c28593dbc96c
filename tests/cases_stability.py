"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

import math

from cases_common import lm_rec

C26_LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
GOOD_LOGITS = ([1e5, 3e4, 1e5, 5e4, 2e4, 8e4], [30.0, 25.0, 28.0, 30.0, 27.0, 29.0])  # past / below 1e3
SENS_GOOD = ([0.5, 0.6, 0.55, 0.5, 0.52, 0.58], [0.05, 0.06, 0.04, 0.05, 0.05, 0.06])


def c26(sens_none, sens_qk, logits=GOOD_LOGITS, diverge=()):
    """Per seed: lr sensitivity of each arm (the mean excess over the best lr, all of it at the largest lr) and
    the largest layer-0 logit (reached at the largest lr; 2.0 elsewhere).

    ``diverge``: (arm, lr) pairs whose runs end above their initial loss.
    """
    out = []
    for qk, sens, top in (("none", sens_none, logits[0]), ("layernorm", sens_qk, logits[1])):
        for seed, (extra, logit) in enumerate(zip(sens, top)):
            for i, lr in enumerate(C26_LRS):
                loss = 2.0 + (extra * len(C26_LRS) if i == len(C26_LRS) - 1 else 0.0)  # mean excess = extra
                if (qk, lr) in diverge:
                    loss = 12.0  # above the initial 10: counted as diverged, clipped to the initial loss
                inst = [{"step": 0, "attn_logits": {"blocks.0.attn": 1.0}},
                        {"step": 9, "attn_logits": {"blocks.0.attn": logit if i == len(C26_LRS) - 1 else 2.0}}]
                out.append(lm_rec(f"qk-{qk}-lr{lr:g}", seed, loss, first=10.0, instruments=inst))
    return out


def c31(pre_ok, none_ok, pre_stable=None, none_stable=None, none_base=2.0, step=2.0):
    """Per seed: the largest init scale each model trains at (its own x1 loss up to it) and the largest at which
    it does not diverge (3.9, under the initial 4.6, up to it; diverged beyond).  ``none_base``: the no-norm
    model's x1 loss (its own reference); ``step``: the grid's ratio (x2: full mode, x4: quick), up to x64."""
    out = []
    for prefix, ok, stable, base in (("pre-LN", pre_ok, pre_stable or pre_ok, 2.0),
                                     ("no norm", none_ok, none_stable or none_ok, none_base)):
        for seed, (largest, last_stable) in enumerate(zip(ok, stable)):
            for k in range(round(6 / math.log2(step)) + 1):
                sc = step ** k
                if sc <= largest:
                    out.append(lm_rec(f"{prefix} x{sc:g}", seed, base))
                elif sc <= last_stable:
                    out.append(lm_rec(f"{prefix} x{sc:g}", seed, 3.9))
                else:
                    out.append(lm_rec(f"{prefix} x{sc:g}", seed, None, status="diverged"))
    return out


C34_LRS = [1e-3, 3e-3, 1e-2]  # quick mode's sweep


def c34(dyt_diff, deep_diff, post_diff=(0.5, 0.52, 0.49, 0.51), lucky=None):
    """Quick-mode records, seed 0 choosing and seeds 1-3 judging.  Per seed: DyT's best config - pre-LN's best,
    and at depth DeepNorm's best - pre-LN's best and post-LN's best - pre-LN's best; other configs are worse.

    ``lucky``: (config, loss on the selection seed) for a config that looks best on seed 0 only (1.0 above
    the rest on the judging seeds)."""
    out = []
    for seed, (dd, dn, dp) in enumerate(zip(dyt_diff, deep_diff, post_diff)):
        base, deep = 2.0 + 0.01 * seed, 2.4 - 0.02 * seed
        losses = {"pre-LN lr0.001": base + 0.3, "pre-LN lr0.003": base, "pre-LN lr0.01": base + 0.1,
                  "DyT a0.5 lr0.001": base + 0.8, "DyT a0.5 lr0.003": base + 0.8, "DyT a0.5 lr0.01": base + 0.6,
                  "DyT a2 lr0.001": base + 0.5, "DyT a2 lr0.003": base + dd, "DyT a2 lr0.01": base + 0.3,
                  "pre-LN deep lr0.001": deep + 0.3, "pre-LN deep lr0.003": deep, "pre-LN deep lr0.01": deep + 0.6,
                  "post-LN deep lr0.001": deep + dp, "post-LN deep lr0.003": 4.5, "post-LN deep lr0.01": 4.6,
                  "DeepNorm deep lr0.001": deep + 0.3, "DeepNorm deep lr0.003": deep + dn,
                  "DeepNorm deep lr0.01": deep + 0.5}
        if lucky is not None:
            losses[lucky[0]] = lucky[1] if seed == 0 else losses[lucky[0]] + 1.0
        out += [lm_rec(name, seed, loss) for name, loss in losses.items()]
    return out


FINE = [0.01, 0.0, 0.02, 0.01]
WORSE = [0.3, 0.32, 0.29, 0.31]
STRADDLE = [0.0, 0.1, -0.05, 0.08]

CASES = {
    "C26": [(c26(*SENS_GOOD), "supported"),
            # sensitivity reversed, logits as claimed: the loss parts fail
            (c26(*SENS_GOOD[::-1]), "not supported"),
            # sensitivity as claimed, but no seed's logits pass the bound without qk-norm
            (c26(*SENS_GOOD, logits=([30.0, 40.0, 35.0, 30.0, 50.0, 45.0], GOOD_LOGITS[1])), "not supported"),
            (c26([0.1, 0.6, 0.05, 0.5, 0.1, 0.3], [0.2, 0.21, 0.2, 0.2, 0.22, 0.2]), "inconclusive"),
            # sensitivity as claimed, logits past the bound on 4 of 6 seeds: the sign test cannot decide
            (c26(*SENS_GOOD, logits=([3e4, 50.0, 1e4, 100.0, 5e3, 2e3], GOOD_LOGITS[1])), "inconclusive")],
    "C31": [(c31([64.0, 64.0, 32.0, 64.0, 64.0, 32.0, 64.0, 64.0], [2.0, 4.0, 2.0, 2.0, 2.0, 4.0, 2.0, 2.0]),
             "supported"),
            # refuting needs one part significant after Holm over the two parts: 8 seeds can, 6 cannot
            (c31([2.0] * 8, [8.0, 16.0, 8.0, 8.0, 8.0, 8.0, 8.0, 16.0]), "not supported"),
            (c31([2.0] * 6, [8.0, 16.0, 8.0, 8.0, 8.0, 8.0]), "inconclusive"),
            (c31([4.0, 64.0, 2.0, 32.0, 4.0, 64.0, 2.0, 8.0], [4.0] * 8), "inconclusive"),
            # four seeds that agree are no interval (a sign test gives p = 0.125): inconclusive, not "exact"
            (c31([64.0] * 4, [2.0] * 4), "inconclusive"),
            # each criterion fails alone: the own reference holds but both models first diverge at x64 ...
            (c31([64.0] * 8, [2.0] * 8, [64.0] * 8, [64.0] * 8), "not supported"),
            # ... and no divergence below x64 for pre-LN, but both train as well as their own x1 up to x2 only
            (c31([2.0] * 8, [2.0] * 8, [64.0] * 8, [8.0] * 8), "not supported"),
            # quick mode's x4 grid: pre-LN trains up to x16 and never diverges, the un-normalized net to x4 ...
            (c31([16.0] * 8, [4.0] * 8, [64.0] * 8, [16.0] * 8, step=4.0), "supported"),
            # ... the same to x16, diverging beyond: the own reference fails
            (c31([16.0] * 8, [16.0] * 8, [64.0] * 8, [16.0] * 8, step=4.0), "not supported"),
            # ... one seed in eight where the un-normalized net keeps up: eight seeds' interval is their range
            (c31([16.0] * 8, [4.0] * 7 + [16.0], [64.0] * 8, [16.0] * 7 + [64.0], step=4.0), "inconclusive")],
    "C34": [(c34(FINE, FINE), "supported"),
            (c34(WORSE, FINE), "not supported"),  # only DyT fails
            (c34(FINE, WORSE), "not supported"),  # only DeepNorm fails
            (c34(FINE, FINE, post_diff=FINE), "not supported"),  # post-LN trains as well: DeepNorm not needed
            (c34(STRADDLE, FINE), "inconclusive"),
            (c34(FINE, STRADDLE), "inconclusive")],
}

"""Synthetic records for the verdicts of normlab.experiments.placement: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import lm_rec, profile, rec

from normlab.experiments.placement import C22_ARMS


def _c22(post, pre, pre_profiles=None):
    """Geometric per-block profiles with the given last/first factors (one per seed); or explicit profiles."""
    out = [rec(C22_ARMS["post"], i, {"ffn_out": profile(r)}) for i, r in enumerate(post)]
    pre_profiles = pre_profiles or [profile(r) for r in pre]
    return out + [rec(C22_ARMS["pre"], i, {"ffn_out": p}) for i, p in enumerate(pre_profiles)]


def _c21(post_cost, pre_cost):
    out = []
    for placement, costs in (("post", post_cost), ("pre", pre_cost)):
        for seed, cost in enumerate(costs):
            for lr in (1e-3, 3e-3):
                out.append(lm_rec(f"{placement}-warmup-lr{lr:g}", seed, 2.0 + 0.01 * seed))
                out.append(lm_rec(f"{placement}-nowarmup-lr{lr:g}", seed, 2.0 + 0.01 * seed + cost))
    return out


def _c24(pre, post):
    return [lm_rec(name, seed, v) for name, vals in (("pre", pre), ("post", post)) for seed, v in enumerate(vals)]


GROWS, FLAT = [1.8, 1.9, 2.0, 1.85], [1.0, 1.05, 0.97, 1.02]
CASES = {
    "C21": [(_c21([0.5, 0.6, 0.55, 0.52], [0.0, 0.01, 0.0, 0.02]), "supported"),
            (_c21([0.0, 0.01, 0.02, 0.0], [0.5, 0.6, 0.55, 0.5]), "not supported"),
            (_c21([0.0, 0.5, 0.3, 0.1], [0.1, 0.11, 0.1, 0.1]), "inconclusive"),
            # pairing: a seed-shared offset (a hard seed) cancels in the paired difference
            (_c21([0.3, 1.3, 0.5, 0.9], [0.2, 1.2, 0.4, 0.8]), "supported")],
    "C22": [(_c22(GROWS, FLAT), "supported"),
            # only one half fails each time, so an and/or swap is caught
            (_c22(GROWS, [0.3, 0.32, 0.31, 0.33]), "not supported"),  # pre-LN falls toward the output
            (_c22([1.0, 1.02, 0.98, 1.01], FLAT), "not supported"),  # post-LN does not grow
            # pre-LN first and last blocks equal but a falling profile in between: the slope sees it
            (_c22(GROWS, None, [[1.0, 0.6, 0.45, 0.35, 0.3, 1.0]] * 2 + [[1.0, 0.65, 0.5, 0.4, 0.3, 1.05]] * 2),
             "not supported"),
            (_c22([1.1, 1.9, 1.3, 1.6], FLAT), "inconclusive"),  # post-LN's interval straddles 1.25
            (_c22(GROWS, [1.0, 1.4, 0.9, 1.2]), "inconclusive")],  # pre-LN's interval straddles the tolerance
    "C24": [(_c24([2.2, 2.21, 2.25, 2.19], [2.0, 2.01, 2.05, 2.0]), "supported"),
            (_c24([2.0, 2.01, 2.0, 2.02], [2.2, 2.21, 2.25, 2.2]), "not supported"),
            (_c24([2.0, 2.3, 2.1, 2.2], [2.1, 2.11, 2.2, 2.1]), "inconclusive"),
            # paired by seed: seeds differ a lot, pre-LN is worse by 0.02 at every seed
            (_c24([2.02, 2.52, 2.22, 2.82], [2.0, 2.5, 2.2, 2.8]), "supported")],
}

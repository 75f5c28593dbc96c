"""Synthetic records for the verdicts of normlab.experiments.placement: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import groups, lm_rec, profile, rec


def _c22(post, pre):
    out = []
    for group, ratios in (("post (xavier init)", post), ("pre (xavier init)", pre)):
        out += [rec(group, i, {"ffn_out": profile(r)}) for i, r in enumerate(ratios)]
    return out


def _c21(post_cost, pre_cost):
    out = []
    for placement, costs in (("post", post_cost), ("pre", pre_cost)):
        for seed, cost in enumerate(costs):
            for lr in (1e-3, 3e-3):
                out.append(lm_rec(f"{placement}-warmup-lr{lr:g}", seed, 2.0))
                out.append(lm_rec(f"{placement}-nowarmup-lr{lr:g}", seed, 2.0 + cost))
    return out


CASES = {
    "C21": [(_c21([0.5, 0.6], [0.0, 0.01]), "supported"), (_c21([0.0, 0.01], [0.5, 0.6]), "not supported"),
            (_c21([0.0, 0.5], [0.1, 0.11]), "inconclusive")],
    "C22": [(_c22([1.8, 1.9], [1.0, 1.05]), "supported"), (_c22([1.0, 1.02], [0.3, 0.32]), "not supported"),
            (_c22([1.3, 1.9], [1.0, 1.05]), "inconclusive")],
    "C24": [(groups({"pre": [2.2, 2.21], "post": [2.0, 2.01]}), "supported"),
            (groups({"pre": [2.0, 2.01], "post": [2.2, 2.21]}), "not supported"),
            (groups({"pre": [2.0, 2.3], "post": [2.1, 2.11]}), "inconclusive")],
}

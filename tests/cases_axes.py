"""Synthetic records for the verdicts of normlab.experiments.axes: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec


def _c04(match=True, ln_diff=1.4):
    layers = {"BatchNorm": {"pool_matches": True, "affine": [6], "claimed_affine": [6]},
              "InstanceNorm": {"pool_matches": match, "affine": [6], "claimed_affine": [6]}}
    return [rec("exact", 0, {"layers": layers, "ln_difference": ln_diff})]


def _c05(diff):
    pair = {"forward": diff, "backward": diff / 2}
    return [rec("exact", s, {"gn1_vs_ln": pair, "gnC_vs_in": {"forward": 0.0, "backward": 0.0},
                             "torch_gn1_vs_ln": {"forward": 1e-15, "backward": 0.0},
                             "torch_gnC_vs_in": {"forward": 0.0, "backward": 0.0}}) for s in range(2)]


def _c06(diffs):
    return [rec("exact", s, {"bn1_vs_ln": d, "bn1_vs_in": 0.0}) for s, d in enumerate(diffs)]


def _c07(aff, raw):
    return ([rec("batchnorm affine=True", s, {"rel_error": e}) for s, e in enumerate(aff)]
            + [rec("batchnorm affine=False", s, {"rel_error": e}) for s, e in enumerate(raw)])


def _c08(var=0.0, err="ValueError: ... got input of shape (1, 8) ... with batch size 1 the batch variance is 0"):
    return [rec("exact", 0, {"max_var": var, "output_minus_beta": 0.0, "max_input_grad": 0.0,
                             "errors": {"normlab": err, "torch": "ValueError"}})]


CASES = {
    "C04": [(_c04(), "supported"), (_c04(match=False), "not supported"), (_c04(ln_diff=0.0), "not supported")],
    "C05": [(_c05(0.0), "supported"), (_c05(1e-3), "not supported")],
    "C06": [(_c06([2.4, 2.8]), "supported"), (_c06([0.0, 2.8]), "not supported")],
    "C07": [(_c07([4e-4, 5e-4], [0.8, 0.9]), "supported"), (_c07([0.8, 0.9], [4e-4, 5e-4]), "not supported"),
            (_c07([0.05, 0.06], [0.8, 0.9]), "inconclusive"), (_c07([1e-4, 0.5], [0.8, 0.9]), "inconclusive")],
    "C08": [(_c08(), "supported"), (_c08(var=0.5), "not supported"), (_c08(err=None), "not supported")],
}

"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec


def _c04(match=(True, True), ln_diff=(1.4, 1.3)):
    """One record per seed: whether InstanceNorm's pooled set matches, and the CNN-LN difference."""
    out = []
    for s, (m, d) in enumerate(zip(match, ln_diff)):
        layers = {"BatchNorm": {"pool_matches": True, "affine": [6], "claimed_affine": [6]},
                  "InstanceNorm": {"pool_matches": m, "affine": [6], "claimed_affine": [6]}}
        out.append(rec("exact", s, {"layers": layers, "ln_difference": d}))
    return out


def _c05(diffs, torch_diff=1e-15):
    """One record per seed; ``diffs[s]`` is normlab's GroupNorm(1) vs LayerNorm difference on seed s."""
    return [rec("exact", s, {"gn1_vs_ln": {"forward": d, "backward": d / 2},
                             "gnC_vs_in": {"forward": 0.0, "backward": 0.0},
                             "torch_gn1_vs_ln": {"forward": torch_diff, "backward": 0.0},
                             "torch_gnC_vs_in": {"forward": 0.0, "backward": 0.0}}) for s, d in enumerate(diffs)]


def _c06(diffs):
    return [rec("exact", s, {"bn1_vs_ln": d, "bn1_vs_in": 0.0}) for s, d in enumerate(diffs)]


def _c07(aff, raw):
    return ([rec("batchnorm affine=True", s, {"rel_error": e}) for s, e in enumerate(aff)]
            + [rec("batchnorm affine=False", s, {"rel_error": e}) for s, e in enumerate(raw)])


CLEAR = "ValueError: ... got input of shape (1, 8) ... with batch size 1 the batch variance is 0"


def _c08(var=(0.0, 0.0), err=(CLEAR, CLEAR)):
    return [rec("exact", s, {"max_var": v, "output_minus_beta": 0.0, "max_input_grad": 0.0,
                             "errors": {"normlab": e, "torch": "ValueError"}})
            for s, (v, e) in enumerate(zip(var, err))]


GOOD_AFF, NO_AFF = [4e-4, 5e-4, 3e-4, 4.5e-4, 6e-4, 4e-4], [0.8, 0.9, 0.85, 0.8, 0.82, 0.88]

CASES = {
    "C04": [(_c04(), "supported"),
            (_c04(match=(False, False)), "not supported"),  # the pools fail, the LN difference holds
            (_c04(ln_diff=(0.0, 0.0)), "not supported"),  # the pools hold, the two LNs agree
            (_c04(match=(True, False)), "inconclusive")],  # the seeds disagree
    "C05": [(_c05([0.0, 0.0]), "supported"), (_c05([1e-3, 2e-3]), "not supported"),
            (_c05([0.0, 0.0], torch_diff=1e-3), "not supported"),  # torch's layers fail only
            (_c05([0.0, 1e-3]), "inconclusive")],
    # t interval of the mean max |BN1 - LN| against 0.1
    "C06": [(_c06([2.4, 2.8, 2.5, 2.6, 2.7, 2.5]), "supported"),
            (_c06([0.0, 0.01, 0.0, 0.02, 0.0, 0.01]), "not supported"),
            (_c06([0.0, 2.8, 0.0, 0.1, 0.0, 0.3]), "inconclusive"), (_c06([2.4, 2.8]), "inconclusive")],
    "C07": [(_c07(GOOD_AFF, NO_AFF), "supported"),
            (_c07(NO_AFF, GOOD_AFF), "not supported"),
            # a decade apart, but with affine the error stays above 0.01: the second part fails only
            (_c07([0.05, 0.06, 0.05, 0.055, 0.06, 0.05], NO_AFF), "not supported"),
            # with affine is good, but without it is just as good: the first part fails only
            (_c07(GOOD_AFF, [5e-4, 4e-4, 4e-4, 5e-4, 5e-4, 4e-4]), "not supported"),
            (_c07([1e-4, 0.5, 1e-4, 0.3, 1e-3, 0.02], NO_AFF), "inconclusive")],
    "C08": [(_c08(), "supported"), (_c08(var=(0.5, 0.5)), "not supported"), (_c08(err=(None, None)), "not supported"),
            (_c08(var=(0.0, 0.5)), "inconclusive")],
}

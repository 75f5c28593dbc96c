"""Synthetic records for the BatchNorm/CNN/numerics claims' verdicts: claim -> [(records, expected status)].

Imported by test_engine's CLAIM_CASES; each claim gets records that must
produce each outcome its rule allows.
"""

from __future__ import annotations


def rec(name, seed, result):
    return {"name": name, "seed": seed, "status": "ok", "result": result}


# ------------------------------------------------------------------ exact claims
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


def _c17(ln, rms):
    """Compiled times per round from lists; the eager pairs are fixed (they are reported, not judged)."""
    fixed = {"fwd": {"layernorm": [1.0, 1.1], "rmsnorm": [2.0, 2.1]},
             "fwd+bwd": {"layernorm": [2.0, 2.1], "rmsnorm": [9.0, 9.1]}}
    comp = {p: {"layernorm": ln, "rmsnorm": rms} for p in ("fwd", "fwd+bwd")}
    return [rec("4096x768", 0, {"times_ms": {"torch": fixed, "compiled torch": comp, "normlab": fixed}})]


def _c28(low_err, fp16_err=None):
    cases = {}
    for dt in ("bfloat16", "float16"):
        low_err = fp16_err if dt == "float16" and fp16_err is not None else low_err
        for inp in ("ordinary N(0,1)", "mean 100, std 1", "mean 1e4, std 100"):
            cases[f"{dt} | {inp}"] = {"fp32 (normlab)": 5e-7, "naive fp32": 2e-3, "tree": low_err,
                                      "sequential": low_err * 10, "output_rounding": 1e-2}
    return [rec("precision", s, {"errors": cases}) for s in range(2)]


def _c29(eps0_finite=0.0):
    r = {"eps0_fp32_normlab": eps0_finite, "eps0_fp32_torch": eps0_finite, "eps1e-5_fp32": 1.0,
         "eps1e-5_fp32_output_absmax": 0.0, "eps1e-12_in_fp16": 0.0, "eps1e-12_fp16_stats": 0.0,
         "eps1e-5_fp16_stats": 1.0, "eps1e-12_fp16_input_normlab": 1.0,
         "near_const_fp16_output_std_eps1e-12": 1.0, "near_const_fp16_output_std_eps1e-05": 0.3,
         "near_const_grad_absmax_eps1e-12": 3e3, "near_const_grad_absmax_eps1e-05": 9e2}
    return [rec("eps", 0, r)]


CASES = {
    "C04": [(_c04(), "supported"), (_c04(match=False), "not supported"), (_c04(ln_diff=0.0), "not supported")],
    "C05": [(_c05(0.0), "supported"), (_c05(1e-3), "not supported")],
    "C06": [(_c06([2.4, 2.8]), "supported"), (_c06([0.0, 2.8]), "not supported")],
    "C07": [(_c07([4e-4, 5e-4], [0.8, 0.9]), "supported"), (_c07([0.8, 0.9], [4e-4, 5e-4]), "not supported"),
            (_c07([0.05, 0.06], [0.8, 0.9]), "inconclusive"), (_c07([1e-4, 0.5], [0.8, 0.9]), "inconclusive")],
    "C08": [(_c08(), "supported"), (_c08(var=0.5), "not supported"), (_c08(err=None), "not supported")],
    "C17": [(_c17([1.0, 1.05], [0.7, 0.72]), "supported"), (_c17([1.0, 1.05], [1.3, 1.35]), "not supported"),
            (_c17([1.0, 1.5], [0.9, 1.2]), "inconclusive")],
    "C28": [(_c28(0.3), "supported"), (_c28(1e-6), "not supported"), (_c28(0.3, fp16_err=1e-6), "inconclusive")],
    "C29": [(_c29(), "supported"), (_c29(eps0_finite=1.0), "not supported")],
}

"""Synthetic records for the verdicts of normlab.experiments.numerics: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec


def _c17(ln, rms):
    """Compiled times per round from lists; the eager pairs are fixed (they are reported, not judged)."""
    fixed = {"fwd": {"layernorm": [1.0, 1.1], "rmsnorm": [2.0, 2.1]},
             "fwd+bwd": {"layernorm": [2.0, 2.1], "rmsnorm": [9.0, 9.1]}}
    comp = {p: {"layernorm": ln, "rmsnorm": rms} for p in ("fwd", "fwd+bwd")}
    return [rec("4096x768", 0, {"times_ms": {"torch": fixed, "compiled torch": comp, "normlab": fixed}})]


def _c28(low_err, fp16_err=None):
    """fp16_err: the fp16 cases' error; "inf" as records store an overflow."""
    cases = {}
    for dt in ("bfloat16", "float16"):
        err = fp16_err if dt == "float16" and fp16_err is not None else low_err
        for inp in ("ordinary N(0,1)", "mean 100, std 1", "mean 1e4, std 100"):
            cases[f"{dt} | {inp}"] = {"fp32 (normlab)": 5e-7, "naive fp32": 2e-3, "tree": err,
                                      "sequential": err if isinstance(err, str) else err * 10,
                                      "output_rounding": 1e-2}
    return [rec("precision", s, {"errors": cases}) for s in range(2)]


def _c29(eps0_finite=0.0):
    r = {"eps0_fp32_normlab": eps0_finite, "eps0_fp32_torch": eps0_finite, "eps1e-5_fp32": 1.0,
         "eps1e-5_fp32_output_absmax": 0.0, "eps1e-12_in_fp16": 0.0, "eps1e-12_fp16_stats": 0.0,
         "eps1e-5_fp16_stats": 1.0, "eps1e-12_fp16_input_normlab": 1.0,
         "near_const_fp16_output_std_eps1e-12": 1.0, "near_const_fp16_output_std_eps1e-05": 0.3,
         "near_const_grad_absmax_eps1e-12": 3e3, "near_const_grad_absmax_eps1e-05": 9e2}
    return [rec("eps", 0, r)]


CASES = {
    "C17": [(_c17([1.0, 1.05], [0.7, 0.72]), "supported"), (_c17([1.0, 1.05], [1.3, 1.35]), "not supported"),
            (_c17([1.0, 1.5], [0.9, 1.2]), "inconclusive")],
    "C28": [(_c28(0.3), "supported"), (_c28(0.3, fp16_err="inf"), "supported"), (_c28(1e-6), "not supported"), (_c28(0.3, fp16_err=1e-6), "inconclusive")],
    "C29": [(_c29(), "supported"), (_c29(eps0_finite=1.0), "not supported")],
}

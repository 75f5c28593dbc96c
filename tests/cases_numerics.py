"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec

LN = [1.0, 1.05, 0.98, 1.02, 1.01, 1.03]
FASTER = [0.7, 0.74, 0.69, 0.71, 0.72, 0.7]
SLOWER = [1.3, 1.35, 1.31, 1.33, 1.32, 1.36]
NOISY = [0.9, 1.2, 0.85, 1.1, 0.95, 1.15]


def _c17(ln=LN, rms=FASTER, fwd_rms=None, name="4096x768", judged="compiled torch"):
    """Times per round of the judged pair from lists (fwd+bwd; fwd too unless fwd_rms); the other pairs are
    fixed (RMSNorm much slower: a verdict read off them would say "not supported").  judged="normlab" puts the
    lists in normlab's pair and records both of its layers on the fused C++ path."""
    fixed = {"fwd": {"layernorm": [1.0, 1.1, 1.0], "rmsnorm": [2.0, 2.1, 2.0]},
             "fwd+bwd": {"layernorm": [2.0, 2.1, 2.0], "rmsnorm": [9.0, 9.1, 9.0]}}
    lists = {"fwd": {"layernorm": ln, "rmsnorm": fwd_rms or rms}, "fwd+bwd": {"layernorm": ln, "rmsnorm": rms}}
    times = {"torch": fixed, "compiled torch": fixed, "normlab": fixed, judged: lists}
    paths = {"layernorm": "cpp:rows", "rmsnorm": "cpp:rows"} if judged == "normlab" else \
        {"layernorm": "reference", "rmsnorm": "reference"}
    return [rec(name, 0, {"times_ms": times, "warmup_times_ms": {}, "normlab_paths": paths})]


def _c28(low_err=(0.3, 0.25, 0.35, 0.28), fp16_err=None):
    """Per draw, the low-precision (tree) error of every case; fp16_err: the fp16 cases' ("inf": an overflow,
    stored as records store it)."""
    fp16_err = fp16_err or low_err
    out = []
    for s in range(len(low_err)):
        cases = {}
        for dt, errs in (("bfloat16", low_err), ("float16", fp16_err)):
            for inp in ("ordinary N(0,1)", "mean 100, std 1", "mean 1e4, std 100"):
                err = errs[s]
                cases[f"{dt} | {inp}"] = {"fp32 (normlab)": 5e-7, "naive fp32": 2e-3, "tree": err,
                                          "sequential": err if isinstance(err, str) else err * 10,
                                          "output_rounding": 1e-2}
        out.append(rec("precision", s, {"errors": cases}))
    return out


def _c29(eps0_finite=0.0, eps0_torch=None, eps_fp16=0.0, fp16_finite=0.0):
    r = {"eps0_fp32_normlab": eps0_finite, "eps0_fp32_torch": eps0_finite if eps0_torch is None else eps0_torch,
         "eps1e-5_fp32": 1.0, "eps1e-5_fp32_output_absmax": 0.0, "eps1e-12_in_fp16": eps_fp16,
         "eps1e-12_fp16_stats": fp16_finite, "eps1e-5_fp16_stats": 1.0, "eps1e-12_fp16_input_normlab": 1.0,
         "near_const_fp16_output_std_eps1e-12": 1.0, "near_const_fp16_output_std_eps1e-05": 0.3,
         "near_const_grad_absmax_eps1e-12": 3e3, "near_const_grad_absmax_eps1e-05": 9e2}
    return [rec("eps", 0, r)]


INF = ("inf",) * 4

CASES = {
    "C17": [(_c17(), "supported"), (_c17(rms=SLOWER), "not supported"), (_c17(rms=NOISY), "inconclusive"),
            # only the forward pass is slower: one part fails
            (_c17(fwd_rms=SLOWER), "not supported"),
            # both layers drift together round to round (0.9x in every round): only a paired interval sees it
            (_c17(ln=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], rms=[0.9, 1.8, 2.7, 3.6, 4.5, 5.4]), "supported"),
            (_c17() + _c17(rms=NOISY, name="2048x4096"), "inconclusive"),
            (_c17(ln=LN[:1], rms=FASTER[:1]), "inconclusive"),  # one round: no interval
            # normlab's own fused pair is judged when both layers took the C++ kernels
            (_c17(judged="normlab"), "supported"), (_c17(rms=SLOWER, judged="normlab"), "not supported"),
            (_c17(rms=NOISY, judged="normlab"), "inconclusive")],
    "C28": [(_c28(), "supported"), (_c28(fp16_err=INF), "supported"),
            (_c28(low_err=(1e-6, 1.2e-6, 0.9e-6, 1.1e-6)), "not supported"),
            # 1000x fp32's error, yet far below 0.01: larger but immaterial, the material part fails alone
            (_c28(low_err=(5e-4, 6e-4, 4e-4, 5e-4), fp16_err=INF), "not supported"),
            # the ratio's interval straddles 10x
            (_c28(fp16_err=(1e-6, 1e-4, 5e-6, 2e-4)), "inconclusive"),
            (_c28(fp16_err=("inf", 0.3, "inf", "inf")), "inconclusive")],  # overflow in some draws only
    "C29": [(_c29(), "supported"), (_c29(eps0_finite=1.0), "not supported"),
            (_c29(eps_fp16=6e-8, fp16_finite=1.0), "not supported"),
            (_c29(eps0_torch=1.0), "inconclusive"),  # the two implementations disagree
            (_c29(fp16_finite=1.0), "inconclusive")],  # eps underflows, yet the output stays finite
}

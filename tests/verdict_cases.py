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
    "C04": [(_c04(), "supported"), (_c04(match=False), "not supported"), (_c04(ln_diff=0.0), "not supported")],
    "C05": [(_c05(0.0), "supported"), (_c05(1e-3), "not supported")],
    "C06": [(_c06([2.4, 2.8]), "supported"), (_c06([0.0, 2.8]), "not supported")],
    "C07": [(_c07([4e-4, 5e-4], [0.8, 0.9]), "supported"), (_c07([0.8, 0.9], [4e-4, 5e-4]), "not supported"),
            (_c07([0.05, 0.06], [0.8, 0.9]), "inconclusive"), (_c07([1e-4, 0.5], [0.8, 0.9]), "inconclusive")],
    "C08": [(_c08(), "supported"), (_c08(var=0.5), "not supported"), (_c08(err=None), "not supported")],
    "C17": [(_c17([1.0, 1.05], [0.7, 0.72]), "supported"), (_c17([1.0, 1.05], [1.3, 1.35]), "not supported"),
            (_c17([1.0, 1.5], [0.9, 1.2]), "inconclusive")],
    "C28": [(_c28(0.3), "supported"), (_c28(0.3, fp16_err="inf"), "supported"), (_c28(1e-6), "not supported"), (_c28(0.3, fp16_err=1e-6), "inconclusive")],
    "C29": [(_c29(), "supported"), (_c29(eps0_finite=1.0), "not supported")],
}


# ------------------------------------------------------------------ CNN claims
def _landscape(bn: dict, none: dict):
    """bn/none: key -> per-seed value (every checkpoint after the first carries it)."""
    out = []
    for name, vals in (("batchnorm", bn), ("none", none)):
        for s in range(2):
            pts = [{"step": k * 50, **{key: v[s] for key, v in vals.items()}} for k in range(3)]
            out.append(rec(name, s, {"points": pts}))
    return out


def _ics(bn_cos, none_cos):
    return _landscape({"ics_cos": bn_cos, "ics_l2": [1.0, 1.0]}, {"ics_cos": none_cos, "ics_l2": [1.0, 1.0]})


def _smooth(bn_beta, none_beta, bn_range=(0.1, 0.1), none_range=(1.0, 1.0)):
    return _landscape({"beta": bn_beta, "loss_range": list(bn_range), "grad_change": [1.0, 1.0]},
                      {"beta": none_beta, "loss_range": list(none_range), "grad_change": [1.0, 1.0]})


def _train(final=None, status="ok", **extra):
    return {"status": status, "final": final or {}, **extra}


def _c03(bn_best, none_best):
    """bn_best/none_best: per seed, the largest lr that trains."""
    out = []
    for norm, best in (("batchnorm", bn_best), ("none", none_best)):
        for s, b in enumerate(best):
            for lr in (0.01, 0.1, 1.0):
                ok = lr <= b
                out.append({**rec(f"{norm} lr{lr}", s, _train({"test_acc": 0.9 if ok else 0.1},
                                                             "ok" if ok else "diverged")),
                            "config": {"norm": norm, "lr": lr}})
    return out


def _c09(bn_small, gn_small):
    """Accuracy at per-worker 32 is 0.9 for both; at 2 it is bn_small / gn_small (per seed)."""
    out = []
    for norm, small in (("batchnorm", bn_small), ("groupnorm", gn_small)):
        for s, a in enumerate(small):
            for b, acc in ((32, 0.9), (2, a)):
                out.append({**rec(f"{norm} {b}", s, _train({"test_acc": acc})),
                            "config": {"norm": norm, "per_worker": b}})
    return out


def _c13(ln_gaps, bn_gaps, ln_low=0.1):
    """Each run evaluated at train loss 1.0 and at its lowest (0.1; LN's is ln_low)."""
    out = []
    for name, gaps in (("layernorm", ln_gaps), ("batchnorm", bn_gaps)):
        for s, gap in enumerate(gaps):
            low = ln_low if name == "layernorm" else 0.1
            evals = [{"train_loss": 1.0, "test_loss": 1.1}, {"train_loss": low, "test_loss": low + gap}]
            out.append(rec(name, s, _train(evals=evals)))
    return out


def _c30(loss0, loss1, grad0=0.0):
    out = []
    for name, loss, grad in (("gamma=0", loss0, grad0), ("gamma=1", loss1, 0.2)):
        for s, l in enumerate(loss):
            out.append(rec(name, s, _train({"train_loss": l}, init={"first_conv_grad": grad, "logit_std": 0.3})))
    return out


def _c33(wn, bn):
    return ([rec("weightnorm", s, _train({"test_acc": a})) for s, a in enumerate(wn)]
            + [rec("batchnorm", s, _train({"test_acc": a})) for s, a in enumerate(bn)])


# --------------------------------------------------------------- BatchNorm claims
def _c10(bn, ln, bn_comp=0.2):
    return ([rec("batchnorm", s, {"eval_vs_train": g, "batch_composition": bn_comp, "prediction_flips": 0.1})
             for s, g in enumerate(bn)]
            + [rec("layernorm", s, {"eval_vs_train": g, "batch_composition": g, "prediction_flips": 0.0})
               for s, g in enumerate(ln)])


def _c11(bn_err=10.0, masked=1e-15, ln=0.0):
    levels = [{"pad_fraction": 0.0, "bn_error": 0.0, "masked_bn_error": 0.0, "ln_error": 0.0},
              {"pad_fraction": 0.9, "bn_error": bn_err, "masked_bn_error": masked, "ln_error": ln}]
    return [rec("padding", 0, {"levels": levels})]


def _c12(bn, ln):
    return [rec("packing", s, {"bn": b, "ln": ln, "masked_bn": b}) for s, b in enumerate(bn)]


def _c14(before, none):
    out = []
    for name, shifts in (("dropout before every BN", before), ("no dropout", none),
                         ("dropout after the last BN", none)):
        for s, v in enumerate(shifts):
            out.append(rec(name, s, {"shift": {"a": v, "b": v}, "acc_stale": 0.8, "acc_reestimated": 0.85}))
    return out


def _c15(reest, stale):
    return [rec("shift", s, {"accuracy": {"no fine-tuning (stale stats)": 0.3,
                                          "fine-tune, BN frozen (stale stats)": b,
                                          "re-estimate stats, then fine-tune frozen": a}})
            for s, (a, b) in enumerate(zip(reest, stale))]


def _c16(synced, local, diff=1e-16):
    return [rec("2 processes x 2", s, {"exact": {"output": diff, "input_grad": 0.0},
                                       "train": {"local BN": {"test_acc": lo, "step_ms": 10.0},
                                                 "SyncBN": {"test_acc": sy, "step_ms": 14.0}},
                                       "step_ms": {"local BN": 10.0, "SyncBN": 14.0}})
            for s, (sy, lo) in enumerate(zip(synced, local))]


CASES.update({
    "C01": [(_ics([0.9, 0.9], [0.95, 0.95]), "supported"), (_ics([0.999, 0.999], [0.9, 0.9]), "not supported"),
            (_ics([0.99, 0.9], [0.95, 0.95]), "inconclusive")],
    "C02": [(_smooth([1.0, 2.0], [5.0, 6.0]), "supported"), (_smooth([5.0, 6.0], [1.0, 2.0], (1, 1), (0.1, 0.1)),
                                                             "not supported"),
            (_smooth([1.0, 7.0], [5.0, 6.0]), "inconclusive")],
    "C03": [(_c03([1.0, 1.0], [0.01, 0.1]), "supported"), (_c03([0.01, 0.01], [1.0, 1.0]), "not supported"),
            (_c03([1.0, 0.01], [0.1, 0.1]), "inconclusive")],
    "C09": [(_c09([0.6, 0.62], [0.89, 0.9]), "supported"), (_c09([0.9, 0.9], [0.6, 0.62]), "not supported"),
            (_c09([0.89, 0.6], [0.88, 0.88]), "inconclusive")],
    "C13": [(_c13([0.5, 0.55], [0.1, 0.12]), "supported"), (_c13([0.1, 0.12], [0.5, 0.55]), "not supported"),
            (_c13([0.1, 0.5], [0.2, 0.22]), "inconclusive"), (_c13([0.5, 0.55], [0.1, 0.12], ln_low=0.6),
                                                             "inconclusive"),
            (_c13([0.5, 0.55], [0.1, 0.12], ln_low=0.3), "supported")],
    "C30": [(_c30([2.3, 2.3], [0.8, 0.82]), "supported"), (_c30([0.8, 0.82], [2.3, 2.3]), "not supported"),
            (_c30([2.3, 2.3], [0.8, 0.82], grad0=0.1), "inconclusive")],
    "C33": [(_c33([0.9, 0.92], [0.91, 0.9]), "supported"), (_c33([0.6, 0.62], [0.91, 0.9]), "not supported")],
    "C10": [(_c10([0.1, 0.2], [0.0, 1e-7]), "supported"), (_c10([1e-4, 2e-4], [0.0, 0.0]), "not supported"),
            (_c10([0.005, 0.2], [0.0, 0.0]), "inconclusive")],
    "C11": [(_c11(), "supported"), (_c11(masked=0.5), "not supported"), (_c11(bn_err=0.01), "not supported")],
    "C12": [(_c12([0.3, 0.5], 0.0), "supported"), (_c12([0.3, 0.5], 0.1), "not supported")],
    "C14": [(_c14([1.5, 1.6], [1.05, 1.06]), "supported"), (_c14([1.05, 1.06], [1.5, 1.6]), "not supported"),
            (_c14([1.05, 1.6], [1.1, 1.1]), "inconclusive")],
    "C15": [(_c15([0.8, 0.82], [0.4, 0.45]), "supported"), (_c15([0.4, 0.45], [0.8, 0.82]), "not supported"),
            (_c15([0.8, 0.4], [0.5, 0.52]), "inconclusive")],
    "C16": [(_c16([0.9, 0.91], [0.7, 0.72]), "supported"), (_c16([0.7, 0.72], [0.9, 0.91]), "not supported"),
            (_c16([0.9, 0.7], [0.8, 0.8]), "inconclusive"), (_c16([0.9, 0.91], [0.7, 0.72], diff=1e-3),
                                                             "not supported")],
})

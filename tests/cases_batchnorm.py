"""Synthetic records for the verdicts of normlab.experiments.batchnorm: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec


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


CASES = {
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
}

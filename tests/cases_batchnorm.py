"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec


def _c10(bn, ln, bn_comp=(0.2, 0.25, 0.18, 0.22)):
    return ([rec("batchnorm", s, {"eval_vs_train": g, "batch_composition": c, "prediction_flips": 0.1})
             for s, (g, c) in enumerate(zip(bn, bn_comp))]
            + [rec("layernorm", s, {"eval_vs_train": g, "batch_composition": g, "prediction_flips": 0.0})
               for s, g in enumerate(ln)])


BN_GAP = [0.1, 0.2, 0.15, 0.12]
LN_GAP = [0.0, 1e-7, 2e-8, 0.0]


def _c11(bn_err=(10.0, 8.0, 12.0, 9.0), masked=1e-15, ln=0.0):
    """One record per seed; masked/ln: the error of seed 0's padded level (the others' are exact)."""
    return [rec("padding", s, {"levels": [
        {"pad_fraction": 0.0, "bn_error": 0.0, "masked_bn_error": 0.0, "ln_error": 0.0},
        {"pad_fraction": 0.5, "bn_error": e / 3, "masked_bn_error": 0.0, "ln_error": 0.0},
        {"pad_fraction": 0.9, "bn_error": e, "masked_bn_error": masked if s == 0 else 0.0,
         "ln_error": ln if s == 0 else 0.0}]}) for s, e in enumerate(bn_err)]


def _c12(bn, ln=0.0):
    return [rec("packing", s, {"bn": b, "ln": ln if s == 0 else 0.0, "masked_bn": b}) for s, b in enumerate(bn)]


def _c14(before, none, order=None):
    out = []
    for name, shifts in (("dropout before every BN", before), ("no dropout", none),
                         ("dropout after the last BN", none)):
        for s, v in enumerate(shifts):
            out.append(rec(name, s, {"shift": {"a": v, "b": v}, "acc_stale": 0.8 - (v - 1) / 10,
                                     "acc_reestimated": 0.85}))
    return out[::-1] if order == "reversed" else out  # records come in any order; pairing is by seed


def _c15(reest, stale, ft_reest=(0.6, 0.62, 0.61, 0.63), ft_stale=(0.6, 0.61, 0.62, 0.6)):
    return [rec("shift", s, {"accuracy": {"source_test_acc": 0.9, "no fine-tuning (stale stats)": b,
                                          "fine-tune, BN in train mode": 0.6,
                                          "fine-tune, BN frozen (stale stats)": fb,
                                          "re-estimate stats, then fine-tune frozen": fa,
                                          "re-estimate stats only": a}})
            for s, (a, b, fa, fb) in enumerate(zip(reest, stale, ft_reest, ft_stale))]


def _c16(configs: dict, diff=1e-16):
    """configs: name -> (SyncBN accuracies, local BN accuracies), one pair per seed."""
    return [rec(name, s, {"exact": {"output": diff, "input_grad": 0.0},
                          "train": {"local BN": {"test_acc": lo, "step_ms": 10.0 + s},
                                    "SyncBN": {"test_acc": sy, "step_ms": 14.0 + s}},
                          "step_ms": {"local BN": 10.0 + s, "SyncBN": 14.0 + s}})
            for name, (synced, local) in configs.items() for s, (sy, lo) in enumerate(zip(synced, local))]


GOOD = ([0.9, 0.91, 0.88, 0.92], [0.7, 0.72, 0.69, 0.71])
WORSE = ([0.7, 0.72, 0.69, 0.71], [0.9, 0.91, 0.88, 0.92])
NOISY = ([0.9, 0.7, 0.85, 0.75], [0.8, 0.8, 0.8, 0.8])
# SyncBN +0.1 in every seed, but the seeds differ by far more: only a paired interval sees it
PAIRED = ([0.5, 0.7, 0.9, 0.6], [0.4, 0.6, 0.8, 0.5])

CASES = {
    "C10": [(_c10(BN_GAP, LN_GAP), "supported"),
            (_c10([1e-4, 2e-4, 1e-4, 3e-4], LN_GAP), "not supported"),
            # only LN fails (its modes differ visibly), BN's parts hold
            (_c10(BN_GAP, [1e-2, 1.2e-2, 1.1e-2, 1.3e-2]), "not supported"),
            # only the batch-composition part is in doubt
            (_c10(BN_GAP, LN_GAP, bn_comp=[0.005, 0.2, 0.01, 0.3]), "inconclusive"),
            (_c10([0.005, 0.2, 0.01, 0.3], LN_GAP), "inconclusive"),
            (_c10(BN_GAP[:1], LN_GAP[:1]), "inconclusive")],  # one seed: no interval
    "C11": [(_c11(), "supported"),
            (_c11(masked=0.5), "not supported"),  # only the mask fails
            (_c11(ln=0.5), "not supported"),  # only LN fails
            (_c11(bn_err=(0.01, 0.02, 0.015, 0.012)), "not supported"),  # padding does not corrupt BN
            (_c11(bn_err=(0.05, 0.5, 0.08, 0.4)), "inconclusive"),  # the interval straddles 0.1
            (_c11(ln=1e-6), "inconclusive")],  # LN neither exact nor visibly wrong
    "C12": [(_c12([0.3, 0.5, 0.4, 0.35]), "supported"),
            (_c12([0.3, 0.5, 0.4, 0.35], ln=0.1), "not supported"),
            (_c12([1e-5, 2e-5, 1e-5, 3e-5]), "not supported"),
            (_c12([1e-4, 0.5, 2e-4, 0.3]), "inconclusive"),
            (_c12([0.3, 0.5, 0.4, 0.35], ln=1e-7), "inconclusive")],
    "C14": [(_c14([1.5, 1.6, 1.55, 1.7], [1.05, 1.06, 1.04, 1.05]), "supported"),
            (_c14([1.05, 1.06, 1.04, 1.05], [1.5, 1.6, 1.55, 1.7]), "not supported"),
            (_c14([1.05, 1.6, 1.1, 1.3], [1.1, 1.1, 1.1, 1.1]), "inconclusive"),
            # +0.2 in every seed on top of a large seed-to-seed spread: supported only when paired by seed
            (_c14([1.2, 2.21, 3.19, 4.2], [1.0, 2.0, 3.0, 4.0], order="reversed"), "supported")],
    "C15": [(_c15([0.5, 0.55, 0.52, 0.6], [0.3, 0.32, 0.31, 0.35]), "supported"),
            # the fine-tune comparison is reported, not judged: against the direct test it does not count
            (_c15([0.5, 0.55, 0.52, 0.6], [0.3, 0.32, 0.31, 0.35], ft_reest=[0.5] * 4, ft_stale=[0.7] * 4),
             "supported"),
            (_c15([0.3, 0.32, 0.31, 0.35], [0.5, 0.55, 0.52, 0.6], ft_reest=[0.8, 0.82, 0.81, 0.83],
                  ft_stale=[0.5, 0.51, 0.52, 0.5]), "not supported"),
            (_c15([0.3, 0.6, 0.35, 0.5], [0.4, 0.4, 0.4, 0.4]), "inconclusive")],
    "C16": [(_c16({"2 processes x 2": GOOD, "4 processes x 2": GOOD}), "supported"),
            (_c16({"2 processes x 2": PAIRED}), "supported"),
            (_c16({"2 processes x 2": GOOD, "4 processes x 2": WORSE}), "not supported"),  # one config fails
            (_c16({"2 processes x 2": GOOD, "4 processes x 2": GOOD}, diff=1e-3), "not supported"),  # not exact
            (_c16({"2 processes x 2": GOOD, "4 processes x 2": NOISY}), "inconclusive"),
            # each config +0.2 over local BN, but the configs differ by 0.4: pooled, that would be seed spread
            (_c16({"2 processes x 2": ([0.9, 0.91, 0.9, 0.92], [0.7, 0.71, 0.7, 0.72]),
                   "4 processes x 2": ([0.5, 0.51, 0.5, 0.52], [0.3, 0.31, 0.3, 0.32])}), "supported")],
}

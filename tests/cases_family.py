"""Synthetic records for the verdicts of normlab.experiments.claims (C35-C38): claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec, train_result

JIT = (0.0, 0.004, -0.004, 0.002, -0.002)  # per-seed jitter, so intervals have a width


def _acc_rec(name, seed, acc, **config):
    return {**rec(name, seed, train_result({"test_acc": acc})), "config": config}


def c35(remedies: dict[str, float], bn32=0.94, bn_small: float | dict = 0.84, sizes=(2,), seeds=4):
    """remedies: label -> accuracy at every per-process batch ('Batch Renorm', 'Ghost BN', 'GN+WS', 'FRN');
    bn_small: BN's accuracy at the small batches (one value, or per size)."""
    out = []
    for s in range(seeds):
        j = JIT[s % len(JIT)]
        out.append(_acc_rec("BN at 32", s, bn32 + j))
        for label in ("GN+WS", "FRN"):
            out.append(_acc_rec(label, s, remedies[label] + j))
        for b in sizes:
            small = bn_small[b] if isinstance(bn_small, dict) else bn_small
            out.append(_acc_rec(f"BN at {b}", s, small - 2 * j, per_process=b))
            out.append(_acc_rec(f"Batch Renorm at {b}", s, remedies["Batch Renorm"] + j, per_process=b))
            out.append(_acc_rec(f"Ghost BN over {b}", s, remedies["Ghost BN"] - j, per_process=b))
    return out


GOOD = {"Batch Renorm": 0.92, "Ghost BN": 0.93, "GN+WS": 0.93, "FRN": 0.92}  # midpoint 0.89


def c36(f64=1e-16, f32=3e-7, ratios=(0.9, 0.91, 0.89, 0.92, 0.9), folded=(7, 7)):
    """ratios: per fresh process, t_folded / t_original (each process: three rounds around it)."""
    procs = [{"original": [4.0, 4.1, 3.9], "folded": [4.0 * r, 4.1 * r, 3.9 * r]} for r in ratios]
    return [{**rec("ResNet-style 2-D", 0, {"errors": {"float64": [f64, f64 / 2], "float32": [f32, f32 / 2]},
                                            "folded": [list(folded)] * 2, "processes": procs,
                                            "fresh_pages": {"original": [8.0, 8.2, 7.9], "folded": [6.0, 6.1, 6.2]}}),
             "config": {"batch": 16}}]


def c37(gains: dict[str, list[float]]):
    """gains: arm -> per-seed (recomputed - EMA) accuracy."""
    return [rec(arm, s, {"acc_ema": 0.8, "acc_precise": 0.8 + g,
                         "stat_drift": {"stem.norm": {"mean": 0.01, "log_var": 0.02}}})
            for arm, gs in gains.items() for s, g in enumerate(gs)]


TRAINED, SHORT, LAG = ("trained, EMA momentum 0.1", "short (stopped early, constant lr)",
                       "lagging EMA (momentum 0.01, constant lr)")


def c38(free=(1e-7, 2e-7, 1.5e-7, 1e-7), dependent=(0.2, 0.25, 0.18, 0.22), b0_comp=None):
    out = []
    for norm in ("frn", "evonorm_s0", "groupnorm"):
        out += [rec(norm, s, {"eval_vs_train": v, "batch_composition": v / 2, "prediction_flips": 0.0})
                for s, v in enumerate(free)]
    for norm in ("batchnorm", "evonorm_b0"):
        comp = b0_comp if (b0_comp is not None and norm == "evonorm_b0") else dependent
        out += [rec(norm, s, {"eval_vs_train": v, "batch_composition": c, "prediction_flips": 0.1})
                for s, (v, c) in enumerate(zip(dependent, comp))]
    return out


CASES = {
    "C35": [
        (c35(GOOD), "supported"),
        (c35(GOOD, sizes=(2, 4)), "supported"),
        (c35({**GOOD, "FRN": 0.70}), "not supported"),  # one remedy wholly below the midpoint refutes
        (c35({**GOOD, "Ghost BN": 0.89}), "inconclusive"),  # at the midpoint: straddles
        (c35(GOOD, bn_small=0.935), "inconclusive"),  # BN lost nothing: no loss to recover
    ],
    "C36": [
        (c36(), "supported"),
        (c36(f64=1e-9), "not supported"),  # not exact in float64
        (c36(folded=(6, 7)), "not supported"),  # a BatchNorm of the ResNet was left
        (c36(ratios=(1.05, 1.06, 1.04, 1.05, 1.07)), "not supported"),  # slower
        (c36(ratios=(0.9, 1.1, 0.95, 1.05, 1.0)), "inconclusive"),
    ],
    "C37": [
        (c37({TRAINED: [0.0, 0.002, -0.001, 0.001], SHORT: [0.05, 0.04, 0.06, 0.05], LAG: [0.3, 0.35, 0.25, 0.3]}),
         "supported"),
        (c37({TRAINED: [-0.03, -0.02, -0.025, -0.03], SHORT: [0.05, 0.04, 0.06, 0.05], LAG: [0.3, 0.35, 0.25, 0.3]}),
         "not supported"),  # recomputed statistics lose on the trained net
        (c37({TRAINED: [0.0, 0.002, -0.001, 0.001], SHORT: [0.0, 0.001, -0.001, 0.0], LAG: [0.3, 0.35, 0.25, 0.3]}),
         "not supported"),  # no larger gain when training was short
        (c37({TRAINED: [0.0, 0.002, -0.001, 0.001], SHORT: [0.05, -0.02, 0.08, 0.0], LAG: [0.3, 0.35, 0.25, 0.3]}),
         "inconclusive"),
    ],
    "C38": [
        (c38(), "supported"),
        (c38(free=(1e-3, 1.1e-3, 1.05e-3, 1e-3)), "not supported"),  # a batch-free norm depends on the batch
        (c38(b0_comp=(1e-7, 2e-7, 1e-7, 1e-7)), "not supported"),  # EvoNorm-B0 shows no batch dependence
        (c38(free=(1e-7, 2e-5, 1e-7, 1e-6)), "inconclusive"),
    ],
}

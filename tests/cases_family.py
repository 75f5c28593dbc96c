"""Synthetic records for the verdicts of normlab.experiments.claims (C35-C38): claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec, train_result


C35_LRS = (1e-3, 3e-3, 1e-2)
C35_JIT = (0.0, 0.001, -0.001, 0.0005, -0.0005, 0.0015, -0.0015)  # per-seed jitter, so intervals have a width


def c35(remedies: dict[str, float], bn32=0.94, bn_small: float | dict = 0.84, sizes=(2,), seeds=5, best=3e-3,
        selection_best=None, mode="quick"):
    """remedies: label -> accuracy at every per-process batch ('Batch Renorm', 'GN+WS', 'FRN') at the learning
    rate ``best`` (the others 0.05 lower); bn_small: BN's accuracy at the small batches (one value, or per size).
    ``selection_best``: where the selection seeds (the last, quick mode) find their best lr instead (there 0.02
    above ``best``'s value, which then scores 0.05 lower on them)."""
    out = []

    def add(arm, s, value, k=1.0, **config):
        sel = s >= seeds - 1 if mode == "quick" else s >= seeds - 2
        j = k * C35_JIT[s % len(C35_JIT)]
        for lr in C35_LRS:
            top = lr == (selection_best if sel and selection_best is not None else best)
            v = value + (0.02 if sel and selection_best is not None and top else 0.0) if top else value - 0.05
            out.append({**rec(f"{arm}, lr {lr:g}", s, train_result({"test_acc": v + j})),
                        "config": {"arm": arm, "mode": mode, **config}})

    for s in range(seeds):
        add("BN at 32", s, bn32)
        add("GN+WS", s, remedies["GN+WS"])
        add("FRN", s, remedies["FRN"])
        for b in sizes:
            small = bn_small[b] if isinstance(bn_small, dict) else bn_small
            add(f"BN at {b}", s, small, k=-2.0, per_process=b)
            add(f"Batch Renorm at {b}", s, remedies["Batch Renorm"], per_process=b)
    return out


GOOD = {"Batch Renorm": 0.88, "GN+WS": 0.93, "FRN": 0.92}  # shares 0.4, 0.9, 0.8 of BN's loss 0.1


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
        (c35(GOOD, sizes=(2, 4), seeds=7, mode="full"), "supported"),
        (c35({**GOOD, "FRN": 0.70}), "not supported"),  # one remedy does worse than BN at 2
        (c35({**GOOD, "Batch Renorm": 0.85}), "below the bar"),  # recovers 0.1 of the loss: some, under 0.2
        (c35({**GOOD, "Batch Renorm": 0.86}), "inconclusive"),  # recovers 0.2: straddles the bar
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

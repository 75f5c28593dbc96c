"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec, train_result

NOISE = (0.0, 0.01, -0.01, 0.005)  # per-seed jitter, so intervals have a width


def _landscape(norm, lr, seed, values: dict, acc=0.9):
    """values: key -> the value of every checkpoint after the first (a list = per layer, head last)."""
    pts = [{"step": k * 50, **values} for k in range(3)]
    return {**rec(f"{norm} lr{lr:g}", seed, {"points": pts, "test_acc": acc}),
            "config": {"lr": lr, "model": {"norm": norm}}}


def _ics(bn_ratio: dict, seeds=4, acc_none=0.9):
    """bn_ratio: lr -> per-layer BN/none ICS ratio (the plain net's ICS is 0.1 in l2 and in 1 - cos)."""
    out = []
    for lr, ratios in bn_ratio.items():
        for s in range(seeds):
            jit = 1 + NOISE[s % 4] * 10
            bn = [0.1 * r * jit for r in ratios] + [0.5]  # the head's entry (last) is not judged
            out.append(_landscape("batchnorm", lr, s, {"ics_l2": bn, "ics_cos": [1 - x for x in bn]}))
            no = [0.1] * len(ratios) + [0.05]
            out.append(_landscape("none", lr, s, {"ics_l2": no, "ics_cos": [1 - x for x in no]}, acc=acc_none))
    return out


def _smooth(beta_ratio, range_ratio, spread=0.0):
    out = []
    for s in range(4):
        j = 1 + NOISE[s] * spread
        out.append({**rec("batchnorm", s, {"points": [{"step": k, "beta": beta_ratio * j, "loss_range": range_ratio * j,
                                                       "grad_change": 1.0} for k in range(3)], "test_acc": 0.9}),
                    "config": {"lr": 0.05, "model": {"norm": "batchnorm"}}})
        out.append({**rec("none", s, {"points": [{"step": k, "beta": 1.0, "loss_range": 1.0, "grad_change": 1.0}
                                                 for k in range(3)], "test_acc": 0.9}),
                    "config": {"lr": 0.05, "model": {"norm": "none"}}})
    return out


def _c03(bn_best, none_best):
    """bn_best/none_best: per seed, the largest lr that trains."""
    out = []
    for norm, best in (("batchnorm", bn_best), ("none", none_best)):
        for s, b in enumerate(best):
            for lr in (0.01, 0.1, 1.0):
                ok = lr <= b
                out.append({**rec(f"{norm} lr{lr}", s, train_result({"test_acc": 0.9 if ok else 0.1},
                                                             "ok" if ok else "diverged")),
                            "config": {"norm": norm, "lr": lr}})
    return out


def _c09(bn_small, gn_small, ln_small=None, bn_big=0.9):
    """Accuracy at per-worker 32 is ``bn_big`` (BN) / 0.9 (GN, LN) per seed; at 2 it is bn_small / gn_small / ln_small."""
    out = []
    arms = [("batchnorm", bn_small), ("groupnorm", gn_small)] + ([("layernorm", ln_small)] if ln_small else [])
    for norm, small in arms:
        for s, a in enumerate(small):
            for b, acc in ((32, bn_big if norm == "batchnorm" else 0.9), (8, (0.9 + a) / 2), (2, a)):
                out.append({**rec(f"{norm} per-worker {b}", s, train_result({"test_acc": acc})),
                            "config": {"norm": norm, "per_worker": b}})
    return out


def _c13(ln_gaps, bn_gaps, ln_low=0.1):
    """Evaluations at train loss 1.0, 0.2 and 0.1 (LN's last two at least ln_low); the gap is ``gap`` from 0.2 on."""
    out = []
    for name, gaps in (("layernorm", ln_gaps), ("batchnorm", bn_gaps)):
        for s, gap in enumerate(gaps):
            low = ln_low if name == "layernorm" else 0.1
            mid = max(0.2, low)
            evals = [{"step": 0, "train_loss": 1.0, "test_loss": 1.1}, {"step": 1, "train_loss": mid,
                                                                         "test_loss": mid + gap},
                     {"step": 2, "train_loss": low, "test_loss": low + gap}]
            out.append(rec(name, s, train_result(evals=evals)))
    return out


def _c13_interp(bn_gap_at_02):
    """LN's gap is 0.3 everywhere; BN's goes from ``bn_gap_at_02`` at train loss 0.2 to 0.5 at 0.1: at the target
    0.15 (between the evaluations) it is about halfway, so reading the first evaluation below 0.15 says 0.5."""
    out = []
    for s, j in enumerate(NOISE):
        out.append(rec("layernorm", s, train_result(evals=[{"step": 0, "train_loss": 0.2, "test_loss": 0.5 + j},
                                                           {"step": 1, "train_loss": 0.1, "test_loss": 0.4 + j}])))
        out.append(rec("batchnorm", s, train_result(evals=[
            {"step": 0, "train_loss": 0.2, "test_loss": 0.2 + bn_gap_at_02 + j},
            {"step": 1, "train_loss": 0.1, "test_loss": 0.6 + j}])))
    return out


def _c30(loss0, loss1, grad0=0.0):
    out = []
    for name, loss, grad in (("gamma=0", loss0, grad0), ("gamma=1", loss1, 0.2)):
        for s, l in enumerate(loss):
            out.append(rec(name, s, train_result({"train_loss": l}, init={"first_conv_grad": grad, "logit_std": 0.3})))
    return out


def _c33(wn, bn):
    return ([rec("weightnorm", s, train_result({"test_acc": a})) for s, a in enumerate(wn)]
            + [rec("batchnorm", s, train_result({"test_acc": a})) for s, a in enumerate(bn)])


CASES = {
    "C01": [(_ics({0.02: [1.2, 0.9], 0.1: [1.0, 1.5]}), "supported"),
            # one layer at one lr markedly reduced: the claim is refuted there
            (_ics({0.02: [1.2, 0.9], 0.1: [1.0, 0.1]}), "not supported"),
            (_ics({0.02: [1.2, 0.5], 0.1: [1.0, 1.5]}), "inconclusive"),  # a layer's CI straddles 0.5
            # a marked reduction, but the plain net never trained: its seeds are dropped, nothing to judge
            (_ics({0.02: [0.1, 0.1], 0.1: [0.1, 0.1]}, acc_none=0.1), "inconclusive")],
    "C02": [(_smooth(0.3, 0.2, spread=5), "supported"),
            (_smooth(3.0, 0.2, spread=5), "not supported"),  # only the beta half fails
            (_smooth(0.3, 1.0, spread=50), "inconclusive")],
    "C03": [(_c03([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.01, 0.1, 0.1, 0.01, 0.1, 0.1]), "supported"),
            (_c03([1.0, 1.0, 1.0, 1.0, 1.0, 0.1], [0.01, 0.1, 0.1, 0.01, 0.1, 0.1]), "inconclusive"),  # one tie in six
            (_c03([0.01, 0.01, 0.1, 0.01, 0.01, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), "not supported"),
            (_c03([1.0, 0.01, 0.1, 1.0, 0.01, 1.0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.1]), "inconclusive"),
            # the same grid step in four seeds is not an exact result: a sign test gives p = 0.125
            (_c03([1.0, 1.0, 1.0, 1.0], [0.1, 0.1, 0.1, 0.1]), "inconclusive")],
    "C09": [(_c09([0.6, 0.62, 0.61, 0.6], [0.89, 0.9, 0.88, 0.9]), "supported"),
            (_c09([0.9, 0.89, 0.9, 0.9], [0.6, 0.62, 0.6, 0.61]), "not supported"),
            (_c09([0.89, 0.6, 0.9, 0.6], [0.88, 0.88, 0.88, 0.88]), "inconclusive"),
            # BN falls more than GN but not more than LN: one part fails
            (_c09([0.6, 0.62, 0.61, 0.6], [0.89, 0.9, 0.88, 0.9], ln_small=[0.5, 0.5, 0.52, 0.49]), "not supported"),
            (_c09([0.6, 0.62, 0.61, 0.6], [0.89, 0.9, 0.88, 0.9], ln_small=[0.89, 0.9, 0.88, 0.9]), "supported")],
    "C13": [(_c13([0.5, 0.55, 0.52, 0.5], [0.1, 0.12, 0.1, 0.11]), "supported"),
            (_c13([0.1, 0.12, 0.1, 0.11], [0.5, 0.55, 0.52, 0.5]), "not supported"),
            (_c13([0.1, 0.5, 0.1, 0.5], [0.2, 0.22, 0.3, 0.3]), "inconclusive"),
            (_c13([0.5, 0.55, 0.52, 0.5], [0.1, 0.12, 0.1, 0.11], ln_low=0.6), "inconclusive"),
            (_c13([0.5, 0.55, 0.52, 0.5], [0.1, 0.12, 0.1, 0.11], ln_low=0.3), "supported"),
            # interpolated at 0.15, BN's gap is ~0.15 < LN's 0.3 (the first evaluation below 0.15 would say 0.5)
            (_c13_interp(-0.2), "supported")],
    "C30": [(_c30([2.3, 2.3, 2.3, 2.3], [0.8, 0.82, 0.79, 0.8]), "supported"),
            (_c30([0.8, 0.82, 0.8, 0.81], [2.3, 2.3, 2.3, 2.3]), "not supported"),
            # training stalls, but the gradient does not vanish: one part fails
            (_c30([2.3, 2.3, 2.3, 2.3], [0.8, 0.82, 0.79, 0.8], grad0=0.1), "not supported"),
            (_c30([2.3, 0.8, 2.3, 0.9], [0.8, 0.82, 0.79, 0.8]), "inconclusive")],
    "C33": [(_c33([0.9, 0.92, 0.91, 0.9], [0.91, 0.9, 0.9, 0.91]), "supported"),
            (_c33([0.6, 0.62, 0.6, 0.61], [0.91, 0.9, 0.9, 0.91]), "not supported"),
            (_c33([0.9, 0.82, 0.93, 0.85], [0.91, 0.9, 0.9, 0.91]), "inconclusive")],
}

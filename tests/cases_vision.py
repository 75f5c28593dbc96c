"""Synthetic records for the verdicts of normlab.experiments.vision: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import rec, train_result


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


def _c09(bn_small, gn_small):
    """Accuracy at per-worker 32 is 0.9 for both; at 2 it is bn_small / gn_small (per seed)."""
    out = []
    for norm, small in (("batchnorm", bn_small), ("groupnorm", gn_small)):
        for s, a in enumerate(small):
            for b, acc in ((32, 0.9), (2, a)):
                out.append({**rec(f"{norm} {b}", s, train_result({"test_acc": acc})),
                            "config": {"norm": norm, "per_worker": b}})
    return out


def _c13(ln_gaps, bn_gaps, ln_low=0.1):
    """Each run evaluated at train loss 1.0 and at its lowest (0.1; LN's is ln_low)."""
    out = []
    for name, gaps in (("layernorm", ln_gaps), ("batchnorm", bn_gaps)):
        for s, gap in enumerate(gaps):
            low = ln_low if name == "layernorm" else 0.1
            evals = [{"train_loss": 1.0, "test_loss": 1.1}, {"train_loss": low, "test_loss": low + gap}]
            out.append(rec(name, s, train_result(evals=evals)))
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
}

"""Synthetic records for the verdicts of normlab.experiments.stability: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import lm_rec


def _c26(sens_none, sens_qk):
    out = []
    lrs = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    for qk, sens in (("none", sens_none), ("layernorm", sens_qk)):
        for seed, extra in enumerate(sens):
            for i, lr in enumerate(lrs):
                loss = 2.0 + (extra * len(lrs) if i == len(lrs) - 1 else 0.0)  # the mean excess equals `extra`
                out.append(lm_rec(f"qk-{qk}-lr{lr:g}", seed, loss, first=10.0,
                               instruments=[{"attn_logits": {"blocks.0.attn": 5.0}}]))
    return out


def _c31(pre_ok, none_ok):
    out = []
    for prefix, ok in (("pre-LN", pre_ok), ("no norm", none_ok)):
        for seed, largest in enumerate(ok):
            for sc in (1.0, 4.0, 16.0, 64.0):
                out.append(lm_rec(f"{prefix} x{sc:g}", seed, 2.0 if sc <= largest else 4.0))
    return out


def _c34(dyt, deepnorm):
    return [lm_rec("pre-LN", s, 2.0 + 0.005 * s) for s in range(2)] + \
        [lm_rec("DyT (pre placement)", s, dyt) for s in range(2)] + [lm_rec("DeepNorm post-LN", s, deepnorm) for s in range(2)]


CASES = {
    "C26": [(_c26([0.5, 0.6], [0.05, 0.06]), "supported"), (_c26([0.05, 0.06], [0.5, 0.6]), "not supported"),
            (_c26([0.1, 0.6], [0.2, 0.21]), "inconclusive")],
    "C31": [(_c31([64.0, 64.0], [1.0, 4.0]), "supported"), (_c31([1.0, 1.0], [16.0, 64.0]), "not supported"),
            (_c31([4.0, 64.0], [4.0, 4.0]), "inconclusive")],
    "C34": [(_c34(2.01, 2.02), "supported"), (_c34(2.5, 2.0), "not supported")],
}

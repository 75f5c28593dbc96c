"""Synthetic records for the verdicts of normlab.experiments.claims: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import groups, profile, rec


def _c18(ln, rms):
    return groups({"layernorm": ln, "rmsnorm": rms})


def _c19(ratios_per_seed):
    return [rec("pre-LN LayerNorm", i, {"instruments": [{"norm_inputs": {f"blocks.{k}.norms.ln_1": v
                                                                          for k, v in enumerate(rs)}}]})
            for i, rs in enumerate(ratios_per_seed)]


def _stream_recs(groups, init=1.0):
    """``groups``: name -> per-seed last/first ratio after training (at init the ratio is ``init``)."""
    out = []
    for name, ratios in groups.items():
        for i, r in enumerate(ratios):
            out.append(rec(name, i, {"instruments": [{"residual_rms": {"rms": [0.1] + profile(init)}},
                                                     {"residual_rms": {"rms": [0.1] + profile(r)}}]}))
    return out


def _c20(plain, clip, big_eps, ln_plain=None, ln_clip=None):
    """Per-seed shares kept: with eps 1e-5 (``plain``), clipped at 10 (``clip``), with eps 1e3 (``big_eps``)."""
    out = []
    for s in range(len(plain)):
        kept = {}
        for norm in ("rmsnorm", "layernorm"):
            p = (ln_plain or plain)[s] if norm == "layernorm" else plain[s]
            c = (ln_clip or clip)[s] if norm == "layernorm" else clip[s]
            for eps in (1e-5, 1.0, 1e3):
                kept[f"{norm} eps={eps:g} clip=none"] = p if eps == 1e-5 else big_eps[s] if eps == 1e3 else p
                kept[f"{norm} eps={eps:g} clip=10"] = c
        out.append(rec("outlier 1e3", s, {"kept": kept}))
    return out


def _c32(mup_slopes, sp_slope=0.5):
    out = []
    for seed, mup in enumerate(mup_slopes):
        for param, slope in (("muP", mup), ("standard", sp_slope + 0.01 * seed)):
            for w in (32, 64, 128):
                r = rec(f"{param} d={w}", seed, {"logit_rms": 2.0 * (w / 32) ** slope, "stream_rms": 1.0})
                r["config"] = {"width": w}
                out.append(r)
    return out


LN = [2.50, 2.53, 2.48, 2.55]  # LayerNorm's final loss per seed (seed-to-seed spread 0.07)

CASES = {
    # paired: RMSNorm - LayerNorm per seed; tolerance 0.02
    "C18": [(_c18(LN, [x + d for x, d in zip(LN, (0.010, 0.012, 0.008, 0.011))]), "supported"),
            (_c18(LN, [x + d for x, d in zip(LN, (0.10, 0.12, 0.09, 0.11))]), "not supported"),
            (_c18(LN, [x + d for x, d in zip(LN, (0.00, 0.04, -0.01, 0.05))]), "inconclusive"),
            # a shared seed effect must not count as noise: unpaired, this spread would straddle the tolerance
            (_c18(LN, [x + 0.015 for x in LN]), "supported")],
    "C19": [(_c19([[0.02, 0.05], [0.03, 0.04], [0.04, 0.05], [0.03, 0.06]]), "supported"),
            (_c19([[0.6, 0.7], [0.65, 0.5], [0.5, 0.55], [0.7, 0.6]]), "not supported"),
            (_c19([[0.05, 0.3], [0.05, 0.1], [0.3, 0.4], [0.1, 0.2]]), "inconclusive")],
    "C20": [(_c20([0.01, 0.012, 0.011, 0.01], [0.85, 0.84, 0.86, 0.85], [0.45, 0.44, 0.46, 0.45]), "supported"),
            # the outlier does not crush: not supported whatever the remedies do
            (_c20([0.8, 0.82, 0.81, 0.8], [0.85, 0.84, 0.86, 0.85], [0.9, 0.9, 0.9, 0.9]), "not supported"),
            # only LayerNorm is not crushed: one half of the first part fails
            (_c20([0.01, 0.012, 0.011, 0.01], [0.85, 0.84, 0.86, 0.85], [0.45, 0.44, 0.46, 0.45],
                  ln_plain=[0.8, 0.82, 0.81, 0.8]), "not supported"),
            # crushed, but neither clipping nor eps rescues (both remedies fail)
            (_c20([0.01, 0.012, 0.011, 0.01], [0.2, 0.21, 0.2, 0.22], [0.3, 0.3, 0.31, 0.3]), "not supported"),
            # clipping fails but a larger eps rescues: "or", not "and"
            (_c20([0.01, 0.012, 0.011, 0.01], [0.2, 0.21, 0.2, 0.22], [0.7, 0.71, 0.7, 0.72]), "supported"),
            # clipping rescues RMSNorm but not LayerNorm, and eps does not: the clip part needs both norms
            (_c20([0.01, 0.012, 0.011, 0.01], [0.85, 0.84, 0.86, 0.85], [0.3, 0.3, 0.31, 0.3],
                  ln_clip=[0.2, 0.21, 0.2, 0.22]), "not supported"),
            (_c20([0.1, 0.3, 0.15, 0.25], [0.85, 0.84, 0.86, 0.85], [0.45, 0.44, 0.46, 0.45]), "inconclusive")],
    # paired by seed; min ratio 1.2 (log 0.18)
    "C23": [(_stream_recs({"pre": [3.0, 3.2, 2.9, 3.1], "post": [1.0, 1.05, 1.02, 1.0]}), "supported"),
            (_stream_recs({"pre": [1.0, 1.05, 1.1, 1.0], "post": [3.0, 3.2, 2.9, 3.1]}), "not supported"),
            (_stream_recs({"pre": [1.5, 3.0, 1.1, 2.0], "post": [1.4, 1.45, 1.2, 1.3]}), "inconclusive")],
    # min ratio 1.5 (log 0.41)
    "C25": [(_stream_recs({"none": [30, 35, 28, 40], "pre": [2, 2.2, 2.1, 2.0]}), "supported"),
            (_stream_recs({"none": [1.0, 1.1, 1.05, 1.0], "pre": [2, 2.2, 2.1, 2.0]}), "not supported"),
            (_stream_recs({"none": [2.0, 9.0, 2.5, 6.0], "pre": [2, 2.2, 2.1, 2.0]}), "inconclusive")],
    # mixed against the better pure model (lower mean), paired; min effect 0.01
    "C27": [(groups({"mixed pre/post": [2.5, 2.51, 2.6, 2.55], "all pre": [2.0, 2.01, 2.05, 2.02],
                     "all post": [2.2, 2.2, 2.25, 2.2]}), "supported"),
            (groups({"mixed pre/post": [1.8, 1.81, 1.85, 1.83], "all pre": [2.0, 2.01, 2.05, 2.02],
                     "all post": [2.2, 2.2, 2.25, 2.2]}), "not supported"),
            # worse than all-post but not than all-pre, the better one: not supported
            (groups({"mixed pre/post": [2.0, 2.0, 2.04, 2.01], "all pre": [2.0, 2.01, 2.05, 2.02],
                     "all post": [2.2, 2.2, 2.25, 2.2]}), "not supported"),
            (groups({"mixed pre/post": [1.9, 2.2, 2.0, 2.3], "all pre": [2.0, 2.01, 2.05, 2.02],
                     "all post": [2.2, 2.2, 2.25, 2.2]}), "inconclusive")],
    # muP's per-seed slope within +-0.25
    "C32": [(_c32([0.0, 0.03, -0.02, 0.01]), "supported"), (_c32([0.8, 0.85, 0.9, 0.82]), "not supported"),
            (_c32([0.1, 0.3, 0.15, 0.35]), "inconclusive"), (_c32([0.2, 0.4]), "inconclusive")],
}

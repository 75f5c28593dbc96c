"""Synthetic records for the verdicts of normlab.experiments.transformer: claim -> [(records, expected status)]."""

from __future__ import annotations

from cases_common import groups, profile, rec


def _c18(ln, rms):
    return [rec("layernorm", i, {"status": "ok", "final": {"val_loss": v}}) for i, v in enumerate(ln)] + \
           [rec("rmsnorm", i, {"status": "ok", "final": {"val_loss": v}}) for i, v in enumerate(rms)]


def _c19(ratios_per_seed):
    return [rec("pre-LN LayerNorm", i, {"instruments": [{"norm_inputs": {f"blocks.{k}.norms.ln_1": v
                                                                          for k, v in enumerate(rs)}}]})
            for i, rs in enumerate(ratios_per_seed)]


def _stream_recs(groups):
    out = []
    for name, ratios in groups.items():
        for i, r in enumerate(ratios):
            rms = [0.1] + profile(r)
            out.append(rec(name, i, {"instruments": [{"residual_rms": {"rms": rms}}] * 2}))
    return out


def _c20(kept_plain, kept_clip, kept_eps):
    kept = {}
    for norm in ("rmsnorm", "layernorm"):
        for eps in (1e-5, 1.0, 1e3):
            kept[f"{norm} eps={eps:g} clip=none"] = kept_plain if eps == 1e-5 else kept_eps
            kept[f"{norm} eps={eps:g} clip=10"] = kept_clip
    return [rec("outlier 1e3", s, {"kept": kept}) for s in range(2)]


def _c32(mup_slope, sp_slope, jitter=0.0):
    out = []
    for seed in range(2):
        for param, slope in (("muP", mup_slope + jitter * seed), ("standard", sp_slope)):
            for w in (32, 64, 128):
                r = rec(f"{param} d={w}", seed, {"logit_rms": 2.0 * (w / 32) ** slope, "stream_rms": 1.0})
                r["config"] = {"width": w}
                out.append(r)
    return out


CASES = {
    "C18": [(_c18([1.50, 1.51], [1.505, 1.512]), "supported"), (_c18([1.50, 1.51], [1.70, 1.71]), "not supported")],
    "C19": [(_c19([[0.02, 0.05], [0.03, 0.04]]), "supported"), (_c19([[0.6, 0.7], [0.65, 0.5]]), "not supported"),
            (_c19([[0.05, 0.3], [0.05, 0.1]]), "inconclusive")],
    "C20": [(_c20(0.01, 0.9, 0.01), "supported"), (_c20(0.8, 0.9, 0.8), "not supported")],
    "C23": [(_stream_recs({"pre": [3.0, 3.2], "post": [1.0, 1.05]}), "supported"),
            (_stream_recs({"pre": [1.0, 1.05], "post": [3.0, 3.2]}), "not supported"),
            (_stream_recs({"pre": [1.5, 3.0], "post": [1.4, 1.45]}), "inconclusive")],
    "C25": [(_stream_recs({"none": [30, 35], "pre": [2, 2.2]}), "supported"),
            (_stream_recs({"none": [1.0, 1.1], "pre": [2, 2.2]}), "not supported"),
            (_stream_recs({"none": [2.0, 9.0], "pre": [2, 2.2]}), "inconclusive")],
    "C27": [(groups({"mixed pre/post": [2.5, 2.51], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}), "supported"),
            (groups({"mixed pre/post": [1.8, 1.81], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}),
             "not supported"),
            (groups({"mixed pre/post": [1.9, 2.2], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}),
             "inconclusive")],
    "C32": [(_c32(0.0, 0.5), "supported"), (_c32(0.8, 0.9), "not supported"), (_c32(0.2, 0.5, jitter=0.2), "inconclusive")],
}

"""C28: Statistics belong in float32 even for bf16/fp16 activations.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, exact, fmt, mean, threshold


INPUTS = {"ordinary N(0,1)": (0.0, 1.0), "mean 100, std 1": (100.0, 1.0), "mean 1e4, std 100": (1e4, 100.0)}


def _tree_sum(x, dtype):
    """Sum of the last dim by pairwise halving, every add rounded to ``dtype`` (a low-precision tree kernel)."""
    import torch

    x = x.to(dtype)
    while x.shape[-1] > 1:
        if x.shape[-1] % 2:
            x = torch.cat([x, torch.zeros_like(x[..., :1])], -1)
        x = x[..., 0::2] + x[..., 1::2]
    return x[..., 0]


def _seq_sum(x, dtype):
    """Sum of the last dim accumulated left to right in ``dtype`` (a naive loop kernel)."""
    acc = x[..., 0].to(dtype)
    for j in range(1, x.shape[-1]):
        acc = acc + x[..., j].to(dtype)
    return acc


def _stats_by(method: str, x, dtype):
    """(mean, var) of the rows of the low-precision ``x`` (returned in float64) by ``method``."""
    d = x.shape[-1]
    if method in ("tree", "sequential"):
        total = _tree_sum if method == "tree" else _seq_sum
        m = (total(x, dtype) / d).to(dtype)
        var = total((x - m[:, None]).to(dtype).square(), dtype) / d
        return m.double(), var.to(dtype).double()
    xf = x.float()
    if method == "naive fp32":  # one pass: E[x^2] - E[x]^2
        m = xf.mean(-1)
        return m.double(), (xf.square().mean(-1) - m.square()).double()
    from ...functional import moments

    m, v = moments(x, (-1,))  # normlab: float32, corrected two-pass
    return m[:, 0].double(), v[:, 0].double()


METHODS = ("fp32 (normlab)", "naive fp32", "tree", "sequential")


def run(config: dict, seed: int) -> dict:
    import torch

    rows, d, eps = 64, 1024, 1e-5
    g = torch.Generator().manual_seed(seed)
    out = {}
    for dtype_name in ("bfloat16", "float16"):
        dtype = getattr(torch, dtype_name)
        for label, (mu, sd) in INPUTS.items():
            x = (torch.randn(rows, d, generator=g, dtype=torch.float64) * sd + mu).to(dtype)
            x64 = x.double()
            m0, v0 = x64.mean(-1), x64.var(-1, unbiased=False)
            ref = (x64 - m0[:, None]) / (v0[:, None] + eps).sqrt()
            rms_ref = x64 / (x64.square().mean(-1, keepdim=True) + eps).sqrt()
            res = {}
            for method in METHODS:
                m, v = _stats_by("fp32" if method.startswith("fp32") else method, x, dtype)
                y = (x64 - m[:, None]) / (v.clamp_min(0)[:, None] + eps).sqrt()
                err = (y - ref).abs().max().item()
                res[method] = err if math.isfinite(err) else float("inf")
            # RMSNorm: the mean square in float32 vs a low-precision tree
            ms32 = x.float().square().mean(-1).double()
            ms_lo = (_tree_sum(x.square(), dtype) / d).to(dtype).double()
            rms = {"fp32 (normlab)": ms32, "tree": ms_lo}
            res["rmsnorm"] = {k: (x64 / (v[:, None] + eps).sqrt() - rms_ref).abs().max().item()
                              for k, v in rms.items()}
            res["output_rounding"] = (ref.to(dtype).double() - ref).abs().max().item()
            out[f"{dtype_name} | {label}"] = res
    return {"errors": out}


FACTOR = 10.0  # low-precision statistics must be worse than float32's by more than this factor

MATERIAL = 0.01  # ... and their error must reach this (normalized units; bf16's own output rounding ~0.01)


def _part(case: str, tree: list[float], fp32: list[float]) -> Verdict:
    """One large-mean case: per draw, log10(low-precision tree error / float32 error), above log10(10)."""
    what = f"{case}: log10(low-precision (tree) stats error / float32 stats error), per draw"
    finite = [math.isfinite(t) for t in tree]
    if tree and not any(finite):  # the fp16 sum overflowed (max 65504): the statistics are not numbers at all
        rule = "the low-precision sum overflowed in every draw: its error is infinite, fp32's finite (supported)"
        status = "supported" if all(math.isfinite(f) for f in fp32) else "inconclusive"
        return Verdict(status, f"{what}: overflow (inf) in all {len(tree)} draws", rule, {"overflow": len(tree)},
                       key_number="inf (overflow)", tests=[exact(math.inf, what=what, status=status, rule=rule,
                                                                 n=len(tree))])
    if not all(finite):
        rule = "the low-precision sum overflowed in some draws only: no interval (inconclusive)"
        return Verdict("inconclusive", f"{what}: overflow in {finite.count(False)} of {len(tree)} draws", rule,
                       key_number="partial overflow", tests=[exact(math.inf, what=what, status="inconclusive",
                                                                   rule=rule, n=len(tree))])
    return threshold([math.log10(max(t, 1e-12) / max(f, 1e-12)) for t, f in zip(tree, fp32)], what=what,
                     above=math.log10(FACTOR))


def verdict(records) -> Verdict:
    per_case: dict[str, dict[str, list[float]]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        for case, res in r["result"]["errors"].items():
            for k in (*METHODS, "output_rounding"):  # float(): records store inf as the string "inf"
                per_case.setdefault(case, {}).setdefault(k, []).append(float(res[k]))
    offset = [c for c in per_case if "N(0,1)" not in c]
    parts = {f"{c} vs fp32": _part(c, per_case[c]["tree"], per_case[c]["fp32 (normlab)"]) for c in offset}
    finite = {c: mean(per_case[c]["tree"]) for c in offset if all(map(math.isfinite, per_case[c]["tree"]))}
    if finite:  # the low-precision error must matter, not only be larger: the worst finite case, above 0.01
        worst = max(finite, key=finite.get)
        parts["material"] = threshold(per_case[worst]["tree"], above=MATERIAL,
                                      what=f"{worst}: low-precision (tree) stats error, per draw")
    if not parts:
        return Verdict("inconclusive", "no records", "needs the precision runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the precision runs")])
    lines = [f"{c}: stats in low precision (tree) {fmt(mean(v['tree']))}, (sequential) {fmt(mean(v['sequential']))}; "
             f"fp32 {fmt(mean(v['fp32 (normlab)']))}; naive E[x^2]-E[x]^2 in fp32 {fmt(mean(v['naive fp32']))}; "
             f"casting the exact output {fmt(mean(v['output_rounding']))}" for c, v in per_case.items()]
    key = "bfloat16 | mean 1e4, std 100"
    v = combine_verdicts(parts, key_number=(
        f"bf16, mean 1e4: log10(low-precision / fp32 error) {parts[key + ' vs fp32'].key_number}"
        if key + " vs fp32" in parts else None))
    v.summary = ("max |error| of the normalized output caused by the statistics (normalized units; inf: the fp16 "
                 "sum overflowed its maximum 65504), mean over draws: " + "; ".join(lines) + ". Judged: " + v.summary)
    return v


def plot(records, verdict, prefix):
    import numpy as np

    plt = pyplot()
    res = records[0]["result"]["errors"]
    cases = list(res)
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = np.arange(len(cases))
    width = 0.2
    for i, method in enumerate(METHODS):
        vals = [min(max(float(res[c][method]), 1e-12), 1e2) for c in cases]  # inf (fp16 overflow) drawn at 1e2
        ax.bar(xs + (i - 1.5) * width, vals, width, label=f"LayerNorm stats: {method}", color=f"C{i}")
        for x, c in zip(xs, cases):
            if not math.isfinite(float(res[c][method])):
                ax.text(x + (i - 1.5) * width, 1e2, "inf", ha="center", va="bottom", fontsize=6)
    ax.scatter(xs, [max(res[c]["output_rounding"], 1e-12) for c in cases], color="k", marker="_", s=400,
               label="rounding the exact output to the dtype", zorder=3)
    ax.set_yscale("log")
    ax.set_xticks(xs, [c.replace(" | ", "\n") for c in cases], fontsize=7)
    ax.set_ylabel("max |error| vs float64 (normalized units)")
    ax.set_title("Error caused by the statistics, 64 rows x 1024 features (seed 0; inf = fp16 sum overflow)",
                 fontsize=9)
    ax.set_ylim(1e-8, 1e3)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    return [save_fig(fig, prefix + "-precision.png")]


SPEC = experiment(
    claim="C28", title="Statistics belong in float32 even for bf16/fp16 activations",
    statement="Computing LayerNorm/RMSNorm statistics in bf16 or fp16 loses accuracy, most for inputs with a "
              "large mean; computing them in float32 (and not as E[x^2]-E[x]^2) does not.",
    setup="64 rows x 1024 features drawn in float64 and rounded to bf16/fp16 (ordinary N(0,1), mean 100 std 1, "
          "mean 1e4 std 100); the statistics computed four ways: float32 two-pass (normlab), one-pass "
          "E[x^2]-E[x]^2 in float32, and in the low dtype by a pairwise tree or a left-to-right loop (each add "
          "rounded). The error is that of the normalized output (computed in float64 from those statistics) "
          "against the float64 reference on the same rounded inputs; 4 (quick) or 6 (full) random draws (seeds). "
          "Judged, for each large-mean input in bf16 and fp16: log10(low-precision tree error / float32 error) by "
          "a 95% t interval over draws, above 1 (more than 10x; an fp16 sum that overflows in every draw counts as "
          "an infinite error); and the worst finite case's low-precision error above 0.01 (it matters).",
    grid=lambda mode: [("precision", {})], seeds={"quick": 4, "full": 6},
    run=run, verdict=verdict, plot=plot,
)

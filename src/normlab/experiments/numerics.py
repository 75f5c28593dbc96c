"""Numerics claims: the cost of RMSNorm vs LayerNorm (C17), low-precision statistics (C28), eps (C29)."""

from __future__ import annotations

import math
import statistics

from .plots import pyplot, save_fig
from .registry import register
from .spec import Verdict, compare, experiment, fmt, mean

# ------------------------------------------------------------------------ C17
C17_SHAPES = {"quick": [(4096, 768)], "full": [(4096, 768), (2048, 4096)]}
C17_ROUNDS = {"quick": 5, "full": 9}
IMPLS = ("torch", "compiled torch", "normlab")
#: the two sources: "about 30% cheaper" (a saving of ~0.30) and "7-15% faster" (LN/RMS time 1.07-1.15)
SOURCES = {"~30% cheaper": (0.25, 0.35), "7-15% faster": (1 - 1 / 1.07, 1 - 1 / 1.15)}


def _c17_grid(mode):
    return [(f"{n}x{d}", {"shape": [n, d], "rounds": C17_ROUNDS[mode]}) for n, d in C17_SHAPES[mode]]


def _pair(impl: str, d: int):
    import torch

    from .. import LayerNorm, RMSNorm

    if impl == "normlab":  # whatever path normlab's layers take (fast paths included once they exist)
        return LayerNorm(d), RMSNorm(d)
    ln, rms = torch.nn.LayerNorm(d), torch.nn.RMSNorm(d)
    if impl == "compiled torch":
        return torch.compile(ln), torch.compile(rms)
    return ln, rms


def timing_run(config: dict, seed: int) -> dict:
    """Per round and pass, the median time of LayerNorm and RMSNorm for each implementation (ms)."""
    import torch

    from ..bench import _median_ms, _runner

    n, d = config["shape"]
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    pairs = {impl: _pair(impl, d) for impl in IMPLS}
    out = {impl: {p: {"layernorm": [], "rmsnorm": []} for p in ("fwd", "fwd+bwd")} for impl in IMPLS}
    for _ in range(config["rounds"]):  # rounds interleave the implementations, so drift hits all of them
        for impl, (ln, rms) in pairs.items():
            for passes, backward in (("fwd", False), ("fwd+bwd", True)):
                for name, layer in (("layernorm", ln), ("rmsnorm", rms)):
                    out[impl][passes][name].append(_median_ms(_runner(layer, x, backward), 7, 2)[0])
    return {"times_ms": out, "threads": torch.get_num_threads(), "device": "cpu"}


def _saving(times: dict) -> float:
    """1 - RMSNorm time / LayerNorm time, from the medians over rounds."""
    return 1 - statistics.median(times["rmsnorm"]) / statistics.median(times["layernorm"])


def _closest_source(s: float) -> str:
    if s <= 0:
        return "neither (RMSNorm was not faster)"
    dist = {k: 0.0 if lo <= s <= hi or hi <= s <= lo else min(abs(s - lo), abs(s - hi))
            for k, (lo, hi) in SOURCES.items()}
    return min(dist, key=dist.get)


def _c17_verdict(records) -> Verdict:
    judged, lines, numbers = [], [], {}
    for r in records:
        t = r["result"]["times_ms"]
        for impl in IMPLS:
            for passes in ("fwd", "fwd+bwd"):
                s = _saving(t[impl][passes])
                numbers[f"{r['name']} {impl} {passes}"] = s
                lines.append(f"{impl} {passes} {r['name']}: RMSNorm saves {100 * s:.0f}%")
                if impl == "compiled torch":
                    judged.append(compare(t[impl][passes]["rmsnorm"], t[impl][passes]["layernorm"],
                                          expect="less", what="time", label_a="RMSNorm", label_b="LayerNorm").status)
    if judged and all(s == "supported" for s in judged):
        status = "supported"
    elif judged and all(s == "not supported" for s in judged):
        status = "not supported"
    else:
        status = "inconclusive"
    fused = [v for k, v in numbers.items() if "compiled torch fwd+bwd" in k]
    s = mean(fused)
    summary = (f"compiled (both layers fused the same way) forward+backward: RMSNorm saves {100 * s:.0f}% -> "
               f"closest to the '{_closest_source(s)}' source on this CPU; " + "; ".join(lines))
    rule = ("judged on torch.compile'd layers (equal implementation effort): supported if RMSNorm's time is "
            "below LayerNorm's by more than the round-to-round range in every shape and pass; not supported if "
            "above in all; otherwise inconclusive. torch's eager pair (fused LN kernel vs unfused RMSNorm) and "
            "normlab's pair are reported, not judged")
    return Verdict(status, summary, rule, numbers, key_number=f"compiled fwd+bwd saving {100 * s:.0f}%")


def _c17_plot(records, verdict, prefix):
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(5.2 * len(records), 3.8), squeeze=False)
    for ax, r in zip(axes[0], records):
        t = r["result"]["times_ms"]
        labels, mids, los, his = [], [], [], []
        for impl in IMPLS:
            for passes in ("fwd", "fwd+bwd"):
                ratios = [a / b for a, b in zip(t[impl][passes]["rmsnorm"], t[impl][passes]["layernorm"])]
                labels.append(f"{impl}\n{passes}")
                mids.append(statistics.median(ratios))
                los.append(min(ratios))
                his.append(max(ratios))
        xs = np.arange(len(labels))
        ax.bar(xs, mids, color=["C0", "C0", "C1", "C1", "C2", "C2"])
        ax.errorbar(xs, mids, yerr=[np.array(mids) - los, np.array(his) - mids], fmt="none", color="k", capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.65, 0.75, color="C3", alpha=0.15, label="'~30% cheaper'")
        ax.axhspan(1 / 1.15, 1 / 1.07, color="C4", alpha=0.15, label="'7-15% faster'")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylabel("RMSNorm time / LayerNorm time (log)")
        ax.set_title(f"{r['name']} float32, CPU (bars: median, whiskers: range over rounds)", fontsize=8)
        ax.legend(fontsize=7)
    return [save_fig(fig, prefix + "-timing.png")]


register(experiment(
    claim="C17", title="RMSNorm is cheaper than LayerNorm (and by how much)",
    statement="RMSNorm costs less than LayerNorm; one source says about 30% less, another 7-15% faster.",
    setup="float32 (tokens, features) inputs on this machine's CPU (one thread per run): torch's LayerNorm vs "
          "RMSNorm, the same two under torch.compile, and normlab's two layers (which pick up normlab's fast "
          "paths automatically); forward without grad and forward+backward; medians of 7 calls, repeated in "
          "interleaved rounds (quick 5, full 9) for the spread. No GPU was measured here.",
    grid=_c17_grid, seeds={"quick": 1, "full": 1}, run=timing_run, verdict=_c17_verdict, plot=_c17_plot,
    paper="Zhang & Sennrich 2019 report 7%-64% speed-ups of RMSNorm over LayerNorm on GPU models.",
))


# ------------------------------------------------------------------------ C28
C28_INPUTS = {"ordinary N(0,1)": (0.0, 1.0), "mean 100, std 1": (100.0, 1.0), "mean 1e4, std 100": (1e4, 100.0)}


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
    from ..functional import moments

    m, v = moments(x, (-1,))  # normlab: float32, corrected two-pass
    return m[:, 0].double(), v[:, 0].double()


METHODS = ("fp32 (normlab)", "naive fp32", "tree", "sequential")


def precision_run(config: dict, seed: int) -> dict:
    import torch

    rows, d, eps = 64, 1024, 1e-5
    g = torch.Generator().manual_seed(seed)
    out = {}
    for dtype_name in ("bfloat16", "float16"):
        dtype = getattr(torch, dtype_name)
        for label, (mu, sd) in C28_INPUTS.items():
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


def _c28_verdict(records) -> Verdict:
    per_case: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for case, res in r["result"]["errors"].items():
            for k in (*METHODS, "output_rounding"):  # float(): records store inf as the string "inf"
                per_case.setdefault(case, {}).setdefault(k, []).append(float(res[k]))
    offset = [c for c in per_case if "N(0,1)" not in c]
    ratios = {c: min(per_case[c]["tree"]) / max(max(per_case[c]["fp32 (normlab)"]), 1e-12) for c in offset}
    worst_low = max(max(v["tree"]) for v in per_case.values())
    if all(x > 10 for x in ratios.values()) and worst_low > 0.01:
        status = "supported"
    elif all(x <= 10 for x in ratios.values()):
        status = "not supported"
    else:
        status = "inconclusive"
    lines = [f"{c}: stats in low precision (tree) {fmt(mean(v['tree']))}, (sequential) {fmt(mean(v['sequential']))}; "
             f"fp32 {fmt(mean(v['fp32 (normlab)']))}; naive E[x^2]-E[x]^2 in fp32 {fmt(mean(v['naive fp32']))}; "
             f"casting the exact output {fmt(mean(v['output_rounding']))}" for c, v in per_case.items()]
    summary = ("max |error| of the normalized output caused by the statistics (normalized units; inf: the fp16 "
               "sum overflowed its maximum 65504): " + "; ".join(lines))
    rule = ("supported if, for every large-mean input in bf16 and fp16, the low-precision (pairwise tree) "
            "statistics' error exceeds the float32 statistics' by more than 10x in every seed, and reaches 0.01 "
            "somewhere; not supported if within 10x everywhere; otherwise inconclusive")
    key = "bfloat16 | mean 1e4, std 100"
    kn = (f"bf16, mean 1e4: {fmt(mean(per_case[key]['tree']))} vs {fmt(mean(per_case[key]['fp32 (normlab)']))} "
          "(low vs fp32 stats)" if key in per_case else "")
    return Verdict(status, summary, rule, {"ratios": ratios}, key_number=kn)


def _c28_plot(records, verdict, prefix):
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


register(experiment(
    claim="C28", title="Statistics belong in float32 even for bf16/fp16 activations",
    statement="Computing LayerNorm/RMSNorm statistics in bf16 or fp16 loses accuracy, most for inputs with a "
              "large mean; computing them in float32 (and not as E[x^2]-E[x]^2) does not.",
    setup="64 rows x 1024 features drawn in float64 and rounded to bf16/fp16 (ordinary N(0,1), mean 100 std 1, "
          "mean 1e4 std 100); the statistics computed four ways: float32 two-pass (normlab), one-pass "
          "E[x^2]-E[x]^2 in float32, and in the low dtype by a pairwise tree or a left-to-right loop (each add "
          "rounded). The error is that of the normalized output (computed in float64 from those statistics) "
          "against the float64 reference on the same rounded inputs; 2 (quick) or 3 (full) random draws.",
    grid=lambda mode: [("precision", {})], seeds={"quick": 2, "full": 3},
    run=precision_run, verdict=_c28_verdict, plot=_c28_plot,
))


# ------------------------------------------------------------------------ C29
def eps_run(config: dict, seed: int) -> dict:
    import torch

    from ..functional import normalize

    d = 64
    g = torch.Generator().manual_seed(seed)
    const = torch.full((4, d), 3.0)
    near = (3.0 + 1e-3 * torch.randn(4, d, generator=g))  # spread below fp16's spacing at 3 (0.002)

    def finite(y):
        return float(torch.isfinite(y).float().mean())

    def lowp(x, eps, dtype):  # a kernel that keeps the statistics and eps in the input's dtype
        x = x.to(dtype)
        m = x.mean(-1, keepdim=True)
        v = (x - m).square().mean(-1, keepdim=True)
        return (x - m) * torch.rsqrt(v + torch.tensor(eps, dtype=dtype))

    out = {
        "eps0_fp32_normlab": finite(normalize(const, (-1,), eps=0.0)),
        "eps0_fp32_torch": finite(torch.nn.functional.layer_norm(const, (d,), eps=0.0)),
        "eps1e-5_fp32": finite(normalize(const, (-1,), eps=1e-5)),
        "eps1e-5_fp32_output_absmax": normalize(const, (-1,), eps=1e-5).abs().max().item(),
        "eps1e-12_in_fp16": float(torch.tensor(1e-12, dtype=torch.float16)),
        "eps1e-12_fp16_stats": finite(lowp(const, 1e-12, torch.float16)),
        "eps1e-5_fp16_stats": finite(lowp(const, 1e-5, torch.float16)),
        "eps1e-12_fp16_input_normlab": finite(normalize(const.half(), (-1,), eps=1e-12)),
    }
    # rounding noise of near-constant rows: how much of it the normalization blows up to unit scale
    nh = near.half()
    for eps in (1e-12, 1e-5, 1e-3):
        y = normalize(nh, (-1,), eps=eps).float()
        out[f"near_const_fp16_output_std_eps{eps:g}"] = y.std().item()
        x = nh.float().requires_grad_(True)
        (grad,) = torch.autograd.grad(normalize(x, (-1,), eps=eps), x, torch.randn(4, d, generator=g))
        out[f"near_const_grad_absmax_eps{eps:g}"] = grad.abs().max().item()
    return out


def _c29_verdict(records) -> Verdict:
    r = records[0]["result"]
    checks = {
        "eps=0 on constant rows gives non-finite output": r["eps0_fp32_normlab"] < 1 and r["eps0_fp32_torch"] < 1,
        "eps=1e-5 gives finite output (= beta) on constant rows": r["eps1e-5_fp32"] == 1
        and r["eps1e-5_fp32_output_absmax"] == 0,
        "eps=1e-12 underflows to 0 in fp16, so fp16 statistics give non-finite output": r["eps1e-12_in_fp16"] == 0
        and r["eps1e-12_fp16_stats"] < 1,
    }
    failed = [k for k, ok in checks.items() if not ok]
    status = "supported" if not failed else "not supported"
    summary = (f"constant rows, finite fraction of the output: eps=0 {r['eps0_fp32_normlab']:.2f} (torch "
               f"{r['eps0_fp32_torch']:.2f}), eps=1e-5 {r['eps1e-5_fp32']:.2f}; eps=1e-12 as fp16 = "
               f"{r['eps1e-12_in_fp16']:g}, fp16 statistics {r['eps1e-12_fp16_stats']:.2f} finite, normlab (float32 "
               f"statistics) on fp16 input {r['eps1e-12_fp16_input_normlab']:.2f}; near-constant fp16 rows (spread "
               f"1e-3): output std {fmt(r['near_const_fp16_output_std_eps1e-12'])} at eps 1e-12 vs "
               f"{fmt(r['near_const_fp16_output_std_eps1e-05'])} at 1e-5 (rounding noise blown up to unit scale), "
               f"max |input grad| {fmt(r['near_const_grad_absmax_eps1e-12'])} vs "
               f"{fmt(r['near_const_grad_absmax_eps1e-05'])}")
    return Verdict(status, summary, "supported if all hold: " + "; ".join(checks) + (
        f" (failed: {', '.join(failed)})" if failed else ""), {k: v for k, v in r.items()},
        key_number=f"eps=0: {1 - r['eps0_fp32_normlab']:.0%} non-finite")


def _c29_plot(records, verdict, prefix):
    plt = pyplot()
    r = records[0]["result"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    cases = {"eps=0, fp32": "eps0_fp32_normlab", "eps=1e-5, fp32": "eps1e-5_fp32",
             "eps=1e-12, fp16 stats": "eps1e-12_fp16_stats", "eps=1e-5, fp16 stats": "eps1e-5_fp16_stats",
             "eps=1e-12, fp16 in,\nfp32 stats": "eps1e-12_fp16_input_normlab"}
    a1.bar(range(len(cases)), [100 * r[k] for k in cases.values()], color="C0")
    a1.set_xticks(range(len(cases)), list(cases), fontsize=7, rotation=20, ha="right")
    a1.set_ylabel("finite outputs (%)")
    a1.set_title("Rows of equal values", fontsize=9)
    eps = [1e-12, 1e-5, 1e-3]
    a2.plot(eps, [r[f"near_const_fp16_output_std_eps{e:g}"] for e in eps], marker="o", label="output std")
    a2.plot(eps, [r[f"near_const_grad_absmax_eps{e:g}"] for e in eps], marker="s", label="max |input gradient|")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("eps")
    a2.set_title("Near-constant fp16 rows (spread 1e-3)", fontsize=9)
    a2.legend(fontsize=8)
    return [save_fig(fig, prefix + "-eps.png")]


register(experiment(
    claim="C29", title="eps guards constant inputs; too small an eps fails in low precision",
    statement="eps prevents division by zero on constant inputs (default about 1e-5); eps=0, or an eps the dtype "
              "cannot represent, breaks.",
    setup="Rows of 64 equal values (3.0) and near-constant rows (spread 1e-3, stored as fp16); LayerNorm "
          "statistics in float32 (normlab, torch) and in fp16 (a kernel keeping everything in the input dtype); "
          "eps 0, 1e-12, 1e-5, 1e-3.",
    grid=lambda mode: [("eps", {})], seeds={"quick": 1, "full": 1}, run=eps_run, verdict=_c29_verdict,
    plot=_c29_plot,
))

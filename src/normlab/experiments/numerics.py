"""Numerics claims: the cost of RMSNorm vs LayerNorm (C17), low-precision statistics (C28), eps (C29)."""

from __future__ import annotations

import math
import statistics
import time

from .plots import pyplot, save_fig
from .registry import register
from .spec import PerMode, Verdict, combine_verdicts, compare, exact, experiment, fmt, mean, threshold
from .stats import Interval, interval

# ------------------------------------------------------------------------ C17
C17_SHAPES = PerMode({"quick": [(4096, 768)], "full": [(4096, 768), (2048, 4096)],
                      "paper": [(4096, 768), (2048, 4096), (16384, 1024)]})
C17_ROUNDS = PerMode({"quick": 12, "full": 20})  # judged rounds, after C17_WARMUP_ROUNDS discarded ones
C17_WARMUP_ROUNDS = 2
C17_CALLS = 7  # calls per timing of a candidate judged pair; a round's time is their median (robust to outliers)
C17_REPORTED_CALLS = 3  # the pair that is only reported (torch's eager RMSNorm is the slow, unfused one)
IMPLS = ("torch", "compiled torch", "normlab")
PASSES = ("fwd", "fwd+bwd")
#: the fair pairs for "which source", both layers fused with equal effort: normlab's own fused C++ kernels when
#: both of its layers took them (the record says which path each took), else torch.compile of torch's two layers
CANDIDATES = ("normlab", "compiled torch")
#: the two sources as savings 1 - t_rms / t_ln: "about 30% cheaper", and "7-15% faster" (t_ln / t_rms 1.07-1.15)
SOURCES = {"~30% cheaper": (0.25, 0.35), "7-15% faster": (1 - 1 / 1.07, 1 - 1 / 1.15)}


def _c17_grid(mode):
    return [(f"{n}x{d}", {"shape": [n, d], "rounds": C17_ROUNDS[mode], "warmup_rounds": C17_WARMUP_ROUNDS,
                          "calls": C17_CALLS, "reported_calls": C17_REPORTED_CALLS}) for n, d in C17_SHAPES[mode]]


def _pair(impl: str, d: int):
    import torch

    from .. import LayerNorm, RMSNorm

    if impl == "normlab":  # whatever path normlab's layers take (fast paths included once they exist)
        return LayerNorm(d), RMSNorm(d)
    ln, rms = torch.nn.LayerNorm(d), torch.nn.RMSNorm(d)
    if impl == "compiled torch":  # a fresh dynamo cache: compiled modules share one code object, and past its
        torch._dynamo.reset()  # recompile limit (8, a worker's earlier runs count) dynamo silently runs eagerly
        return torch.compile(ln), torch.compile(rms)
    return ln, rms


def _call(layer, x, backward: bool):
    """A no-argument function running ``layer`` on ``x``: forward without grad, or forward + backward."""
    import torch

    if not backward:
        def fwd():
            with torch.no_grad():
                return layer(x)
        return fwd
    xg = x.detach().requires_grad_(True)
    inputs = [xg, *(p for p in layer.parameters() if p.requires_grad)]
    grad = torch.randn_like(x)

    def fwd_bwd():
        return torch.autograd.grad(layer(xg), inputs, grad)
    return fwd_bwd


def _paired_ms(first, second, calls: int, cuda: bool = False) -> tuple[float, float]:
    """Median times (ms) of two functions over ``calls`` calls each, called alternately (first, second, first,
    ...), so a disturbance of the machine hits both alike.  On CUDA each call is timed with CUDA events
    (the kernels' time, not the launch's)."""
    import torch

    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(calls):
        for fn, out in ((first, times[0]), (second, times[1])):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                out.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def timing_run(config: dict, seed: int) -> dict:
    """Per round, implementation and pass, the median time (ms) of LayerNorm and of RMSNorm.

    Every function is called twice first (torch.compile compiles there), then ``warmup_rounds`` rounds are
    timed and discarded (kept apart in the record), then ``rounds`` judged rounds.  Inside a round LayerNorm
    and RMSNorm are called alternately (which goes first alternates by round), so drift, disturbances and
    order effects hit both alike and a round's two medians form a pair.
    """
    import torch

    from ..kernels import implementation

    n, d = config["shape"]
    device = config.get("device", "cpu")
    cuda = device.startswith("cuda")
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed)).to(device)
    fns = {}
    paths = {}
    for impl in IMPLS:
        ln, rms = (m.to(device) for m in _pair(impl, d))
        if impl == "normlab":
            paths = {"layernorm": implementation(ln, x), "rmsnorm": implementation(rms, x)}
        for passes in PASSES:
            fns[impl, passes] = {"layernorm": _call(ln, x, passes == "fwd+bwd"),
                                 "rmsnorm": _call(rms, x, passes == "fwd+bwd")}
    for pair in fns.values():
        for fn in pair.values():
            for _ in range(2):
                fn()
    out: dict[str, dict[str, dict[str, list[float]]]]
    warm: dict[str, dict[str, dict[str, list[float]]]]
    out, warm = ({impl: {p: {"layernorm": [], "rmsnorm": []} for p in PASSES} for impl in IMPLS} for _ in range(2))
    for r in range(config["warmup_rounds"] + config["rounds"]):
        keep = out if r >= config["warmup_rounds"] else warm
        for (impl, passes), pair in fns.items():
            a, b = ("layernorm", "rmsnorm") if r % 2 == 0 else ("rmsnorm", "layernorm")
            calls = config["calls"] if impl in CANDIDATES else config["reported_calls"]
            ta, tb = _paired_ms(pair[a], pair[b], calls, cuda)
            keep[impl][passes][a].append(ta)
            keep[impl][passes][b].append(tb)
    return {"times_ms": out, "warmup_times_ms": warm, "threads": torch.get_num_threads(), "device": device,
            "torch": torch.__version__, "normlab_paths": paths}


def judged_impl(result: dict) -> str:
    """normlab's pair when both of its layers ran on its fused kernels, else the torch.compile'd torch pair."""
    paths = result.get("normlab_paths") or {}
    fused = len(paths) == 2 and all(str(p).startswith("cpp:") for p in paths.values())
    return "normlab" if fused else "compiled torch"


def _log_ratios(t: dict) -> list[float]:
    """Per round, log(t_rmsnorm / t_layernorm)."""
    return [math.log(r / ln) for r, ln in zip(t["rmsnorm"], t["layernorm"])]


def _ratio_text(iv) -> str:
    """The interval of the mean log ratio, as a time ratio (exp of estimate and bounds)."""
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{math.exp(iv.estimate):.3f} (no CI)"
    return f"{math.exp(iv.estimate):.3f} [{math.exp(iv.lo):.3f}, {math.exp(iv.hi):.3f}]"


def _which_source(iv) -> str:
    """The source(s) whose saving range the interval's savings (1 - ratio) overlap."""
    lo, hi = 1 - math.exp(iv.hi), 1 - math.exp(iv.lo)  # savings
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undecided (no interval)"
    if hi <= 0:
        return "neither (RMSNorm was not faster)"
    hits = [k for k, (a, b) in SOURCES.items() if lo <= max(a, b) and min(a, b) <= hi]
    if hits:
        return " and ".join(f"'{k}'" for k in hits) + " (the saving's CI overlaps its range)"
    near = min(SOURCES, key=lambda k: min(abs(lo - v) for v in SOURCES[k]) + min(abs(hi - v) for v in SOURCES[k]))
    return f"neither ('{near}' is the closer)"


def _c17_verdict(records) -> Verdict:
    parts, reported = {}, []
    judged_by = []
    for r in records:
        t = r["result"]["times_ms"]
        judged = judged_impl(r["result"])
        judged_by.append(judged)
        for passes in PASSES:
            a = [math.log(x) for x in t[judged][passes]["rmsnorm"]]
            b = [math.log(x) for x in t[judged][passes]["layernorm"]]
            v = compare(a, b, expect="less", paired=True, label_a="log t_RMSNorm", label_b="log t_LayerNorm",
                        what=f"{judged} {passes} {r['name']}, per round")
            iv = Interval(**v.tests[0])
            v.key_number = f"{judged} {passes} {r['name']}: t_RMS/t_LN {_ratio_text(iv)}"
            v.numbers["which_source"] = _which_source(iv)
            parts[f"{judged} {passes} {r['name']}"] = v
            for impl in IMPLS:
                if impl != judged:
                    other = interval(f"{impl} {passes}", [math.log(x) for x in t[impl][passes]["rmsnorm"]],
                                     [math.log(x) for x in t[impl][passes]["layernorm"]], paired=True)
                    reported.append(f"{impl} {passes} {r['name']} {_ratio_text(other)}")
    if not parts:
        return Verdict("inconclusive", "no timing records", "needs the timing runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the timing runs")])
    v = combine_verdicts(parts, key_number="; ".join(p.key_number for p in parts.values()))
    sources = "; ".join(f"{k}: {p.numbers['which_source']}" for k, p in parts.items())
    v.summary = (f"RMSNorm time / LayerNorm time per round (geometric mean, 95% CI, paired by round): "
                 f"{v.key_number}; closest source: {sources}. Reported, not judged (torch's eager pair is a fused "
                 f"LayerNorm kernel vs an unfused RMSNorm): " + "; ".join(reported) + ". Judged parts: " + v.summary)
    v.rule = ("judged on a pair whose two layers are fused with equal effort: normlab's own fused C++ kernels "
              "when both of its layers ran on them (the record names the path each took), else torch.compile of "
              "torch's two layers; every shape and pass: the 95% t interval of mean log(t_RMSNorm / t_LayerNorm) "
              "over rounds (paired: the two are called alternately within a round) must lie wholly below 0 "
              "(supported); wholly above 0: not supported; otherwise inconclusive. " + v.rule)
    v.numbers["judged_pair"] = sorted(set(judged_by))
    main = next((p for k, p in parts.items() if "fwd+bwd" in k), next(iter(parts.values())))
    iv = Interval(**main.tests[0])
    ratio = math.exp(iv.estimate)
    v.versus_paper = (
        "paper: Zhang & Sennrich 2019 report RMSNorm 7%-64% faster than LayerNorm depending on the model (per "
        "table 24.7, 34.0, 11.0, 6.9, 15.1, 40.8, 20.5%), whole-model training times on GPU; here: "
        f"{main.key_number}, i.e. RMSNorm takes {ratio:.2f}x LayerNorm's time (LayerNorm / RMSNorm = "
        f"{1 / ratio:.2f}; the paper's 7%-64% read as LayerNorm / RMSNorm = 1.07-1.64); scale: "
        f"one normalization layer alone, float32 on one CPU thread ({' and '.join(sorted(set(judged_by)))} "
        "pair), not a whole model on a GPU "
        "(in a model the norm is a small share of the step, so a model-level speed-up is smaller than the layer's)")
    return v


def _c17_plot(records, verdict, prefix):
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(5.2 * len(records), 3.8), squeeze=False)
    for ax, r in zip(axes[0], records):
        t = r["result"]["times_ms"]
        labels, mids, los, his = [], [], [], []
        for impl in IMPLS:
            for passes in PASSES:
                iv = interval("", _log_ratios(t[impl][passes]))
                labels.append(f"{impl}\n{passes}")
                mids.append(math.exp(iv.estimate))
                los.append(math.exp(iv.lo) if math.isfinite(iv.lo) else mids[-1])
                his.append(math.exp(iv.hi) if math.isfinite(iv.hi) else mids[-1])
        xs = np.arange(len(labels))
        ax.bar(xs, mids, color=["C0", "C0", "C1", "C1", "C2", "C2"])
        ax.errorbar(xs, mids, yerr=[np.array(mids) - los, np.array(his) - mids], fmt="none", color="k", capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.65, 0.75, color="C3", alpha=0.15, label="'~30% cheaper'")
        ax.axhspan(1 / 1.15, 1 / 1.07, color="C4", alpha=0.15, label="'7-15% faster'")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylabel("RMSNorm time / LayerNorm time (log)")
        ax.set_title(f"{r['name']} float32, CPU (bars: geometric mean over rounds, whiskers: 95% CI)", fontsize=8)
        ax.legend(fontsize=7)
    return [save_fig(fig, prefix + "-timing.png")]


register(experiment(
    claim="C17", title="RMSNorm is cheaper than LayerNorm (and by how much)",
    statement="RMSNorm costs less than LayerNorm; one source says about 30% less, another 7-15% faster.",
    setup="float32 (tokens, features) inputs, 4096x768 (full adds 2048x4096), on this machine's CPU, one thread, "
          "run alone after every other run (no run beside it): torch's LayerNorm vs RMSNorm, the same two under "
          "torch.compile, and normlab's two layers; forward without grad and forward+backward. Each function is "
          f"called twice (compilation), then {C17_WARMUP_ROUNDS} warm-up rounds are timed and discarded, then "
          f"{C17_ROUNDS['quick']} (quick) / {C17_ROUNDS['full']} (full) rounds; in a round LayerNorm and RMSNorm "
          f"are called alternately, {C17_CALLS} calls each for normlab's and the compiled pair "
          f"({C17_REPORTED_CALLS} for torch's eager pair), median per layer; which goes first alternates by round. "
          "Judged: normlab's pair when both layers ran on its fused C++ kernels (equal effort on both), else the "
          "compiled torch pair, per shape and pass, by the 95% t interval of mean log(t_RMSNorm / t_LayerNorm) "
          "over rounds. One seed (the rounds are the replicates). No GPU was measured here.",
    grid=_c17_grid, seeds={"quick": 1, "full": 1}, run=timing_run, verdict=_c17_verdict, plot=_c17_plot,
    exclusive=True,
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


C28_FACTOR = 10.0  # low-precision statistics must be worse than float32's by more than this factor
C28_MATERIAL = 0.01  # ... and their error must reach this (normalized units; bf16's own output rounding ~0.01)


def _c28_part(case: str, tree: list[float], fp32: list[float]) -> Verdict:
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
                     above=math.log10(C28_FACTOR))


def _c28_verdict(records) -> Verdict:
    per_case: dict[str, dict[str, list[float]]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        for case, res in r["result"]["errors"].items():
            for k in (*METHODS, "output_rounding"):  # float(): records store inf as the string "inf"
                per_case.setdefault(case, {}).setdefault(k, []).append(float(res[k]))
    offset = [c for c in per_case if "N(0,1)" not in c]
    parts = {f"{c} vs fp32": _c28_part(c, per_case[c]["tree"], per_case[c]["fp32 (normlab)"]) for c in offset}
    finite = {c: mean(per_case[c]["tree"]) for c in offset if all(map(math.isfinite, per_case[c]["tree"]))}
    if finite:  # the low-precision error must matter, not only be larger: the worst finite case, above 0.01
        worst = max(finite, key=finite.get)
        parts["material"] = threshold(per_case[worst]["tree"], above=C28_MATERIAL,
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
          "against the float64 reference on the same rounded inputs; 4 (quick) or 6 (full) random draws (seeds). "
          "Judged, for each large-mean input in bf16 and fp16: log10(low-precision tree error / float32 error) by "
          "a 95% t interval over draws, above 1 (more than 10x; an fp16 sum that overflows in every draw counts as "
          "an infinite error); and the worst finite case's low-precision error above 0.01 (it matters).",
    grid=lambda mode: [("precision", {})], seeds={"quick": 4, "full": 6},
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


def _exact_part(what: str, values: dict[str, float], status: str, rule: str) -> Verdict:
    """A deterministic check with its measured values as zero-width intervals."""
    text = ", ".join(f"{k} {fmt(x)}" for k, x in values.items())
    return Verdict(status, f"{what}: {text}", rule, dict(values), key_number=text,
                   tests=[exact(x, what=f"{what}: {k}", status=status, rule=rule) for k, x in values.items()])


def _c29_verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "no records", "needs the eps run",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the eps run")])
    r = records[0]["result"]
    zero = [r["eps0_fp32_normlab"], r["eps0_fp32_torch"]]
    small = (r["eps1e-12_in_fp16"] == 0, r["eps1e-12_fp16_stats"] < 1)
    parts = {
        "eps=0 breaks": _exact_part(
            "constant rows, eps=0, float32: finite fraction of the output",
            {"normlab": zero[0], "torch": zero[1]},
            "supported" if max(zero) < 1 else "not supported" if min(zero) == 1 else "inconclusive",
            "supported if both implementations give non-finite outputs; not supported if both stay finite; "
            "inconclusive if they disagree"),
        "eps=1e-5 guards": _exact_part(
            "constant rows, eps=1e-5, float32", {"finite fraction": r["eps1e-5_fp32"],
                                                 "max |output| (beta = 0)": r["eps1e-5_fp32_output_absmax"]},
            "supported" if r["eps1e-5_fp32"] == 1 and r["eps1e-5_fp32_output_absmax"] == 0
            else "not supported" if r["eps1e-5_fp32"] < 1 else "inconclusive",
            "supported if every output is finite and equals beta (0); not supported if any is non-finite; "
            "inconclusive if finite but not beta"),
        "eps=1e-12 too small for fp16": _exact_part(
            "eps=1e-12 in fp16", {"eps as fp16": r["eps1e-12_in_fp16"],
                                  "finite fraction, fp16 statistics": r["eps1e-12_fp16_stats"]},
            "supported" if all(small) else "not supported" if not any(small) else "inconclusive",
            "supported if 1e-12 rounds to 0 in fp16 and fp16 statistics then give non-finite outputs on constant "
            "rows; not supported if neither; inconclusive if only one"),
    }
    v = combine_verdicts(parts, key_number=f"eps=0: {1 - r['eps0_fp32_normlab']:.0%} non-finite; eps=1e-12 as fp16 "
                                           f"= {r['eps1e-12_in_fp16']:g}")
    v.summary += (f"; reported: normlab (float32 statistics) on fp16 input with eps=1e-12: "
                  f"{r['eps1e-12_fp16_input_normlab']:.2f} finite; near-constant fp16 rows (spread 1e-3): output std "
                  f"{fmt(r['near_const_fp16_output_std_eps1e-12'])} at eps 1e-12 vs "
                  f"{fmt(r['near_const_fp16_output_std_eps1e-05'])} at 1e-5 (rounding noise blown up to unit scale), "
                  f"max |input grad| {fmt(r['near_const_grad_absmax_eps1e-12'])} vs "
                  f"{fmt(r['near_const_grad_absmax_eps1e-05'])}")
    return v


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
          "eps 0, 1e-12, 1e-5, 1e-3. Deterministic, one run; judged exactly (each check a zero-width interval): "
          "eps=0 gives non-finite outputs in both implementations, eps=1e-5 gives finite outputs equal to beta, "
          "1e-12 rounds to 0 in fp16 and fp16 statistics then give non-finite outputs.",
    grid=lambda mode: [("eps", {})], seeds={"quick": 1, "full": 1}, run=eps_run, verdict=_c29_verdict,
    plot=_c29_plot,
))

"""C17: RMSNorm is cheaper than LayerNorm (and by how much).

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
import statistics
import time

from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..stats import Interval, interval
from ..verdicts import combine_verdicts, compare, exact


SHAPES = PerMode({"quick": [(4096, 768)], "full": [(4096, 768), (2048, 4096)],
                      "paper": [(4096, 768), (2048, 4096), (16384, 1024)]})

ROUNDS = PerMode({"quick": 12, "full": 20})  # judged rounds, after WARMUP_ROUNDS discarded ones

WARMUP_ROUNDS = 2

CALLS = 7  # calls per timing of a candidate judged pair; a round's time is their median (robust to outliers)

REPORTED_CALLS = 3  # the pair that is only reported (torch's eager RMSNorm is the slow, unfused one)

IMPLS = ("torch", "compiled torch", "normlab")

PASSES = ("fwd", "fwd+bwd")

#: the fair pairs for "which source", both layers fused with equal effort: normlab's own fused C++ kernels when
#: both of its layers took them (the record says which path each took), else torch.compile of torch's two layers
CANDIDATES = ("normlab", "compiled torch")

#: the two sources as savings 1 - t_rms / t_ln: "about 30% cheaper", and "7-15% faster" (t_ln / t_rms 1.07-1.15)
SOURCES = {"~30% cheaper": (0.25, 0.35), "7-15% faster": (1 - 1 / 1.07, 1 - 1 / 1.15)}


def grid(mode):
    return [(f"{n}x{d}", {"shape": [n, d], "rounds": ROUNDS[mode], "warmup_rounds": WARMUP_ROUNDS,
                          "calls": CALLS, "reported_calls": REPORTED_CALLS}) for n, d in SHAPES[mode]]


def _pair(impl: str, d: int):
    import torch

    from ... import LayerNorm, RMSNorm

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


def run(config: dict, seed: int) -> dict:
    """Per round, implementation and pass, the median time (ms) of LayerNorm and of RMSNorm.

    Every function is called twice first (torch.compile compiles there), then ``warmup_rounds`` rounds are
    timed and discarded (kept apart in the record), then ``rounds`` judged rounds.  Inside a round LayerNorm
    and RMSNorm are called alternately (which goes first alternates by round), so drift, disturbances and
    order effects hit both alike and a round's two medians form a pair.
    """
    import torch

    from ...kernels import implementation

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


def verdict(records) -> Verdict:
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


def plot(records, verdict, prefix):
    import numpy as np

    plt = pyplot()
    fig, axes = plt.subplots(1, len(records), figsize=(6.4 * len(records), 4.2), squeeze=False)
    for ax, r in zip(axes[0], records):
        t = r["result"]["times_ms"]
        labels, mids, los, his = [], [], [], []
        for impl in IMPLS:
            for passes in PASSES:
                iv = interval("", _log_ratios(t[impl][passes]))
                labels.append("\n".join([*impl.split(), passes]))  # one word a line: no label overlaps the next
                mids.append(math.exp(iv.estimate))
                los.append(math.exp(iv.lo) if math.isfinite(iv.lo) else mids[-1])
                his.append(math.exp(iv.hi) if math.isfinite(iv.hi) else mids[-1])
        xs = np.arange(len(labels))
        ax.bar(xs, mids, color=["C0", "C0", "C1", "C1", "C2", "C2"])
        ax.errorbar(xs, mids, yerr=[np.array(mids) - los, np.array(his) - mids], fmt="none", color="k", capsize=3)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.65, 0.75, color="C3", alpha=0.15, label="one source: about 30% cheaper")
        ax.axhspan(1 / 1.15, 1 / 1.07, color="C4", alpha=0.15, label="another: 7-15% faster")
        ax.set_yscale("log")
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylabel("RMSNorm time / LayerNorm time (log)")
        ax.set_title(f"{r['name']} float32, CPU (bars: geometric mean over rounds, whiskers: 95% CI)", fontsize=8)
        ax.legend(fontsize=7)
    return [save_fig(fig, prefix + "-timing.png")]


SPEC = experiment(
    claim="C17", title="RMSNorm is cheaper than LayerNorm (and by how much)",
    statement="RMSNorm costs less than LayerNorm; one source says about 30% less, another 7-15% faster.",
    setup="float32 (tokens, features) inputs, 4096x768 (full adds 2048x4096), on this machine's CPU, one thread, "
          "run alone after every other run (no run beside it): torch's LayerNorm vs RMSNorm, the same two under "
          "torch.compile, and normlab's two layers; forward without grad and forward+backward. Each function is "
          f"called twice (compilation), then {WARMUP_ROUNDS} warm-up rounds are timed and discarded, then "
          f"{ROUNDS['quick']} (quick) / {ROUNDS['full']} (full) rounds; in a round LayerNorm and RMSNorm "
          f"are called alternately, {CALLS} calls each for normlab's and the compiled pair "
          f"({REPORTED_CALLS} for torch's eager pair), median per layer; which goes first alternates by round. "
          "Judged: normlab's pair when both layers ran on its fused C++ kernels (equal effort on both), else the "
          "compiled torch pair, per shape and pass, by the 95% t interval of mean log(t_RMSNorm / t_LayerNorm) "
          "over rounds. One seed (the rounds are the replicates). No GPU was measured here.",
    grid=grid, seeds={"quick": 1, "full": 1}, run=run, verdict=verdict, plot=plot,
    exclusive=True,
    paper="Zhang & Sennrich 2019 report 7%-64% speed-ups of RMSNorm over LayerNorm on GPU models.",
)

"""C36: Folding BatchNorm into the preceding conv is exact and speeds up CPU inference.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
import statistics
import time

from ..harness.cnn import build_net
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..stats import interval
from ..verdicts import combine_verdicts, compare, exact, fmt, mean


#: timed models: (label, ConvNet config, batch); quick: one ResNet-style 2-D net; full adds a wider, deeper one and
#: the suite's 1-D MNIST-1D net at evaluation batch size
MODELS = {
    "quick": [("ResNet-style 2-D, 32x32, widths 16/32/64", dict(dim=2, input_size=32, widths=[16, 32, 64],
                                                                blocks_per_stage=1, arch="resnet"), 16)],
    "full": [("ResNet-style 2-D, 32x32, widths 16/32/64", dict(dim=2, input_size=32, widths=[16, 32, 64],
                                                               blocks_per_stage=1, arch="resnet"), 16),
             ("ResNet-style 2-D, 32x32, widths 32/64/128, 2 blocks", dict(dim=2, input_size=32, widths=[32, 64, 128],
                                                                          blocks_per_stage=2, arch="resnet"), 16),
             ("ResNet-style 1-D, MNIST-1D, widths 16/32/64", dict(dim=1, input_size=40, widths=[16, 32, 64],
                                                                 blocks_per_stage=1, arch="resnet"), 256)],
}


#: fresh processes per model (the replicates: a process's memory layout moves a conv's speed by more than the
#: folding saves, so the interval is over processes), judged rounds per process, calls per round
PROCESSES = {"quick": 5, "full": 7}  # odd: a median is one process

ROUNDS = {"quick": 10, "full": 15}

WARMUP_ROUNDS = 2

CALLS = 5  # calls per timing; a round's time is their median

NETS = 4  # nets (random statistics and affine) checked for exactness per dtype

EXACT = {"float64": 1e-12, "float32": 1e-5}  # max |folded - original| / max |original|


def _random_bn_state(net, gen) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so folding has work to do."""
    import torch

    from ...tools.precise import batchnorm_layers

    with torch.no_grad():
        for m in batchnorm_layers(net).values():
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            m.weight.copy_(torch.randn(c, generator=gen) * 0.5 + 1)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.5)


def _net(model: dict, seed: int, dtype):
    import torch

    torch.manual_seed(seed)
    net = build_net({**model, "norm": "batchnorm"}).to(dtype)
    _random_bn_state(net, torch.Generator().manual_seed(seed))
    return net.eval()


def _input(model: dict, batch: int, seed: int, dtype):
    import torch

    shape = (batch, 1, *(model["input_size"],) * model["dim"])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)


def _steady_allocator() -> bool:
    """glibc: keep freed memory in the process (no mmap, no trimming), so a timed call reuses its pages.

    Otherwise every activation can be a fresh mmap whose page faults (slow on a VM) dominate the time, and
    folding, which allocates one output less per BatchNorm, looks far faster than its compute saving.  Set
    only in the child process that times (a worker's allocator stays as it is for the runs after it).
    """
    import ctypes
    import ctypes.util
    import platform

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2 ** 31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _time_fold(config: dict, seed: int, threads: int, steady: bool) -> dict:
    """In a fresh process: interleaved rounds of the original and the folded net (float32, no grad)."""
    import torch

    from ...tools import fold_batchnorm

    torch.set_num_threads(threads)
    steady = _steady_allocator() if steady else False
    model, batch = config["model"], config["batch"]
    net = _net(model, seed, torch.float32)
    folded = fold_batchnorm(net)
    x = _input(model, batch, seed, torch.float32)
    fns = {"original": net, "folded": folded}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            for _ in range(2):
                f(x)
        for r in range(config["warmup_rounds"] + config["rounds"]):
            order = ("original", "folded") if r % 2 == 0 else ("folded", "original")
            per: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(config["calls"]):  # alternate within the round too: a disturbance hits both
                for k in order:
                    t0 = time.perf_counter()
                    fns[k](x)
                    per[k].append((time.perf_counter() - t0) * 1e3)
            if r >= config["warmup_rounds"]:
                for k in fns:
                    times[k].append(statistics.median(per[k]))
    return {**times, "steady_allocator": steady}


def run(config: dict, seed: int) -> dict:
    """Exactness of fold_batchnorm in float64 and float32 on several nets, then CPU inference timing of one net
    before and after folding: interleaved rounds in each of several fresh processes with freed memory reused
    (judged), and in one with the allocator as it is (fresh pages' faults included, reported)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from ...tools import fold_batchnorm

    model = config["model"]
    errors: dict[str, list[float]] = {}
    folded_count = []
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        for k in range(config["nets"]):
            net = _net(model, 1000 * seed + k, dtype)
            x = _input(model, 8, 1000 * seed + k, dtype)
            folded, report = fold_batchnorm(net, report=True)
            with torch.no_grad():
                a, b = net(x), folded(x)
            errors.setdefault(name, []).append(((a - b).abs().max() / a.abs().max()).item())
            folded_count.append([sum(e.folded for e in report), len(report)])
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        processes = [pool.submit(_time_fold, config, seed, threads, True).result()
                     for _ in range(config["processes"])]
        fresh = pool.submit(_time_fold, config, seed, threads, False).result()
    return {"errors": errors, "folded": folded_count, "processes": processes, "fresh_pages": fresh,
            "threads": threads, "torch": torch.__version__}


def grid(mode):
    return [(label, {"model": model, "batch": batch, "nets": NETS, "processes": PROCESSES[mode],
                     "rounds": ROUNDS[mode], "warmup_rounds": WARMUP_ROUNDS, "calls": CALLS})
            for label, model, batch in MODELS[mode]]


def _log_mean(xs) -> float:
    return mean(math.log(x) for x in xs)


def _ratio_ci(iv: dict) -> str:
    if not (math.isfinite(iv["lo"]) and math.isfinite(iv["hi"])):
        return f"{math.exp(iv['estimate']):.3f} (no CI)"
    return f"{math.exp(iv['estimate']):.3f} [{math.exp(iv['lo']):.3f}, {math.exp(iv['hi']):.3f}]"


def verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "no records", "needs the folding runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the folding runs")])
    parts: dict[str, Verdict] = {}
    for dtype, bound in EXACT.items():
        worst = max(max(r["result"]["errors"][dtype]) for r in records)
        every = all(f == n and n > 0 for r in records for f, n in r["result"]["folded"])
        ok = worst <= bound and every
        status = "supported" if ok else "not supported"
        rule = (f"supported if every BatchNorm of the ResNet-style nets was folded and max |folded - original| / "
                f"max |original| <= {bound:g} in {dtype} over {NETS} nets per configuration (random statistics "
                "and affine); otherwise not supported")
        what = f"{dtype}: max relative output difference after folding"
        parts[f"exact in {dtype}"] = Verdict(status, f"{what} {fmt(worst)} (every BN folded: {every})", rule,
                                             {"max_relative_difference": worst, "every_bn_folded": every},
                                             key_number=f"{dtype} {fmt(worst)}",
                                             tests=[exact(worst, what=what, status=status, rule=rule,
                                                          n=len(records) * NETS)])
    ratios = []
    for r in records:
        procs = r["result"]["processes"]
        logs = [_log_mean(p["folded"]) - _log_mean(p["original"]) for p in procs]  # per process
        v = compare([_log_mean(p["folded"]) for p in procs], [_log_mean(p["original"]) for p in procs],
                    expect="less", paired=True, what=f"{r['name']}, per fresh process (mean over its rounds)",
                    label_a="log t_folded", label_b="log t_original")
        iv = v.tests[0]
        est = iv["estimate"]
        text = _ratio_ci(iv)
        slower = sum(x > 0 for x in logs)
        orig = statistics.median(t for p in procs for t in p["original"])
        fold = statistics.median(t for p in procs for t in p["folded"])
        line = (f"{r['name']} (batch {r['config']['batch']}): {text}, i.e. {1 / math.exp(est):.2f}x faster "
                f"(median {fmt(orig)} -> {fmt(fold)} ms; {slower} of {len(logs)} processes slower)")
        fresh = r["result"].get("fresh_pages")
        if fresh:
            fp = interval("", [math.log(x) for x in fresh["folded"]], [math.log(x) for x in fresh["original"]],
                          paired=True).to_dict()
            line += (f"; with fresh pages (allocator as it is, page faults included; reported, one process, per "
                     f"round): {_ratio_ci(fp)} ({fmt(statistics.median(fresh['original']))} -> "
                     f"{fmt(statistics.median(fresh['folded']))} ms)")
        ratios.append(line)
        v.key_number = f"t_folded / t_original {text}"
        v.numbers["per_process_log_ratio"] = logs
        parts[f"faster: {r['name']}"] = v
    v = combine_verdicts(parts)
    v.summary = ("folded / original CPU inference time (geometric mean over fresh processes of each one's "
                 "geometric-mean ratio over its rounds, 95% t interval, paired by process): " + "; ".join(ratios)
                 + ". Exactness: " + "; ".join(p.summary for k, p in parts.items() if k.startswith("exact")))
    v.rule = ("exactness, per dtype (deterministic, zero-width intervals); speed, per timed model: each fresh "
              "process's mean log(t_folded / t_original) over its rounds (the two called alternately within a "
              "round, which goes first alternating by round; freed memory reused, so page faults do not count); the "
              "95% t interval over processes (the replicates: now and then a process runs one of the two nets "
              "20-30% slower throughout, a layout effect the rounds within it cannot average out) wholly below 0: "
              "supported; wholly above: not supported; otherwise inconclusive. " + v.rule)
    v.key_number = "; ".join(ratios[:1]) + "; " + "; ".join(p.key_number for k, p in parts.items()
                                                          if k.startswith("exact"))
    v.versus_paper = ("paper: none gives a number for this; folding is standard in inference toolchains (torch.ao's "
                      "fuse_modules, TensorRT, ONNX Runtime); here: " + "; ".join(ratios) + "; one CPU thread, "
                      "float32, no torch.compile")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, r in enumerate(records):
        for j, p in enumerate(r["result"]["processes"]):
            ax.plot([a / b for a, b in zip(p["folded"], p["original"])], marker=".", color=f"C{i}", alpha=0.7,
                    label=r["name"] if j == 0 else None)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("round (one line per fresh process)")
    ax.set_ylabel("t_folded / t_original (< 1: folding is faster)")
    ax.set_title("CPU inference time after folding BatchNorm into the convs", fontsize=9)
    ax.legend(fontsize=7)
    return [save_fig(fig, prefix + "-timing.png")]


SPEC = experiment(
    claim="C36", title="Folding BatchNorm into the preceding conv is exact and speeds up CPU inference",
    statement="Folding an eval-mode BatchNorm into the convolution before it is exact (to float rounding) and "
              "speeds up CPU inference.",
    setup="normlab's ConvNet in resnet mode (every BatchNorm right after a conv) with random running statistics "
          "and affine parameters, eval mode, folded by normlab.fold_batchnorm. Exactness: 4 nets per timed "
          f"configuration and dtype, max |folded - original| / max |original| <= {EXACT['float64']:g} (float64), "
          f"{EXACT['float32']:g} (float32), every BN folded. Timing (run alone, one thread, float32, no grad): "
          "quick, a 2-D ResNet-style net on 32x32 inputs (widths 16/32/64), batch 16; full adds widths 32/64/128 "
          "with 2 blocks per stage and the suite's 1-D MNIST-1D net at batch 256; each model is timed in "
          f"{PROCESSES['quick']} (quick) / {PROCESSES['full']} (full) fresh processes with freed memory "
          "reused (glibc: no mmap, no trimming): called twice, "
          f"{WARMUP_ROUNDS} warm-up rounds discarded, then {ROUNDS['quick']} / {ROUNDS['full']} rounds "
          f"of {CALLS} calls each, original and folded alternating (which goes first alternates by round), "
          "median per round; once more in one process with the allocator as it is (fresh pages' faults included; "
          "reported). Judged per model on the 95% t interval over processes of the mean log(t_folded / "
          "t_original). One seed (the processes are the replicates).",
    grid=grid, seeds={"quick": 1, "full": 1}, run=run, verdict=verdict, plot=plot,
    exclusive=True,
    paper="No paper number; the folding identity W' = W gamma / sqrt(var + eps), b' = (b - mean) gamma / sqrt(var + "
          "eps) + beta is what inference toolchains apply (torch.ao fuse_modules, TensorRT).",
)

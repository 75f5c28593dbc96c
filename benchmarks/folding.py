"""CPU inference speed of a ResNet-style ConvNet before and after normlab.fold_batchnorm, side by side.

Each round times the original and the folded model alternately (``--calls`` calls each, the order alternating
by round, the median per model), so drift and disturbances of the machine hit both alike; the result is the
geometric mean of the per-round time ratio with its 95% t interval (paired by round), and the max output
difference of the two models.  Freed memory stays in the process (glibc: no mmap, no trimming), as in
``normlab bench``, so the times are those of the computation and its memory traffic; ``--fresh-pages`` keeps the
allocator as it is, where each activation may be a fresh mmap whose page faults dominate (folding then saves
BatchNorm's output allocations too, and looks much faster).

    python benchmarks/folding.py                      # the default ResNet-style nets, one thread
    python benchmarks/folding.py --rounds 30 --threads 2 --batch 32
    python benchmarks/folding.py --fresh-pages        # page faults of fresh allocations included
    python benchmarks/folding.py --processes 5        # each model in 5 fresh processes, CI over processes
    python benchmarks/folding.py --quick              # seconds

Now and then a process runs one of the two nets 20-30% slower throughout (a memory-layout effect that its rounds
cannot average out); ``--processes`` measures across fresh processes so such a process shows as spread.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from normlab.bench import _steady_allocator
from normlab.experiments.stats import interval
from normlab import fold_batchnorm
from normlab.models import ConvNet, ConvNetConfig

MODELS = {
    "resnet2d-16-32-64": dict(dim=2, input_size=32, widths=(16, 32, 64), blocks_per_stage=1),
    "resnet2d-32-64-128x2": dict(dim=2, input_size=32, widths=(32, 64, 128), blocks_per_stage=2),
    "resnet2d-64-128-256x2": dict(dim=2, input_size=32, widths=(64, 128, 256), blocks_per_stage=2),
    "resnet1d-mnist1d": dict(dim=1, input_size=40, widths=(16, 32, 64), blocks_per_stage=1),
}


def build(name: str, seed: int = 0) -> ConvNet:
    """A ResNet-style ConvNet with BatchNorm after every conv, and non-trivial running statistics and affine."""
    torch.manual_seed(seed)
    net = ConvNet(ConvNetConfig(arch="resnet", norm="batchnorm", **MODELS[name]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.norm_layers().values():
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            m.weight.copy_(torch.randn(c, generator=g) * 0.5 + 1)
            m.bias.copy_(torch.randn(c, generator=g) * 0.5)
    return net.eval()


def measure(name: str, batch: int, rounds: int, calls: int, warmup: int = 2) -> dict:
    net = build(name)
    folded, report = fold_batchnorm(net, report=True)
    cfg = MODELS[name]
    x = torch.randn(batch, 1, *(cfg["input_size"],) * cfg["dim"], generator=torch.Generator().manual_seed(1))
    models = {"original": net, "folded": folded}
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.no_grad():
        diff = (net(x) - folded(x)).abs().max().item()
        for f in models.values():
            f(x)
            f(x)
        for r in range(warmup + rounds):
            order = ("original", "folded") if r % 2 == 0 else ("folded", "original")
            per: dict[str, list[float]] = {k: [] for k in models}
            for _ in range(calls):
                for k in order:
                    t0 = time.perf_counter()
                    models[k](x)
                    per[k].append((time.perf_counter() - t0) * 1e3)
            if r >= warmup:
                for k in models:
                    times[k].append(statistics.median(per[k]))
    iv = interval("log(t_folded / t_original)", [math.log(a) for a in times["folded"]],
                  [math.log(b) for b in times["original"]], paired=True)
    return {"model": name, "batch": batch, "folded": sum(e.folded for e in report), "bns": len(report),
            "original_ms": statistics.median(times["original"]), "folded_ms": statistics.median(times["folded"]),
            "ratio": math.exp(iv.estimate), "lo": math.exp(iv.lo), "hi": math.exp(iv.hi), "max_diff": diff}


def _in_fresh_process(name: str, batch: int, rounds: int, calls: int, threads: int, fresh_pages: bool) -> dict:
    torch.set_num_threads(threads)
    if not fresh_pages:
        _steady_allocator()
    return measure(name, batch, rounds, calls)


def across_processes(name: str, batch: int, rounds: int, calls: int, threads: int, fresh_pages: bool,
                     processes: int) -> dict:
    """:func:`measure` in ``processes`` fresh processes; the ratio's geometric mean and 95% t interval over them."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as pool:
        runs = [pool.submit(_in_fresh_process, name, batch, rounds, calls, threads, fresh_pages).result()
                for _ in range(processes)]
    iv = interval("log ratio", [math.log(r["ratio"]) for r in runs])
    return {**runs[0], "original_ms": statistics.median(r["original_ms"] for r in runs),
            "folded_ms": statistics.median(r["folded_ms"] for r in runs), "ratio": math.exp(iv.estimate),
            "lo": math.exp(iv.lo), "hi": math.exp(iv.hi), "max_diff": max(r["max_diff"] for r in runs),
            "slower": sum(r["ratio"] > 1 for r in runs), "processes": processes}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one small model, 6 rounds of 3 calls")
    p.add_argument("--fresh-pages", action="store_true", help="keep the allocator as it is (page faults count)")
    p.add_argument("--processes", type=int, default=1, help="measure each model in this many fresh processes")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    steady = False if a.fresh_pages else _steady_allocator()
    names = ["resnet2d-16-32-64"] if a.quick else [m.strip() for m in a.models.split(",") if m.strip()]
    rounds, calls = (6, 3) if a.quick else (a.rounds, a.calls)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, no grad; {rounds} rounds x "
          f"{calls} calls, interleaved; {'freed memory reused' if steady else 'fresh pages (allocator as it is)'}"
          + (f"; {a.processes} fresh processes per model, CI over processes" if a.processes > 1 else ""))
    print(f"{'model':26s} {'batch':>5s} {'folded':>7s} {'orig ms':>8s} {'fold ms':>8s} {'fold/orig [95% CI]':>24s} "
          f"{'speed-up':>8s} {'max|diff|':>9s}")
    for name in names:
        batch = 256 if name.startswith("resnet1d") and a.batch == 16 else a.batch
        if a.processes > 1:
            r = across_processes(name, batch, rounds, calls, a.threads, a.fresh_pages, a.processes)
        else:
            r = measure(name, batch, rounds, calls)
        print(f"{r['model']:26s} {r['batch']:5d} {r['folded']:3d}/{r['bns']:<3d} {r['original_ms']:8.2f} "
              f"{r['folded_ms']:8.2f} {r['ratio']:8.3f} [{r['lo']:.3f}, {r['hi']:.3f}]  {1 / r['ratio']:7.2f}x "
              f"{r['max_diff']:9.2e}" + (f"  ({r['slower']}/{r['processes']} processes slower)"
                                        if "slower" in r else ""))


if __name__ == "__main__":
    main()

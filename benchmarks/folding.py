"""CPU inference speed of a ResNet-style ConvNet before and after normlab.fold_batchnorm, side by side.

Each round times the original and the folded model alternately (``--calls`` calls each, the order alternating
by round, the median per model), so drift and disturbances of the machine hit both alike; the result is the
geometric mean of the per-round time ratio with its 95% t interval (paired by round), and the max output
difference of the two models.

    python benchmarks/folding.py                      # the default 2-D ResNet-style nets, one thread
    python benchmarks/folding.py --rounds 30 --threads 2 --batch 32
    python benchmarks/folding.py --quick              # seconds
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from normlab.experiments.stats import interval
from normlab.layers import fold_batchnorm
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
    folded, report = fold_batchnorm(net)
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="one small model, 6 rounds of 3 calls")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = ["resnet2d-16-32-64"] if a.quick else [m.strip() for m in a.models.split(",") if m.strip()]
    rounds, calls = (6, 3) if a.quick else (a.rounds, a.calls)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float32, no grad; {rounds} rounds x "
          f"{calls} calls, interleaved")
    print(f"{'model':26s} {'batch':>5s} {'folded':>7s} {'orig ms':>8s} {'fold ms':>8s} {'fold/orig [95% CI]':>24s} "
          f"{'speed-up':>8s} {'max|diff|':>9s}")
    for name in names:
        batch = 256 if name.startswith("resnet1d") and a.batch == 16 else a.batch
        r = measure(name, batch, rounds, calls)
        print(f"{r['model']:26s} {r['batch']:5d} {r['folded']:3d}/{r['bns']:<3d} {r['original_ms']:8.2f} "
              f"{r['folded_ms']:8.2f} {r['ratio']:8.3f} [{r['lo']:.3f}, {r['hi']:.3f}]  {1 / r['ratio']:7.2f}x "
              f"{r['max_diff']:9.2e}")


if __name__ == "__main__":
    main()

"""GPU bench of normlab's triton LayerNorm / RMSNorm / add+RMSNorm against torch, torch.compile, Liger and a copy.

Usage (on a machine with a CUDA device)::

    normlab bench --device cuda                            # every case and width, bf16, fwd and bwd
    python benchmarks/gpu_norms.py --ns 4096 65536 --no-compile --json gpu.json   # all the options
    python benchmarks/gpu_norms.py --static                # no GPU: registers and spills compiled for sm_90

Shapes: M x N with N in 1024 ... 262144 and M = 2^28 / N rows (``--total``), bfloat16 input and
parameters.  Variants, timed side by side in one process (rounds in a shuffled order, the median
over rounds of each variant's median over ``--reps`` calls, CUDA events):

- ``copy``: ``x.clone()``, one read and one write of x: the bandwidth any normalizer needs at least;
- ``torch``: ``F.layer_norm`` / ``F.rms_norm`` (add+RMSNorm: ``x + r`` then ``F.rms_norm``);
- ``compile``: ``torch.compile`` of the torch variant;
- ``liger``: Liger-Kernel's ``LigerLayerNorm`` / ``LigerRMSNorm`` / ``LigerFusedAddRMSNorm``
  (``in_place=False``, so a timed backward leaves its upstream gradient as it was), where importable;
- ``normlab``: normlab's layer (``nl.add_norm`` for add+RMSNorm) in kernel mode ``triton``.

Bandwidth is the bytes a pass must move divided by its time (:func:`bytes_moved`): with ``e`` the
input's element size, ``p`` the parameters' and ``P`` the parameter vectors (LayerNorm 2, RMSNorm 1),
forward ``2*M*N*e + P*N*p`` (read x, write y, read the parameters; add+RMSNorm ``4*M*N*e + N*p``: read x
and r, write y and the sum) and backward ``3*M*N*e + (1 + P)*N*p`` (read x and dy, write dx, read the
weight, write the parameters' gradients; add+RMSNorm ``4*M*N*e + 2*N*p``: also read the sum's
gradient).  The per-row statistics (4 to 8 bytes a row) are not counted.  The backward is timed
alone (``torch.autograd.grad(..., retain_graph=True)`` on a recorded forward).  Each row also gives
normlab's largest difference from the torch variant's output, so a fast wrong kernel shows.

The CPU bench (``normlab bench``) is :mod:`normlab.bench`; results of this one go in ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from . import kernels
from .layers import LayerNorm, RMSNorm
from .layers.norm import add_norm

__all__ = ["NS", "CASES", "VARIANTS", "PASSES", "shapes", "bytes_moved", "run", "format_table", "static_rows",
           "format_static", "main"]

NS = (1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144)
CASES = ("LayerNorm", "RMSNorm", "add+RMSNorm")
VARIANTS = ("copy", "torch", "compile", "liger", "normlab")
PASSES = ("fwd", "bwd")


def shapes(ns=NS, total: int = 2 ** 28) -> list[tuple[int, int]]:
    """``(M, N)`` per width: ``M = total // N`` rows (at least one)."""
    return [(max(1, total // n), n) for n in ns]


def bytes_moved(case: str, pass_: str, M: int, N: int, elem: int = 2, param_elem: int = 2) -> int:
    """The bytes one pass must move (the formula in the module docstring)."""
    if case not in CASES or pass_ not in PASSES:
        raise ValueError(f"case must be one of {CASES} and pass one of {PASSES}, got {case!r}, {pass_!r}")
    P = 2 if case == "LayerNorm" else 1
    big = M * N * elem
    if case == "add+RMSNorm":
        return 4 * big + (1 if pass_ == "fwd" else 2) * N * param_elem
    return 2 * big + P * N * param_elem if pass_ == "fwd" else 3 * big + (1 + P) * N * param_elem


def _liger():
    try:
        from liger_kernel.transformers import LigerFusedAddRMSNorm, LigerLayerNorm, LigerRMSNorm
    except Exception:  # not installed, or no build for this platform
        return None
    return {"LayerNorm": lambda n: LigerLayerNorm(n, eps=1e-5, bias=True),
            "RMSNorm": lambda n: LigerRMSNorm(n, eps=1e-5, in_place=False),
            "add+RMSNorm": lambda n: LigerFusedAddRMSNorm(n, eps=1e-5, in_place=False)}


def _modules(case: str, N: int, device, dtype):
    """``{variant: (module, fused)}``: ``fused`` modules take ``(x, r)`` and return ``(y, x + r)``."""
    if case == "LayerNorm":
        ours = LayerNorm(N)
        ref: torch.nn.Module = torch.nn.LayerNorm(N)
    else:
        ours = RMSNorm(N, eps=1e-5)
        ref = torch.nn.RMSNorm(N, eps=1e-5)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ours.load_state_dict(ref.state_dict())
    fused = case == "add+RMSNorm"
    out = {"torch": (_AddNorm(ref) if fused else ref, fused),
           "normlab": (_NormlabAddNorm(ours) if fused else ours, fused)}
    liger = _liger() if device.type == "cuda" else None
    if liger is not None:
        mod = liger[case](N)
        mod.load_state_dict({"weight": ref.weight.detach().clone(), **({"bias": ref.bias.detach().clone()}
                                                                       if case == "LayerNorm" else {})})
        out["liger"] = (mod, fused)
    return {k: (m.to(device=device, dtype=dtype), f) for k, (m, f) in out.items()}


class _AddNorm(torch.nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x, r):
        s = x + r
        return self.norm(s), s


class _NormlabAddNorm(_AddNorm):
    def forward(self, x, r):
        return add_norm(x, r, self.norm)


def _timer(device) -> Callable[[Callable[[], object], int], float]:
    """A function timing ``reps`` calls of ``fn``: the median in milliseconds (CUDA events on a GPU)."""
    def cuda(fn, reps):
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)

    def wall(fn, reps):
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)
    return cuda if device.type == "cuda" else wall


def _calls(case, N, M, device, dtype, variants, compile_: bool):
    """``{variant: {"fwd": fn, "bwd": fn, "out": first output}}`` on fresh inputs of (M, N)."""
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(M, N, device=device, generator=g).to(dtype)
    r = torch.randn(M, N, device=device, generator=g).to(dtype)
    dy = torch.randn(M, N, device=device, generator=g).to(dtype)
    mods = _modules(case, N, device, dtype)
    if compile_ and "compile" in variants:
        mods["compile"] = (torch.compile(mods["torch"][0]), mods["torch"][1])
    calls = {}
    if "copy" in variants:
        calls["copy"] = {"fwd": lambda: x.clone(), "bwd": lambda: x.clone(), "out": None}  # the roofline, in both
    for name, (mod, fused) in mods.items():
        if name not in variants:
            continue
        def mode(normlab=name == "normlab"):  # a fresh context per call (a contextmanager runs once)
            return kernels.use("triton") if normlab else nullcontext()

        def fwd(mod=mod, fused=fused, mode=mode):
            with torch.no_grad(), mode():
                return mod(x, r)[0] if fused else mod(x)
        xg = x.detach().requires_grad_(True)
        rg = r.detach().requires_grad_(True)
        with mode():
            out = mod(xg, rg) if fused else mod(xg)
        outs = list(out) if fused else [out]
        grads = [dy] * len(outs)
        inputs = [xg, rg, *mod.parameters()] if fused else [xg, *mod.parameters()]

        def bwd(outs=outs, grads=grads, inputs=inputs, mode=mode):
            with mode():
                return torch.autograd.grad(outs, inputs, grads, retain_graph=True)
        calls[name] = {"fwd": fwd, "bwd": bwd, "out": outs[0].detach()}
    return calls


def run(*, ns=NS, cases=CASES, passes=PASSES, variants=VARIANTS, total: int = 2 ** 28, rounds: int = 3,
        reps: int = 10, compile_: bool = True, device: str = "cuda", dtype=torch.bfloat16, log=print) -> dict:
    """Time every (case, width, pass) across the variants; a dict with the environment and one row per
    (case, N, pass), each variant's median time (ms) and bandwidth (TB/s)."""
    dev = torch.device(device)
    timer = _timer(dev)
    rows = []
    for case in cases:
        for M, N in shapes(ns, total):
            calls = _calls(case, N, M, dev, dtype, variants, compile_)
            err = None
            if "normlab" in calls and "torch" in calls:
                err = (calls["normlab"]["out"].float() - calls["torch"]["out"].float()).abs().max().item()
            for pass_ in passes:
                fns = {v: c[pass_] for v, c in calls.items()}
                for fn in fns.values():  # warm up: compilation, autotuning, allocator
                    fn()
                    fn()
                samples: dict[str, list[float]] = {v: [] for v in fns}
                for _ in range(rounds):
                    order = list(fns)
                    random.shuffle(order)
                    for v in order:
                        samples[v].append(timer(fns[v], reps))
                ms = {v: statistics.median(s) for v, s in samples.items()}
                need = {v: bytes_moved(case, pass_, M, N, dtype.itemsize, dtype.itemsize) for v in ms}
                need["copy"] = 2 * M * N * dtype.itemsize
                row = {"case": case, "N": N, "M": M, "pass": pass_, "ms": ms,
                       "tbps": {v: need[v] / (t * 1e-3) / 1e12 for v, t in ms.items()},
                       "bytes": bytes_moved(case, pass_, M, N, dtype.itemsize, dtype.itemsize),
                       "normlab_vs_torch_max_abs_diff": err if pass_ == "fwd" else None}
                rows.append(row)
                log(format_row(row))
            del calls
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    env = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "dtype": str(dtype), "total": total, "rounds": rounds, "reps": reps, "compile": compile_,
           "liger": _liger() is not None}
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    return {"env": env, "rows": rows}


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_row(row: dict) -> str:
    tb = row["tbps"]
    cells = [f"{row['case']:<12}", f"{row['pass']:<4}", f"{row['N']:>7}", f"{row['M']:>7}"]
    cells += [f"{_fmt(tb.get(v), '.2f'):>7}" for v in VARIANTS]
    ours = tb.get("normlab")
    for anchor in ("torch", "compile", "liger"):
        theirs = tb.get(anchor)
        cells.append(f"{_fmt(ours / theirs if ours and theirs else None, '.2f'):>6}")
    err = row.get("normlab_vs_torch_max_abs_diff")
    cells.append(f"{_fmt(err, '.1e'):>8}")
    return " ".join(cells)


def format_table(result: dict) -> str:
    """The rows as a text table: bandwidth (TB/s) per variant, then normlab's speed over each anchor
    (its bandwidth / the anchor's: above 1, normlab is faster)."""
    env = result["env"]
    head = ["case        ", "pass", "      N", "      M"] + [f"{v:>7}" for v in VARIANTS]
    head += ["/torch", "/comp.", "/liger", "max diff"]
    lines = [f"device {env['device']}, torch {env['torch']}, triton {env.get('triton')}, {env['dtype']}, "
             f"M*N = {env['total']}, median of {env['rounds']} rounds x {env['reps']} calls",
             "bandwidth in TB/s (bytes a pass must move / time; copy: x.clone()); /anchor: normlab's "
             "bandwidth over the anchor's; max diff: normlab vs torch output (fwd)",
             " ".join(head)]
    lines += [format_row(r) for r in result["rows"]]
    return "\n".join(lines)


def static_rows(ns=NS, arch: int = 90, dtype=torch.bfloat16) -> list[dict]:
    """Without a GPU: the kernels each bench case launches, compiled for compute capability ``arch``, with
    their launch configuration and the most registers per thread and stack bytes (spills) their cubins declare."""
    from .kernels import triton_rows as T

    rows = []
    for pass_ in PASSES:
        for N in ns:
            single, block, warps = T.launch_config(pass_, N)
            for case in CASES:
                center, fused = case == "LayerNorm", case == "add+RMSNorm"
                usage = [T.resource_usage(k) or {} for k in
                         T.compile_for(pass_, N, dtype, center=center, fused=fused, arch=arch)]
                reg = [u["reg"] for u in usage if "reg" in u]
                stack = [u["stack"] for u in usage if "stack" in u]
                rows.append({"pass": pass_, "N": N, "case": case, "held": single, "block": block, "warps": warps,
                             "reg": max(reg) if reg else None, "stack": max(stack) if stack else None})
    return rows


def format_static(rows: list[dict], arch: int = 90) -> str:
    lines = [f"triton kernels compiled for sm_{arch} (no GPU run): launch configuration and the registers per "
             "thread / stack bytes per thread (spills) of each cubin",
             "| pass | N | row | block | warps | " + " | ".join(CASES) + " |",
             "|---|---|---|---|---|" + "---|" * len(CASES)]
    by = {(r["pass"], r["N"], r["case"]): r for r in rows}
    for pass_, N in dict.fromkeys((r["pass"], r["N"]) for r in rows):
        first = by[(pass_, N, CASES[0])]
        cells = [f"{_fmt(by[(pass_, N, c)]['reg'], 'd')} / {_fmt(by[(pass_, N, c)]['stack'], 'd')}" for c in CASES]
        lines.append(f"| {pass_} | {N} | {'registers' if first['held'] else 'looped'} | {first['block']} | "
                     f"{first['warps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", type=int, nargs="+", default=list(NS), help="row widths N")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    ap.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    ap.add_argument("--total", type=int, default=2 ** 28, help="elements per input, M = total // N")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true",
                    help="leave out the torch.compile anchor (it compiles per shape)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--static", action="store_true",
                    help="no GPU needed: compile each kernel for sm_90 and print its registers and spills")
    args = ap.parse_args(argv)
    if args.static:
        print(format_static(static_rows(args.ns)))
        return 0
    if not torch.cuda.is_available():
        print("the GPU bench needs a CUDA device: torch.cuda.is_available() is False here "
              f"(torch {torch.__version__}); run it on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    if not kernels.triton_ops.available():
        print("the GPU bench needs triton for normlab's kernels: pip install 'normlab[gpu]'", file=sys.stderr)
        return 2
    variants = [v for v in VARIANTS if not (v == "compile" and args.no_compile)]
    result = run(ns=args.ns, cases=args.cases, passes=args.passes, variants=variants, total=args.total,
                 rounds=args.rounds, reps=args.reps, compile_=not args.no_compile)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":  # python -m normlab.bench_gpu
    sys.exit(main())

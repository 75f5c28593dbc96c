"""Time normlab's layers against torch.nn's, torch.compile and the memory-copy limit, side by side.

Every case times the same inputs through: ``x.clone()`` (one read + one
write of the tensor, allocation included: the bandwidth floor any
normalizer pays at least), the ``torch.nn`` layer (or the torch way to do
what the normlab call does), ``torch.compile`` of it, and the normlab layer;
forward alone (under ``no_grad``) and forward+backward
(``torch.autograd.grad`` of the outputs with fixed upstream gradients, so
nothing accumulates), in float32 and bfloat16.  Freed memory is kept in the
process (glibc's mmap and trimming off), so the times are those of the
computation and its memory traffic, not of the page faults of fresh
allocations (``fresh_pages=True`` keeps the allocator as it is).  The variants are timed in
interleaved rounds (each round times every variant once, in a shuffled
order), so a slow spell of the machine hits them all and no variant always
runs right after the same neighbour (a variant that leaves the caches full
of dirty lines, as torch's CPU RMSNorm does with its float32 temporaries,
slows whatever runs next; in a fixed or rotating order that was always
normlab's variant); a row reports medians
and ratios normlab / anchor, and the path normlab took
(:func:`normlab.kernels.implementation`).

"Is RMSNorm cheaper than LayerNorm" is timed apart, side by side in one
group (torch's LayerNorm, normlab's LayerNorm and normlab's RMSNorm on the
same input, interleaved): ratios across two cases compare variants that had
different neighbours (normlab's RMSNorm shares its rounds with torch's
RMSNorm, whose float32 temporaries slow what runs next: 1.23x normlab's
LayerNorm across cases where side by side it was 0.95x).

A process's memory layout (where its inputs and outputs land relative to
each other, and to the caches' sets) can shift one variant's time by 10-20%
for that process's whole life, on this kind of machine; repeating rounds in
one process does not average it out.  :func:`run_bench_processes` therefore
runs the whole bench in several fresh processes and reports, per row, the
median over processes of the times and of the per-process ratios, with the
ratios' range.

:func:`run_side_by_side` (``normlab bench --side-by-side``) times the way a user's process does:
torch's layer and normlab's alone, interleaved in one process, the allocator as it is.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

import normlab as nl

__all__ = ["Case", "CASES", "DTYPES", "case_names", "run_bench", "run_side_by_side", "format_table",
           "format_side_by_side", "save"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class _ChannelsFirstLayerNorm(nn.Module):
    """The torch way to get LayerNorm2d: permute to channels-last, LayerNorm, permute back."""

    def __init__(self, c: int):
        super().__init__()
        self.ln = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _AddThenNorm(nn.Module):
    """The unfused residual add + LayerNorm of a pre-LN block: ``(ln(x + r), x + r)``."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x, r):
        s = x + r
        return self.norm(s), s


class _FusedAddNorm(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x, r):
        return nl.add_norm(x, r, self.norm)


@dataclass(frozen=True)
class Case:
    """One benchmark: a name, full and quick input shapes, builders of both sides, how many inputs, mode."""

    name: str
    shape: tuple[int, ...]
    quick_shape: tuple[int, ...]
    torch_layer: Callable[[tuple[int, ...]], nn.Module]
    normlab_layer: Callable[[tuple[int, ...]], nn.Module]
    inputs: int = 1
    train: bool = True


_LN = (8, 512, 768), (4, 128, 256)
_WIDE = (2048, 4096), (256, 1024)
_CNN = (32, 64, 32, 32), (8, 32, 16, 16)

CASES: list[Case] = [
    Case("LayerNorm", *_LN, lambda s: nn.LayerNorm(s[-1]), lambda s: nl.LayerNorm(s[-1])),
    Case("RMSNorm", *_LN, lambda s: nn.RMSNorm(s[-1]), lambda s: nl.RMSNorm(s[-1])),
    # wide rows, few of them (the shape column gives the sizes: 2048x4096, quick 256x1024)
    Case("LayerNorm-wide", *_WIDE, lambda s: nn.LayerNorm(s[-1]), lambda s: nl.LayerNorm(s[-1])),
    Case("RMSNorm-wide", *_WIDE, lambda s: nn.RMSNorm(s[-1]), lambda s: nl.RMSNorm(s[-1])),
    # a pre-LN block's residual add and the LayerNorm after it: torch adds then normalizes
    Case("AddLayerNorm", *_LN, lambda s: _AddThenNorm(nn.LayerNorm(s[-1])),
         lambda s: _FusedAddNorm(nl.LayerNorm(s[-1])), inputs=2),
    Case("AddRMSNorm", *_LN, lambda s: _AddThenNorm(nn.RMSNorm(s[-1])),
         lambda s: _FusedAddNorm(nl.RMSNorm(s[-1])), inputs=2),
    Case("BatchNorm2d", *_CNN, lambda s: nn.BatchNorm2d(s[1]), lambda s: nl.BatchNorm2d(s[1])),
    Case("BatchNorm2d-eval", *_CNN, lambda s: nn.BatchNorm2d(s[1]), lambda s: nl.BatchNorm2d(s[1]), train=False),
    Case("BatchNorm1d", (8192, 256), (1024, 64), lambda s: nn.BatchNorm1d(s[1]), lambda s: nl.BatchNorm1d(s[1])),
    Case("GroupNorm(32)", *_CNN, lambda s: nn.GroupNorm(32, s[1]), lambda s: nl.GroupNorm(32, s[1])),
    Case("InstanceNorm2d", *_CNN, lambda s: nn.InstanceNorm2d(s[1], affine=True),
         lambda s: nl.InstanceNorm2d(s[1], affine=True)),
    Case("LayerNorm2d", *_CNN, lambda s: _ChannelsFirstLayerNorm(s[1]), lambda s: nl.LayerNorm2d(s[1])),
]


def case_names() -> list[str]:
    """The names ``--cases`` accepts."""
    return [c.name for c in CASES]


@dataclass
class Row:
    case: str
    shape: tuple[int, ...]
    dtype: str
    passes: str
    path: str
    copy_ms: float
    torch_ms: float
    compiled_ms: float | None
    normlab_ms: float
    spread: dict = field(default_factory=dict)

    @property
    def vs_torch(self) -> float:
        return self.normlab_ms / self.torch_ms

    @property
    def vs_compiled(self) -> float | None:
        return None if self.compiled_ms is None else self.normlab_ms / self.compiled_ms

    @property
    def vs_copy(self) -> float:
        return self.normlab_ms / self.copy_ms


def _steady_allocator() -> bool:
    """Keep freed memory in the process (glibc: no mmap, no trimming), so a timed call reuses pages.

    Otherwise every large output is a fresh mmap whose page faults (very slow on a VM) dominate the time
    of every variant, the copy included.  Returns whether it could be set (glibc only).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Median and interquartile range (ms) of each function, timed once per round in a shuffled order.

    The order of each round is drawn afresh (seeded, so runs repeat), so every function follows
    every other one in some rounds: what one leaves behind in the caches is shared out.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    order = random.Random(0)
    for _ in range(repeats):
        for n in order.sample(names, len(names)):
            t0 = time.perf_counter()
            fns[n]()
            times[n].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for n, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        out[n] = (statistics.median(ts), q[2] - q[0])
    return out


def _runner(layer: nn.Module, xs: Sequence[Tensor], backward: bool) -> Callable[[], object]:
    if not backward:
        def fwd():
            with torch.no_grad():
                return layer(*xs)
        return fwd
    xg = [x.detach().requires_grad_(True) for x in xs]
    inputs = [*xg, *(p for p in layer.parameters() if p.requires_grad)]
    with torch.no_grad():
        out = layer(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    grads = [torch.randn_like(o) for o in outs]

    def fwd_bwd():
        res = layer(*xg)
        return torch.autograd.grad(res if isinstance(res, tuple) else (res,), inputs, grads)
    return fwd_bwd


def _normlab_path(layer: nn.Module, x: Tensor) -> str:
    norm = getattr(layer, "norm", layer)
    try:
        return nl.kernels.implementation(norm, x)
    except TypeError:
        return "-"


def _check_selection(cases: list[str] | None, dtypes: Sequence[str]) -> list[Case]:
    """The selected cases; a clear error for an unknown case or dtype."""
    selected = [c for c in CASES if cases is None or c.name in cases]
    if cases is not None and len(selected) != len(cases):
        known = ", ".join(c.name for c in CASES)
        unknown = sorted(set(cases) - {c.name for c in selected})
        raise ValueError(f"unknown bench case(s) {unknown}; known: {known}")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        raise ValueError(f"unknown dtype(s) {bad or list(dtypes)}; known: {', '.join(DTYPES)}")
    return selected


def _setups(selected: list[Case], dtypes: Sequence[str], quick: bool):
    """Per selected case and dtype: ``(case, shape, dtype name, inputs, torch layer, normlab layer, normlab path)``."""
    for case in selected:
        shape = case.quick_shape if quick else case.shape
        for dname in dtypes:
            dtype = DTYPES[dname]
            gen = torch.Generator().manual_seed(0)
            xs = [torch.randn(shape, generator=gen).to(dtype) for _ in range(case.inputs)]
            theirs = case.torch_layer(shape).to(dtype).train(case.train)
            ours = case.normlab_layer(shape).to(dtype).train(case.train)
            yield case, shape, dname, xs, theirs, ours, _normlab_path(ours, xs[0])


# "RMSNorm cheaper": the shapes of these cases, timed side by side when both of a pair are selected
_RMS_VS_LN = (("LayerNorm", "RMSNorm"), ("LayerNorm-wide", "RMSNorm-wide"))


def _rms_vs_ln(shape: tuple[int, ...], dtype: torch.dtype, repeats: int, warmup: int) -> list[dict]:
    """torch's LayerNorm, normlab's LayerNorm and normlab's RMSNorm interleaved in one group, both passes."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    layers = {"torch_ln": nn.LayerNorm(shape[-1]), "normlab_ln": nl.LayerNorm(shape[-1]),
              "normlab_rms": nl.RMSNorm(shape[-1])}
    out = []
    for backward in (False, True):
        t = _interleaved({k: _runner(m.to(dtype), [x], backward) for k, m in layers.items()}, repeats, warmup)
        ms = {f"{k}_ms": v[0] for k, v in t.items()}
        out.append({"shape": list(shape), "passes": "fwd+bwd" if backward else "fwd", **ms,
                    "rms_vs_torch_ln": ms["normlab_rms_ms"] / ms["torch_ln_ms"],
                    "rms_vs_normlab_ln": ms["normlab_rms_ms"] / ms["normlab_ln_ms"]})
    return out


def run_bench(*, quick: bool = False, compile: bool = True, repeats: int | None = None,
              cases: list[str] | None = None, dtypes: Sequence[str] = ("float32", "bfloat16"),
              fresh_pages: bool = False, log: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark; return a JSON-ready dict with the environment and one row per (case, dtype, pass)."""
    repeats = repeats or (5 if quick else 25)
    warmup = 2 if quick else 5
    selected = _check_selection(cases, dtypes)
    nl.kernels.cpp_available()  # build the kernels (once per machine) before anything is timed
    steady = _steady_allocator() if not fresh_pages else False
    rows = []
    for case, shape, dname, xs, theirs, ours, path in _setups(selected, dtypes, quick):
        if compile:  # a fresh dynamo cache per case: compiled modules share one code object, and past
            torch._dynamo.reset()  # its recompile limit (8) dynamo silently runs the rest eagerly
        compiled = torch.compile(case.torch_layer(shape).to(DTYPES[dname]).train(case.train)) if compile else None
        for backward in (False, True):
            passes = "fwd+bwd" if backward else "fwd"
            if log:
                log(f"  {case.name} {shape} {dname} {passes}")
            fns = {"copy": lambda: xs[0].clone(), "torch": _runner(theirs, xs, backward),
                   "normlab": _runner(ours, xs, backward)}
            if compiled is not None:
                fns["compiled"] = _runner(compiled, xs, backward)
            t = _interleaved(fns, repeats, warmup)
            rows.append(Row(case.name, tuple(shape), dname, passes, path, t["copy"][0], t["torch"][0],
                            t["compiled"][0] if "compiled" in t else None, t["normlab"][0],
                            {"copy_iqr_ms": t["copy"][1], "torch_iqr_ms": t["torch"][1],
                             "normlab_iqr_ms": t["normlab"][1]}))
    names = {c.name for c in selected}
    pairs = []
    for ln_case, rms_case in _RMS_VS_LN:
        if ln_case in names and rms_case in names:
            case = next(c for c in selected if c.name == ln_case)
            for dname in dtypes:
                if log:
                    log(f"  RMSNorm vs LayerNorm {case.quick_shape if quick else case.shape} {dname}")
                for r in _rms_vs_ln(case.quick_shape if quick else case.shape, DTYPES[dname], repeats, warmup):
                    pairs.append({"dtype": dname, **r})
    return {
        "env": {"torch": torch.__version__, "normlab": nl.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "dtypes": list(dtypes), "repeats": repeats, "quick": quick,
                "kernels": nl.kernels.mode(), "steady_allocator": steady},
        "rows": [dict(asdict(r), vs_torch=r.vs_torch, vs_compiled=r.vs_compiled, vs_copy=r.vs_copy)
                 for r in rows],
        "rms_vs_ln": pairs,
    }


def run_side_by_side(*, quick: bool = False, repeats: int | None = None, cases: list[str] | None = None,
                     dtypes: Sequence[str] = ("float32", "bfloat16"), log: Callable[[str], None] | None = None,
                     **_ignored) -> dict:
    """torch's layer and normlab's alone, interleaved in rounds in this one process, as a user times them.

    Unlike :func:`run_bench`, nothing else runs between them (no copy, no compiled variant) and the
    allocator is left as the process has it (a large output may be a fresh mapping, with its page
    faults, on every call: that is what a user's process pays).  Each round times both once, in a
    seeded shuffled order; rows give the medians and normlab / torch.  "RMSNorm vs LayerNorm" is timed
    the same way (normlab's RMSNorm against torch's LayerNorm on the same input).
    """
    repeats = repeats or (5 if quick else 25)
    warmup = 2 if quick else 5
    selected = _check_selection(cases, dtypes)
    nl.kernels.cpp_available()
    rows = []
    for case, shape, dname, xs, theirs, ours, path in _setups(selected, dtypes, quick):
        for backward in (False, True):
            passes = "fwd+bwd" if backward else "fwd"
            if log:
                log(f"  {case.name} {shape} {dname} {passes}")
            t = _interleaved({"torch": _runner(theirs, xs, backward), "normlab": _runner(ours, xs, backward)},
                             repeats, warmup)
            rows.append({"case": case.name, "shape": list(shape), "dtype": dname, "passes": passes, "path": path,
                         "torch_ms": t["torch"][0], "normlab_ms": t["normlab"][0],
                         "vs_torch": t["normlab"][0] / t["torch"][0],
                         "spread": {"torch_iqr_ms": t["torch"][1], "normlab_iqr_ms": t["normlab"][1]}})
    pairs = []
    names = {c.name for c in selected}
    for ln_case, rms_case in _RMS_VS_LN:
        if ln_case in names and rms_case in names:
            case = next(c for c in selected if c.name == ln_case)
            shape = case.quick_shape if quick else case.shape
            for dname in dtypes:
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(DTYPES[dname])
                for backward in (False, True):
                    layers = {"torch_ln": nn.LayerNorm(shape[-1]), "normlab_rms": nl.RMSNorm(shape[-1])}
                    t = _interleaved({k: _runner(m.to(DTYPES[dname]), [x], backward) for k, m in layers.items()},
                                     repeats, warmup)
                    pairs.append({"shape": list(shape), "dtype": dname, "passes": "fwd+bwd" if backward else "fwd",
                                  "torch_ln_ms": t["torch_ln"][0], "normlab_rms_ms": t["normlab_rms"][0],
                                  "rms_vs_torch_ln": t["normlab_rms"][0] / t["torch_ln"][0]})
    return {"env": {"torch": torch.__version__, "normlab": nl.__version__, "python": platform.python_version(),
                    "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "dtypes": list(dtypes), "repeats": repeats, "quick": quick,
                    "kernels": nl.kernels.mode(), "mode": "side-by-side"},
            "rows": rows, "rms_vs_ln": pairs}


def format_side_by_side(result: dict) -> str:
    """The table of :func:`run_side_by_side`."""
    env = result["env"]
    head = (f"normlab bench, side by side in one process: torch {env['torch']}, {env['threads']} CPU threads, "
            f"median of {env['repeats']} interleaved rounds of torch's layer and normlab's"
            f"{' (quick shapes)' if env['quick'] else ''}, allocator as the process has it, kernels mode "
            f"{env.get('kernels')}\nratios are normlab time / torch time (lower is better)\n")
    cols = ["layer", "shape", "dtype", "pass", "normlab path", "torch ms", "normlab ms", "/torch"]
    lines = [[r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["passes"], r["path"], f"{r['torch_ms']:.3f}",
              f"{r['normlab_ms']:.3f}", f"{r['vs_torch']:.2f}"] for r in result["rows"]]
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 5 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    notes = ["normlab RMSNorm vs torch LayerNorm, side by side:"] if result.get("rms_vs_ln") else []
    for q in result.get("rms_vs_ln", []):
        notes.append(f"  {'x'.join(map(str, q['shape']))} {q['dtype']} {q['passes']}: {q['normlab_rms_ms']:.3f} ms "
                     f"= {q['rms_vs_torch_ln']:.2f}x torch LayerNorm ({q['torch_ln_ms']:.3f} ms)")
    return "\n".join([head, fmt(cols), *(fmt(line) for line in lines), "", *notes])


def _child_main() -> None:
    """Entry point of one bench process: the arguments as JSON on stdin, the result as JSON on stdout."""
    import sys

    args = json.load(sys.stdin)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    result = run_bench(**args["kwargs"])
    sys.stdout.write("\n" + _RESULT_MARK + json.dumps(result) + "\n")


_RESULT_MARK = "normlab-bench-result:"


def run_bench_processes(processes: int, *, threads: int | None = None, log: Callable[[str], None] | None = None,
                        side_by_side: bool = False, **kwargs) -> dict:
    """:func:`run_bench` in ``processes`` fresh Python processes, one after another; the rows combined.

    Each row's times are the medians over processes of the per-process medians; ``vs_*`` are the medians
    of the per-process ratios, ``vs_torch_range`` their min and max, ``per_process`` every process's
    ratio to torch.  ``processes=1`` runs in this process.
    """
    import subprocess
    import sys

    if processes < 1:
        raise ValueError(f"processes must be a positive integer, got {processes}")
    if side_by_side:
        if processes > 1:
            raise ValueError(f"the side-by-side mode times one process, as a user does: drop --processes "
                             f"(got {processes})")
        if threads:
            torch.set_num_threads(threads)
        return run_side_by_side(log=log, **kwargs)
    if processes == 1:
        if threads:
            torch.set_num_threads(threads)
        return run_bench(log=log, **kwargs)
    _check_selection(kwargs.get("cases"), kwargs.get("dtypes", ("float32", "bfloat16")))
    nl.kernels.cpp_available()  # build the kernels once, here, before the processes load them
    payload = json.dumps({"threads": threads, "kwargs": {k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in kwargs.items()}})
    results = []
    for i in range(processes):
        if log:
            log(f"process {i + 1} of {processes}")
        done = subprocess.run([sys.executable, "-c", "from normlab.bench import _child_main; _child_main()"],
                              input=payload, capture_output=True, text=True, check=False)
        marked = [line for line in done.stdout.splitlines() if line.startswith(_RESULT_MARK)]
        if done.returncode != 0 or not marked:
            raise RuntimeError(f"bench process {i + 1} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        results.append(json.loads(marked[-1][len(_RESULT_MARK):]))
    return combine(results)


def combine(results: Sequence[dict]) -> dict:
    """One result from several :func:`run_bench` results of the same cases (medians over them, see above)."""
    med = statistics.median
    keys = [(r["case"], r["dtype"], r["passes"]) for r in results[0]["rows"]]
    by = [{(r["case"], r["dtype"], r["passes"]): r for r in res["rows"]} for res in results]
    rows = []
    for k in keys:
        rs = [b[k] for b in by if k in b]
        row = dict(rs[0])
        for f in ("copy_ms", "torch_ms", "normlab_ms"):
            row[f] = med([r[f] for r in rs])
        comp = [r["compiled_ms"] for r in rs if r["compiled_ms"] is not None]
        row["compiled_ms"] = med(comp) if comp else None
        row["vs_torch"] = med([r["vs_torch"] for r in rs])
        row["vs_copy"] = med([r["vs_copy"] for r in rs])
        vc = [r["vs_compiled"] for r in rs if r["vs_compiled"] is not None]
        row["vs_compiled"] = med(vc) if vc else None
        row["per_process"] = [r["vs_torch"] for r in rs]
        row["vs_torch_range"] = [min(row["per_process"]), max(row["per_process"])]
        rows.append(row)
    pairs = []
    for i, first in enumerate(results[0].get("rms_vs_ln", [])):
        ps = [res["rms_vs_ln"][i] for res in results]
        pair = {k: (med([p[k] for p in ps]) if isinstance(v, float) else v) for k, v in first.items()}
        for k in ("rms_vs_torch_ln", "rms_vs_normlab_ln"):
            pair[k + "_range"] = [min(p[k] for p in ps), max(p[k] for p in ps)]
        pairs.append(pair)
    env = dict(results[0]["env"], processes=len(results))
    return {"env": env, "rows": rows, "rms_vs_ln": pairs}


def format_table(result: dict) -> str:
    env = result["env"]
    if env.get("mode") == "side-by-side":
        return format_side_by_side(result)
    procs = env.get("processes", 1)
    over = f" per process, medians over {procs} fresh processes" if procs > 1 else ""
    quick = " (quick shapes)" if env["quick"] else ""
    head = (f"normlab bench: torch {env['torch']}, {env['threads']} CPU threads, median of {env['repeats']} "
            f"interleaved rounds{over}{quick}, kernels mode {env.get('kernels')}, "
            f"{'freed memory reused' if env.get('steady_allocator') else 'fresh pages (allocator as is)'}\n"
            "ratios are normlab time / anchor time (lower is better; 1.00 = as fast as the anchor)\n")
    cols = ["layer", "shape", "dtype", "pass", "normlab path", "copy ms", "torch ms", "compiled ms", "normlab ms",
            "/torch", "/compiled", "/copy"] + (["/torch range"] if procs > 1 else [])
    lines = []
    for r in result["rows"]:
        extra = [f"{r['vs_torch_range'][0]:.2f}-{r['vs_torch_range'][1]:.2f}"] if procs > 1 else []
        lines.append([r["case"], "x".join(map(str, r["shape"])), r["dtype"], r["passes"], r["path"],
                      f"{r['copy_ms']:.3f}", f"{r['torch_ms']:.3f}",
                      "-" if r["compiled_ms"] is None else f"{r['compiled_ms']:.3f}", f"{r['normlab_ms']:.3f}",
                      f"{r['vs_torch']:.2f}", "-" if r["vs_compiled"] is None else f"{r['vs_compiled']:.2f}",
                      f"{r['vs_copy']:.2f}", *extra])
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 5 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    notes = []
    if result.get("rms_vs_ln"):
        notes.append("RMSNorm vs LayerNorm, side by side (one interleaved group per shape, dtype and pass):")
    for q in result.get("rms_vs_ln", []):
        rng = (f" ({q['rms_vs_torch_ln_range'][0]:.2f}-{q['rms_vs_torch_ln_range'][1]:.2f})"
               if "rms_vs_torch_ln_range" in q else "")
        notes.append(f"  {'x'.join(map(str, q['shape']))} {q['dtype']} {q['passes']}: normlab RMSNorm "
                     f"{q['normlab_rms_ms']:.3f} ms = {q['rms_vs_torch_ln']:.2f}x torch LayerNorm{rng}, "
                     f"{q['rms_vs_normlab_ln']:.2f}x normlab LayerNorm")
    return "\n".join([head, fmt(cols), *(fmt(line) for line in lines), "", *notes])


def save(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)

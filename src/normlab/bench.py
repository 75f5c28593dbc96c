"""Time normlab's layers against torch.nn's, torch.compile and the memory-copy limit, side by side.

Every case times the same input through: ``x.clone()`` (one read + one
write of the tensor: the bandwidth floor any normalizer pays at least),
the ``torch.nn`` layer, ``torch.compile`` of that layer, and the normlab
layer; forward alone and forward+backward (``torch.autograd.grad`` of the
output with a fixed upstream gradient, so nothing accumulates).  Times are
medians of repeated runs; ratios are normlab / anchor.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

import normlab as nl

__all__ = ["Case", "CASES", "case_names", "run_bench", "format_table"]


class _ChannelsFirstLayerNorm(nn.Module):
    """The torch way to get LayerNorm2d: permute to channels-last, LayerNorm, permute back."""

    def __init__(self, c: int):
        super().__init__()
        self.ln = nn.LayerNorm(c, eps=1e-6)

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Case:
    """One benchmark: a name, full and quick input shapes, and builders of both layers from a shape."""

    name: str
    shape: tuple[int, ...]
    quick_shape: tuple[int, ...]
    torch_layer: Callable[[tuple[int, ...]], nn.Module]
    normlab_layer: Callable[[tuple[int, ...]], nn.Module]


CASES: list[Case] = [
    Case("LayerNorm", (8, 512, 768), (4, 128, 256), lambda s: nn.LayerNorm(s[-1]), lambda s: nl.LayerNorm(s[-1])),
    Case("RMSNorm", (8, 512, 768), (4, 128, 256), lambda s: nn.RMSNorm(s[-1]), lambda s: nl.RMSNorm(s[-1])),
    # wide rows, few of them (the shape column gives the sizes: 2048x4096, quick 256x1024)
    Case("LayerNorm-wide", (2048, 4096), (256, 1024), lambda s: nn.LayerNorm(s[-1]),
         lambda s: nl.LayerNorm(s[-1])),
    Case("RMSNorm-wide", (2048, 4096), (256, 1024), lambda s: nn.RMSNorm(s[-1]), lambda s: nl.RMSNorm(s[-1])),
    Case("BatchNorm2d", (32, 64, 32, 32), (8, 32, 16, 16), lambda s: nn.BatchNorm2d(s[1]),
         lambda s: nl.BatchNorm2d(s[1])),
    Case("GroupNorm(32)", (32, 64, 32, 32), (8, 32, 16, 16), lambda s: nn.GroupNorm(32, s[1]),
         lambda s: nl.GroupNorm(32, s[1])),
    Case("LayerNorm2d", (32, 64, 32, 32), (8, 32, 16, 16), lambda s: _ChannelsFirstLayerNorm(s[1]),
         lambda s: nl.LayerNorm2d(s[1])),
]


def case_names() -> list[str]:
    """The names ``--cases`` accepts."""
    return [c.name for c in CASES]


@dataclass
class Row:
    case: str
    shape: tuple[int, ...]
    passes: str
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


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """Median and interquartile range of ``fn``'s wall time, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), q[2] - q[0]


def _runner(layer: nn.Module, x: torch.Tensor, backward: bool) -> Callable[[], object]:
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


def run_bench(*, quick: bool = False, compile: bool = True, repeats: int | None = None,
              cases: list[str] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark; return a JSON-ready dict with the environment and one row per (case, pass)."""
    repeats = repeats or (5 if quick else 25)
    warmup = 2 if quick else 5
    selected = [c for c in CASES if cases is None or c.name in cases]
    if cases is not None and len(selected) != len(cases):
        known = ", ".join(c.name for c in CASES)
        unknown = sorted(set(cases) - {c.name for c in selected})
        raise ValueError(f"unknown bench case(s) {unknown}; known: {known}")
    rows = []
    for case in selected:
        shape = case.quick_shape if quick else case.shape
        x = torch.randn(shape)
        theirs, ours = case.torch_layer(shape), case.normlab_layer(shape)
        compiled = torch.compile(case.torch_layer(shape)) if compile else None
        for backward in (False, True):
            if log:
                log(f"  {case.name} {shape} {'fwd+bwd' if backward else 'fwd'}")
            copy_ms, copy_iqr = _median_ms(lambda: x.clone(), repeats, warmup)
            torch_ms, torch_iqr = _median_ms(_runner(theirs, x, backward), repeats, warmup)
            comp_ms = _median_ms(_runner(compiled, x, backward), repeats, warmup)[0] if compiled is not None else None
            ours_ms, ours_iqr = _median_ms(_runner(ours, x, backward), repeats, warmup)
            rows.append(Row(case.name, tuple(shape), "fwd+bwd" if backward else "fwd", copy_ms, torch_ms,
                            comp_ms, ours_ms, {"copy_iqr_ms": copy_iqr, "torch_iqr_ms": torch_iqr,
                                               "normlab_iqr_ms": ours_iqr}))
    return {
        "env": {"torch": torch.__version__, "normlab": nl.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "dtype": "float32", "repeats": repeats, "quick": quick},
        "rows": [dict(asdict(r), vs_torch=r.vs_torch, vs_compiled=r.vs_compiled, vs_copy=r.vs_copy)
                 for r in rows],
    }


def format_table(result: dict) -> str:
    env = result["env"]
    head = (f"normlab bench: torch {env['torch']}, {env['threads']} CPU threads, {env['dtype']}, "
            f"median of {env['repeats']} runs{' (quick shapes)' if env['quick'] else ''}\n"
            "ratios are normlab time / anchor time (lower is better; 1.00 = as fast as the anchor)\n")
    cols = ["layer", "shape", "pass", "copy ms", "torch ms", "compiled ms", "normlab ms", "/torch", "/compiled",
            "/copy"]
    lines = []
    for r in result["rows"]:
        lines.append([r["case"], "x".join(map(str, r["shape"])), r["passes"], f"{r['copy_ms']:.3f}",
                      f"{r['torch_ms']:.3f}", "-" if r["compiled_ms"] is None else f"{r['compiled_ms']:.3f}",
                      f"{r['normlab_ms']:.3f}", f"{r['vs_torch']:.2f}",
                      "-" if r["vs_compiled"] is None else f"{r['vs_compiled']:.2f}", f"{r['vs_copy']:.2f}"])
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    fmt = lambda row: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))  # noqa: E731
    by_name = {(r["case"], r["passes"]): r for r in result["rows"]}
    notes = []
    for p in ("fwd", "fwd+bwd"):
        for suffix in ("", "-wide"):
            ln, rms = by_name.get(("LayerNorm" + suffix, p)), by_name.get(("RMSNorm" + suffix, p))
            if ln and rms:
                notes.append(f"torch RMSNorm / torch LayerNorm{suffix or ''} ({p}): {rms['torch_ms'] / ln['torch_ms']:.2f}x; "
                             f"normlab RMSNorm / normlab LayerNorm: {rms['normlab_ms'] / ln['normlab_ms']:.2f}x")
    return "\n".join([head, fmt(cols), *(fmt(line) for line in lines), "", *notes])


def save(result: dict, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)

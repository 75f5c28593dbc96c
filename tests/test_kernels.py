"""normlab.kernels: every fast path against the reference implementation.

Each test runs the same layer (deep-copied, so running statistics are compared
too) on the fast path chosen in ``auto`` mode and under
``nl.kernels.use("reference")``, and compares outputs, input and parameter
gradients and buffers.  In bf16/fp16 both sides are compared against a float64
referee (the reference on ``x.double()``): the fast path may not be more than
twice as far from it as the reference is, plus one ulp.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys
import warnings
from typing import Callable, NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab as nl
from normlab.kernels import build, ops

LOW = (torch.bfloat16, torch.float16)
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
STEPS = 3


@functools.lru_cache(maxsize=None)
def _cpp() -> bool:
    return nl.kernels.cpp_available()


def need_cpp() -> None:
    if not _cpp():
        pytest.skip(f"normlab's C++ kernels are not available here: {build.failure()}")


# ----------------------------------------------------------------------------- inputs
def _randn(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def _input(shape, layout: str, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A float64 draw rounded to ``dtype`` (so the referee sees the same values), in the given memory layout."""
    shape = tuple(shape)
    if layout == "contiguous":
        out = (_randn(shape, seed) * 2 + 0.5).to(dtype)
    elif layout == "transposed":  # the last two dims swapped: a non-contiguous view
        out = (_randn(shape[:-2] + (shape[-1], shape[-2]), seed) * 2 + 0.5).to(dtype).transpose(-1, -2)
    elif layout == "sliced":  # every other element of the last dim
        out = (_randn(shape[:-1] + (2 * shape[-1],), seed) * 2 + 0.5).to(dtype)[..., ::2]
    elif layout == "channels_last":
        fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
        out = (_randn(shape, seed) * 2 + 0.5).to(dtype).contiguous(memory_format=fmt)
    else:
        raise AssertionError(layout)
    assert out.is_contiguous() == (layout == "contiguous"), layout
    return out


def _lengths_mask(batch: int, length: int, lengths) -> torch.Tensor:
    """(batch, length) bool mask, True for the first lengths[i] positions of row i (padding after)."""
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]


def _randomize(layer: nn.Module) -> nn.Module:
    """Non-trivial parameters and running statistics, so every term of the formula is exercised."""
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("weight"):
                lo, hi = (-0.5, 0.5) if getattr(layer, "zero_centered_gamma", False) else (0.5, 1.5)
            else:
                lo, hi = -0.5, 0.5
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * (hi - lo) + lo)
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.copy_(torch.rand(layer.running_mean.shape, generator=g, dtype=torch.float64) * 2 - 1)
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=g, dtype=torch.float64) * 1.5 + 0.5)
    return layer


# ----------------------------------------------------------------------------- running both sides
def _impl(layer: nn.Module, x: torch.Tensor, mask=None) -> str:
    """The path of ``layer(x, mask)``; an unbatched InstanceNorm input is asked about as the batch of one
    that its forward makes of it (implementation() itself refuses it, see test_implementation_of_unbatched_input)."""
    sd = getattr(layer, "spatial_dims", None)
    if sd is not None and x.ndim == sd + 1:
        x, mask = x.unsqueeze(0), None if mask is None else mask.unsqueeze(0)
    return nl.kernels.implementation(layer, x, mask)


def _steps(layer: nn.Module, xs: list[torch.Tensor], mask, mode: str, gdtype: torch.dtype) -> dict:
    """Run a deep copy of ``layer`` on each input under kernel mode ``mode``, backward with a seeded gradient."""
    layer = copy.deepcopy(layer)
    out: dict = {"paths": []}
    with nl.kernels.use(mode):
        for i, x in enumerate(xs):
            out["paths"].append(_impl(layer, x, mask))
            xi = x.detach().requires_grad_(True)
            layer.zero_grad(set_to_none=True)
            y = layer(xi) if mask is None else layer(xi, mask=mask)
            y.backward(_randn(y.shape, seed=100 + i, dtype=gdtype).to(y.dtype))
    out["y"] = y.detach()
    out["dx"] = xi.grad
    out["grads"] = {n: p.grad for n, p in layer.named_parameters()}
    out["state"] = {k: v.detach().clone() for k, v in layer.state_dict().items()}
    return out


def _agree(fast, ref, ref64, dtype: torch.dtype, what: str, kind: str, atol: float | None = None) -> None:
    """fast ~ ref: a tolerance in float32/64, a couple of ulps of the referee's error in bf16/fp16."""
    if ref is None:
        assert fast is None, f"{what}: the fast path has a value where the reference has None"
        return
    assert fast is not None, f"{what}: missing on the fast path"
    assert fast.shape == ref.shape and fast.dtype == ref.dtype, (
        f"{what}: shape/dtype {tuple(fast.shape)}/{fast.dtype} vs {tuple(ref.shape)}/{ref.dtype}")
    if not fast.is_floating_point():
        assert torch.equal(fast, ref), f"{what}: {fast} != {ref}"
        return
    assert torch.isfinite(fast).all(), f"{what}: non-finite values on the fast path"
    scale = max(ref.double().abs().max().item(), 1e-12) if ref.numel() else 1.0
    if dtype in LOW:
        err_fast = (fast.double() - ref64.double()).abs().max().item()
        err_ref = (ref.double() - ref64.double()).abs().max().item()
        slack = max(torch.finfo(dtype).eps * scale, atol or 0.0)
        assert err_fast <= 2 * err_ref + slack, (
            f"{what} ({dtype}): the fast path is {err_fast:.3e} from the float64 referee, the reference "
            f"{err_ref:.3e} (allowed {2 * err_ref + slack:.3e})")
        return
    if dtype == torch.float64:
        rtol, atol = 1e-10, max(1e-10 * max(scale, 1.0), 1e-9 * (atol or 0.0))
    elif kind == "grad":
        rtol, atol = 1e-4, max(1e-4 * scale, atol or 0.0)
    else:
        rtol, atol = 1e-5, max(1e-5 * max(scale, 1.0), atol or 0.0)
    torch.testing.assert_close(fast, ref, rtol=rtol, atol=atol, msg=lambda m: f"{what} ({dtype}): {m}")


def _same_rounding(fast: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """bf16/fp16 outputs: both sides round (nearly) the same float32 value once, to nearest even, so they are
    equal except where the float32 difference (~1e-7 of the output's scale) straddles a rounding boundary,
    which is rare, and then by about one ulp.  (Truncation instead of rounding would change half of them.)"""
    differ = fast != ref
    assert int(differ.sum()) <= 1 + differ.numel() // 100, (
        f"output ({dtype}): {int(differ.sum())} of {differ.numel()} elements differ from the reference's rounding")
    if differ.any():
        f, r = fast.double(), ref.double()
        allowed = torch.finfo(dtype).eps * torch.maximum(f.abs(), r.abs()) + 1e-6 * r.abs().max()
        assert ((f - r).abs() <= allowed)[differ].all(), f"output ({dtype}): more than one ulp apart"


def _compare(fast: dict, ref: dict, ref64: dict, dtype: torch.dtype, dx_atol: float | None = None,
             same_rounding: bool = False) -> None:
    _agree(fast["y"], ref["y"], ref64["y"], dtype, "output", "out")
    if same_rounding and dtype in LOW:
        _same_rounding(fast["y"], ref["y"], dtype)
    _agree(fast["dx"], ref["dx"], ref64["dx"], dtype, "input grad", "grad", dx_atol)
    assert fast["grads"].keys() == ref["grads"].keys()
    for k in fast["grads"]:
        _agree(fast["grads"][k], ref["grads"][k], ref64["grads"][k], dtype, f"grad of {k}", "grad")
    assert fast["state"].keys() == ref["state"].keys()
    for k in fast["state"]:
        _agree(fast["state"][k], ref["state"][k], ref64["state"][k], dtype, f"buffer {k}", "state")


def _check_against_reference(layer, xs, mask, dtype, expected_path: str | None, dx_atol=None) -> dict:
    fast = _steps(layer, xs, mask, "auto", dtype)
    if expected_path is not None:
        assert fast["paths"] == [expected_path] * len(xs), f"took {fast['paths']}, expected {expected_path}"
    ref = _steps(layer, xs, mask, "reference", dtype)
    assert ref["paths"] == ["reference"] * len(xs)
    ref64 = None
    if dtype in LOW:
        ref64 = _steps(copy.deepcopy(layer).double(), [x.double() for x in xs], mask, "reference", dtype)
    else:
        ref64 = {"y": None, "dx": None, "grads": {k: None for k in ref["grads"]},
                 "state": {k: None for k in ref["state"]}}
    _compare(fast, ref, ref64, dtype, dx_atol, same_rounding=True)
    return fast


# ----------------------------------------------------------------------------- the cases
class Case(NamedTuple):
    id: str
    make: Callable[[], nn.Module]
    shape: tuple
    path: str
    layout: str = "contiguous"
    mask: Callable[[], torch.Tensor] | None = None
    train: bool = True
    freeze: bool = False
    #: an absolute tolerance for the input gradient where the exact one is ~0 by cancellation (rows of 1 or 2
    #: elements): the fused backward rstd * (g - mean(g) - xhat * mean(g * xhat)) leaves rounding noise of
    #: order ulp(g * w) * rstd there, where autograd through the reference's graph happens to cancel exactly
    dx_atol: float | None = None


def _seq_mask() -> torch.Tensor:  # (B=3, T=7)
    return _lengths_mask(3, 7, [7, 4, 2])


def _ncl_mask() -> torch.Tensor:  # (N=4, L=9)
    return _lengths_mask(4, 9, [9, 5, 3, 9])


def _hw_mask() -> torch.Tensor:  # (N=3, H=4, W=5)
    m = torch.ones(3, 4, 5, dtype=torch.bool)
    m[0, 2:, :] = False
    m[2, :, 3:] = False
    return m


CASES = [
    # ---- cpp:rows
    Case("LayerNorm(D) (B,T,D)", lambda: nl.LayerNorm(24), (3, 5, 24), "cpp:rows"),
    Case("LayerNorm D=1", lambda: nl.LayerNorm(1), (4, 7, 1), "cpp:rows", dx_atol=1e-3),
    Case("LayerNorm D=3", lambda: nl.LayerNorm(3), (5, 3), "cpp:rows"),
    Case("LayerNorm D=4097", lambda: nl.LayerNorm(4097), (3, 4097), "cpp:rows"),
    Case("LayerNorm batch 1", lambda: nl.LayerNorm(24), (1, 1, 24), "cpp:rows"),
    Case("LayerNorm transposed view", lambda: nl.LayerNorm(24), (3, 5, 24), "cpp:rows", layout="transposed"),
    Case("LayerNorm sliced view", lambda: nl.LayerNorm(24), (3, 5, 24), "cpp:rows", layout="sliced"),
    Case("LayerNorm no affine", lambda: nl.LayerNorm(24, elementwise_affine=False), (3, 5, 24), "cpp:rows"),
    Case("LayerNorm bias=False", lambda: nl.LayerNorm(24, bias=False), (3, 5, 24), "cpp:rows"),
    Case("LayerNorm zero_centered_gamma", lambda: nl.LayerNorm(24, zero_centered_gamma=True), (3, 5, 24),
         "cpp:rows"),
    Case("LayerNorm eps 1e-2", lambda: nl.LayerNorm(24, eps=1e-2), (3, 5, 24), "cpp:rows"),
    Case("LayerNorm eval", lambda: nl.LayerNorm(24), (3, 5, 24), "cpp:rows", train=False),
    Case("CNN LayerNorm((C,H,W))", lambda: nl.LayerNorm((4, 5, 7)), (3, 4, 5, 7), "cpp:rows"),
    Case("LayerNorm((H,W)) on NCHW", lambda: nl.LayerNorm((5, 7)), (2, 3, 5, 7), "cpp:rows"),
    Case("RMSNorm", lambda: nl.RMSNorm(24), (3, 5, 24), "cpp:rows"),
    Case("RMSNorm D=1", lambda: nl.RMSNorm(1), (6, 1), "cpp:rows", dx_atol=1e-4),
    Case("RMSNorm D=3", lambda: nl.RMSNorm(3), (5, 3), "cpp:rows"),
    Case("RMSNorm D=4097", lambda: nl.RMSNorm(4097), (3, 4097), "cpp:rows"),
    Case("RMSNorm eps 1e-6", lambda: nl.RMSNorm(24, eps=1e-6), (3, 5, 24), "cpp:rows"),
    Case("RMSNorm no affine", lambda: nl.RMSNorm(24, elementwise_affine=False), (3, 5, 24), "cpp:rows"),
    Case("RMSNorm zero_centered_gamma", lambda: nl.RMSNorm(24, zero_centered_gamma=True), (3, 5, 24), "cpp:rows"),
    Case("RMSNorm transposed view", lambda: nl.RMSNorm(24), (3, 5, 24), "cpp:rows", layout="transposed"),
    Case("GroupNorm", lambda: nl.GroupNorm(3, 6), (2, 6, 5, 7), "cpp:rows"),
    Case("GroupNorm batch 1", lambda: nl.GroupNorm(3, 6), (1, 6, 3, 3), "cpp:rows"),
    Case("GroupNorm no affine", lambda: nl.GroupNorm(2, 6, affine=False), (2, 6, 5, 3), "cpp:rows"),
    Case("GroupNorm bias=False", lambda: nl.GroupNorm(2, 6, bias=False), (2, 6, 5, 3), "cpp:rows"),
    Case("GroupNorm (N,C,L)", lambda: nl.GroupNorm(2, 6), (4, 6, 9), "cpp:rows"),
    Case("GroupNorm (N,C)", lambda: nl.GroupNorm(3, 6), (4, 6), "cpp:rows", dx_atol=1e-4),
    Case("GroupNorm G=C", lambda: nl.GroupNorm(6, 6), (2, 6, 3, 5), "cpp:rows"),
    Case("GroupNorm channels_last", lambda: nl.GroupNorm(3, 6), (2, 6, 5, 7), "cpp:rows", layout="channels_last"),
    Case("GroupNorm long rows", lambda: nl.GroupNorm(2, 8), (2, 8, 33, 40), "cpp:rows"),
    Case("InstanceNorm2d", lambda: nl.InstanceNorm2d(5), (3, 5, 4, 7), "cpp:rows"),
    Case("InstanceNorm2d affine", lambda: nl.InstanceNorm2d(5, affine=True), (3, 5, 4, 7), "cpp:rows"),
    Case("InstanceNorm2d running stats", lambda: nl.InstanceNorm2d(5, track_running_stats=True), (3, 5, 4, 7),
         "cpp:rows"),
    Case("InstanceNorm2d affine running stats",
         lambda: nl.InstanceNorm2d(5, affine=True, track_running_stats=True, momentum=0.3), (3, 5, 4, 7), "cpp:rows"),
    Case("InstanceNorm2d running stats momentum=None",
         lambda: nl.InstanceNorm2d(5, track_running_stats=True, momentum=None), (3, 5, 4, 7), "cpp:rows"),
    Case("InstanceNorm2d eval", lambda: nl.InstanceNorm2d(5, affine=True), (3, 5, 4, 7), "cpp:rows", train=False),
    Case("InstanceNorm2d eval running stats", lambda: nl.InstanceNorm2d(5, track_running_stats=True),
         (3, 5, 4, 7), "cpp:batch", train=False),
    Case("InstanceNorm2d eval affine running stats",
         lambda: nl.InstanceNorm2d(5, affine=True, track_running_stats=True), (3, 5, 4, 7), "cpp:batch", train=False),
    Case("InstanceNorm2d unbatched", lambda: nl.InstanceNorm2d(5, affine=True), (5, 4, 7), "cpp:rows"),
    Case("InstanceNorm1d", lambda: nl.InstanceNorm1d(4, affine=True), (3, 4, 9), "cpp:rows"),
    Case("InstanceNorm3d", lambda: nl.InstanceNorm3d(3, affine=True, bias=False), (2, 3, 3, 4, 5), "cpp:rows"),
    Case("Norm per sample, affine per channel", lambda: nl.Norm(6, keep_dims=(0,), param_dims=(1,)),
         (2, 6, 3, 5), "cpp:rows"),
    # ---- cpp:chfirst
    Case("LayerNorm2d", lambda: nl.LayerNorm2d(6), (2, 6, 5, 7), "cpp:chfirst"),
    Case("LayerNorm2d C=3 batch 1", lambda: nl.LayerNorm2d(3), (1, 3, 5, 3), "cpp:chfirst"),
    Case("LayerNorm2d no affine", lambda: nl.LayerNorm2d(6, affine=False), (2, 6, 5, 7), "cpp:chfirst"),
    Case("LayerNorm2d bias=False", lambda: nl.LayerNorm2d(6, bias=False), (2, 6, 5, 7), "cpp:chfirst"),
    Case("LayerNorm2d (N,C,L)", lambda: nl.LayerNorm2d(6), (3, 6, 11), "cpp:chfirst"),
    Case("LayerNorm2d channels_last", lambda: nl.LayerNorm2d(6), (2, 6, 5, 7), "cpp:chfirst",
         layout="channels_last"),
    Case("LayerNorm2d several tiles", lambda: nl.LayerNorm2d(8), (2, 8, 33, 40), "cpp:chfirst"),
    Case("LayerNorm2d C=300", lambda: nl.LayerNorm2d(300), (2, 300, 3, 3), "cpp:chfirst"),
    Case("RMSNorm per position", lambda: nl.Norm(6, dims=(1,), param_dims=(1,), center=False), (2, 6, 5, 7),
         "cpp:chfirst"),
    # ---- cpp:batch
    Case("BatchNorm2d train", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "cpp:batch"),
    Case("BatchNorm2d eval", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "cpp:batch", train=False),
    Case("BatchNorm2d frozen", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "cpp:batch", freeze=True),
    Case("BatchNorm2d momentum=None", lambda: nl.BatchNorm2d(5, momentum=None), (4, 5, 3, 7), "cpp:batch"),
    Case("BatchNorm2d affine=False", lambda: nl.BatchNorm2d(5, affine=False), (4, 5, 3, 7), "cpp:batch"),
    Case("BatchNorm2d bias=False", lambda: nl.BatchNorm2d(5, bias=False), (4, 5, 3, 7), "cpp:batch"),
    Case("BatchNorm2d no running stats", lambda: nl.BatchNorm2d(5, track_running_stats=False), (4, 5, 3, 7),
         "cpp:batch"),
    Case("BatchNorm2d no running stats eval", lambda: nl.BatchNorm2d(5, track_running_stats=False), (4, 5, 3, 7),
         "cpp:batch", train=False),
    Case("BatchNorm2d batch 1", lambda: nl.BatchNorm2d(5), (1, 5, 3, 3), "cpp:batch"),
    Case("BatchNorm2d transposed view", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "cpp:batch", layout="transposed"),
    Case("BatchNorm2d large channel", lambda: nl.BatchNorm2d(3), (8, 3, 33, 40), "cpp:batch"),
    Case("BatchNorm3d train", lambda: nl.BatchNorm3d(3), (2, 3, 3, 4, 5), "cpp:batch"),
    Case("BatchNorm3d eval", lambda: nl.BatchNorm3d(3), (2, 3, 3, 4, 5), "cpp:batch", train=False),
    Case("BatchNorm1d (N,C,L)", lambda: nl.BatchNorm1d(5), (4, 5, 9), "cpp:batch"),
    Case("SyncBatchNorm without a process group", lambda: nl.SyncBatchNorm(5), (4, 5, 3, 3), "cpp:batch"),
    Case("BatchNorm masked (N,C,L)", lambda: nl.BatchNorm(5), (4, 5, 9), "cpp:batch", mask=_ncl_mask),
    Case("BatchNorm masked (N,C,L) eval", lambda: nl.BatchNorm(5), (4, 5, 9), "cpp:batch", mask=_ncl_mask,
         train=False),
    Case("BatchNorm masked (N,C,L) momentum=None", lambda: nl.BatchNorm(5, momentum=None), (4, 5, 9), "cpp:batch",
         mask=_ncl_mask),
    Case("BatchNorm masked broadcast (N,1,L)", lambda: nl.BatchNorm(5), (4, 5, 9), "cpp:batch",
         mask=lambda: _ncl_mask()[:, None, :]),
    # ---- cpp:batch-cols
    Case("BatchNorm1d (N,C)", lambda: nl.BatchNorm1d(5), (7, 5), "cpp:batch-cols"),
    Case("BatchNorm1d (N,C) eval", lambda: nl.BatchNorm1d(5), (7, 5), "cpp:batch-cols", train=False),
    Case("BatchNorm1d (N,C) momentum=None", lambda: nl.BatchNorm1d(5, momentum=None), (7, 5), "cpp:batch-cols"),
    Case("BatchNorm1d (N,C) many rows", lambda: nl.BatchNorm1d(5), (1000, 5), "cpp:batch-cols"),
    Case("BatchNorm1d (N,C,1)", lambda: nl.BatchNorm1d(5), (6, 5, 1), "cpp:batch-cols"),
    Case("BatchNorm2d (N,C,1,1)", lambda: nl.BatchNorm2d(5), (6, 5, 1, 1), "cpp:batch-cols"),
    Case("BatchNorm channel_dim=-1", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), "cpp:batch-cols"),
    Case("BatchNorm channel_dim=-1 eval", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), "cpp:batch-cols",
         train=False),
    Case("BatchNorm channel_dim=-1 frozen", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), "cpp:batch-cols",
         freeze=True),
    Case("BatchNorm channel_dim=-1 affine=False", lambda: nl.BatchNorm(6, channel_dim=-1, affine=False),
         (3, 7, 6), "cpp:batch-cols"),
    Case("BatchNorm channel_dim=-1 transposed view", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6),
         "cpp:batch-cols", layout="transposed"),
    Case("BatchNorm channel_dim=-1 masked", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), "cpp:batch-cols",
         mask=_seq_mask),
    Case("BatchNorm channel_dim=-1 masked eval", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6),
         "cpp:batch-cols", mask=_seq_mask, train=False),
    Case("BatchNorm channel_dim=-1 masked bias=False", lambda: nl.BatchNorm(6, channel_dim=-1, bias=False),
         (3, 7, 6), "cpp:batch-cols", mask=_seq_mask),
    Case("BatchNorm channel_dim=-1 masked broadcast (B,T,1)", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6),
         "cpp:batch-cols", mask=lambda: _seq_mask()[..., None]),
    Case("BatchNorm2d channels_last", lambda: nl.BatchNorm2d(5), (3, 5, 4, 5), "cpp:batch-cols",
         layout="channels_last"),
    Case("BatchNorm2d channels_last eval", lambda: nl.BatchNorm2d(5), (3, 5, 4, 5), "cpp:batch-cols",
         layout="channels_last", train=False),
    Case("BatchNorm2d channels_last masked", lambda: nl.BatchNorm(5), (3, 5, 4, 5), "cpp:batch-cols",
         layout="channels_last", mask=_hw_mask),
    Case("BatchNorm3d channels_last_3d", lambda: nl.BatchNorm3d(3), (2, 3, 3, 4, 5), "cpp:batch-cols",
         layout="channels_last"),
]

CASE_IDS = [c.id for c in CASES]


def _layer(case: Case, dtype: torch.dtype) -> nn.Module:
    layer = _randomize(case.make().to(dtype))
    layer.train(case.train)
    if case.freeze:
        layer.freeze()
        layer.train()  # a frozen layer stays on its running statistics through .train()
    return layer


def _inputs(case: Case, dtype: torch.dtype, steps: int = STEPS) -> list[torch.Tensor]:
    return [_input(case.shape, case.layout, dtype, seed=10 * k + 1) for k in range(steps)]


# ----------------------------------------------------------------------------- 1. paths
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_path_taken(case):
    need_cpp()
    layer = _layer(case, torch.float32)
    x = _inputs(case, torch.float32, steps=1)[0]
    mask = None if case.mask is None else case.mask()
    assert _impl(layer, x, mask) == case.path
    with nl.use_reference():
        assert _impl(layer, x, mask) == "reference"


def test_implementation_of_unbatched_input():
    need_cpp()
    layer = nl.InstanceNorm2d(5, affine=True)
    x = torch.randn(5, 4, 7)
    assert layer(x).shape == x.shape
    assert nl.kernels.implementation(layer, x) == "cpp:rows"


REFERENCE_ONLY = [
    ("GroupNorm masked", lambda: nl.GroupNorm(2, 6), (4, 6, 9), _ncl_mask),
    ("InstanceNorm1d masked", lambda: nl.InstanceNorm1d(6, affine=True), (4, 6, 9), _ncl_mask),
    ("InstanceNorm2d masked", lambda: nl.InstanceNorm2d(5), (3, 5, 4, 5), _hw_mask),
    ("Norm over (0, 2) keep 1 of 4-D", lambda: nl.Norm(5, dims=(0, 2), param_dims=(1,)), (3, 5, 4, 5), None),
]


@pytest.mark.parametrize("name,make,shape,mask", REFERENCE_ONLY, ids=[c[0] for c in REFERENCE_ONLY])
def test_reference_only_configurations(name, make, shape, mask):
    layer = _randomize(make())
    x = _input(shape, "contiguous", torch.float32, seed=3)
    m = None if mask is None else mask()
    assert nl.kernels.implementation(layer, x, m) == "reference"
    # and the call works there (the masked statistics are the reference's)
    y = layer(x) if m is None else layer(x, mask=m)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_empty_and_meta_inputs_take_the_reference():
    ln = nl.LayerNorm(8)
    assert nl.kernels.implementation(ln, torch.empty(0, 8)) == "reference"
    assert ln(torch.empty(0, 8)).shape == (0, 8)
    meta = nl.LayerNorm(8, device="meta")
    assert nl.kernels.implementation(meta, torch.empty(2, 8, device="meta")) == "reference"
    assert meta(torch.empty(2, 8, device="meta")).shape == (2, 8)


# ----------------------------------------------------------------------------- 2. agreement
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fast_path_matches_reference(case, dtype):
    need_cpp()
    layer = _layer(case, dtype)
    mask = None if case.mask is None else case.mask()
    _check_against_reference(layer, _inputs(case, dtype), mask, dtype, case.path, case.dx_atol)


MIXED = [
    ("LayerNorm", lambda: nl.LayerNorm(24), (3, 5, 24), "cpp:rows"),
    ("RMSNorm", lambda: nl.RMSNorm(24), (3, 5, 24), "cpp:rows"),
    ("GroupNorm", lambda: nl.GroupNorm(3, 6), (2, 6, 5, 7), "cpp:rows"),
    ("LayerNorm2d", lambda: nl.LayerNorm2d(6), (2, 6, 5, 7), "cpp:chfirst"),
    ("BatchNorm2d", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "cpp:batch"),
    ("BatchNorm channel_dim=-1", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), "cpp:batch-cols"),
]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("name,make,shape,path", MIXED, ids=[m[0] for m in MIXED])
def test_float32_layer_on_low_precision_input(name, make, shape, path, dtype):
    """Parameters and running statistics in float32, activations in bf16/fp16 (autocast-style)."""
    need_cpp()
    layer = _randomize(make())
    xs = [_input(shape, "contiguous", dtype, seed=k) for k in range(STEPS)]
    _check_against_reference(layer, xs, None, dtype, path)


PLAN_LAYERS = [
    ("BatchNorm2d", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), ["channels_last", "transposed"]),
    ("InstanceNorm2d running stats", lambda: nl.InstanceNorm2d(5, affine=True, track_running_stats=True),
     (4, 5, 3, 7), ["channels_last", "transposed"]),
    ("BatchNorm channel_dim=-1", lambda: nl.BatchNorm(5, channel_dim=-1), (4, 6, 5), ["transposed"]),
]


@pytest.mark.parametrize("name,make,shape,layouts", PLAN_LAYERS, ids=[p[0] for p in PLAN_LAYERS])
def test_cached_plans_follow_the_layer_state(name, make, shape, layouts, monkeypatch):
    """One layer through train/eval/freeze, layout, eps, momentum, weight and mode changes on one input shape."""
    need_cpp()
    calls = []
    for op in ("rows", "rows_eager", "chfirst", "batch", "batch_eager", "ROWS_AD", "BATCH_AD"):
        real = getattr(ops, op)
        monkeypatch.setattr(ops, op, functools.partial(lambda real, *a, **k: calls.append(1) or real(*a, **k), real))
    fast = _randomize(make())
    ref = copy.deepcopy(fast)
    g = _randn(shape, 99, torch.float32)

    def both(x, what):
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        n = len(calls)
        y = fast(xa)
        assert len(calls) == n + 1, f"{what}: the C++ kernel did not run"
        with nl.use_reference():
            y_ref = ref(xb)
        assert len(calls) == n + 1, f"{what}: a C++ kernel ran under use_reference()"
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")
        y.backward(g)
        y_ref.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}, dx: {m}")
        for (k, a), (_, b) in zip(fast.named_parameters(), ref.named_parameters()):
            if b.grad is None:
                assert a.grad is None, f"{what}: grad of {k}"
            else:
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=lambda m: f"{what}, {k}: {m}")
        fast.zero_grad(set_to_none=True)
        ref.zero_grad(set_to_none=True)
        for (k, a), (_, b) in zip(fast.named_buffers(), ref.named_buffers()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}, {k}: {m}")

    x = _input(shape, "contiguous", torch.float32, 0)
    both(x, "train")
    for k, layout in enumerate(layouts):
        both(_input(shape, layout, torch.float32, k + 1), f"train {layout}")
    both(x, "train again")
    fast.eval(), ref.eval()
    both(x, "eval")
    for k, layout in enumerate(layouts):
        both(_input(shape, layout, torch.float32, k + 5), f"eval {layout}")
    fast.train(), ref.train()
    fast.eps = ref.eps = 0.5
    both(x, "train, eps changed")
    fast.momentum = ref.momentum = None
    both(x, "train, momentum=None")
    with torch.no_grad():
        for m in (fast, ref):
            m.weight.mul_(2)
    both(x, "weight changed in place")
    fast.freeze(), ref.freeze()
    fast.train(), ref.train()
    both(x, "frozen")
    fast.unfreeze().train(), ref.unfreeze().train()
    both(x, "unfrozen")
    with nl.use_reference():
        assert nl.kernels.implementation(fast, x) == "reference"
        n = len(calls)
        y, y_ref = fast(x), ref(x)
        assert len(calls) == n, "a remembered C++ plan ran under use_reference()"
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)


def test_errors_are_the_same_on_the_fast_path():
    need_cpp()
    cases = [
        (lambda: nl.BatchNorm1d(4), torch.randn(1, 4), None, "more than 1 value"),
        (lambda: nl.InstanceNorm2d(4), torch.randn(2, 4, 1, 1), None, "more than 1 value"),
        (lambda: nl.BatchNorm(4, channel_dim=-1), torch.randn(2, 3, 4),
         torch.zeros(2, 3, dtype=torch.bool), "selects no element"),
        (lambda: nl.BatchNorm(4), torch.randn(2, 4, 3), torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool),
         "more than 1 value"),
    ]
    for make, x, mask, match in cases:
        for mode in ("auto", "reference"):
            layer = make()
            before = copy.deepcopy(layer.state_dict())
            with nl.kernels.use(mode), pytest.raises(ValueError, match=match):
                layer(x) if mask is None else layer(x, mask=mask)
            for k, v in layer.state_dict().items():
                assert torch.equal(v, before[k]), f"{mode}: {k} changed by a refused call"


# ----------------------------------------------------------------------------- 3. gradcheck of the ops
def _d(*shape, seed=0):
    return _randn(shape, seed=seed).requires_grad_(True)


def _given(c):
    """Running-statistics-like mean and variance (no gradient flows to them)."""
    return {"mean": _randn(c, 5), "var": _randn(c, 6).abs() + 0.5}


def _mask1(n):
    m = torch.ones(n, dtype=torch.bool)
    m[1::3] = False
    return m


def _rows_gradchecks(prefix: str, op: str) -> dict:
    """The rows op's gradcheck cases, through ``ops.<op>``: rows (the traced autograd.Function) or rows_eager
    (autograd in C++)."""
    def rows(*a, **k):
        return getattr(ops, op)(*a, **k)

    cases = {
        "rows center": lambda: ((_d(4, 7), _d(7, seed=1), _d(7, seed=2)),
                                lambda x, w, b: rows(x, w, b, eps=1e-5, center=True)[0]),
        "rows center no affine": lambda: ((_d(4, 7),), lambda x: rows(x, None, None, eps=1e-5, center=True)[0]),
        "rows center weight only": lambda: ((_d(4, 7), _d(7, seed=1)),
                                            lambda x, w: rows(x, w, None, eps=1e-5, center=True)[0]),
        "rows no center (RMS)": lambda: ((_d(4, 7), _d(7, seed=1)),
                                         lambda x, w: rows(x, w, None, eps=1e-5, center=False)[0]),
        "rows length 1": lambda: ((_d(3, 1), _d(1, seed=1), _d(1, seed=2)),
                                  lambda x, w, b: rows(x, w, b, eps=1e-5, center=True)[0]),
        # GroupNorm-like: 2 samples x 3 groups, each group 2 channels x 4 positions, affine per channel
        "rows groups/seg": lambda: ((_d(6, 8), _d(6, seed=1), _d(6, seed=2)),
                                    lambda x, w, b: rows(x, w, b, groups=3, seg=4, eps=1e-5, center=True)[0]),
        "rows groups/seg no center": lambda: ((_d(6, 8), _d(6, seed=1), _d(6, seed=2)),
                                              lambda x, w, b: rows(x, w, b, groups=3, seg=4, eps=1e-5,
                                                                       center=False)[0]),
        # InstanceNorm-like: a row per (n, c) of 5 positions, affine per channel (groups = C, seg = L)
        "rows instance": lambda: ((_d(6, 5), _d(3, seed=1), _d(3, seed=2)),
                                  lambda x, w, b: rows(x, w, b, groups=3, seg=5, eps=1e-5, center=True)[0]),
        "rows residual": lambda: ((_d(4, 7), _d(7, seed=1), _d(7, seed=2), _d(4, 7, seed=3)),
                                  lambda x, w, b, r: rows(x, w, b, eps=1e-5, center=True, residual=r)[::2]),
        "rows residual no center": lambda: ((_d(4, 7), _d(7, seed=1), _d(4, 7, seed=3)),
                                            lambda x, w, r: rows(x, w, None, eps=1e-5, center=False,
                                                                     residual=r)[::2]),
        # a bias without a weight: its gradient must not be read off another input's slot
        "rows bias only": lambda: ((_d(4, 7), _d(7, seed=2)),
                                   lambda x, b: rows(x, None, b, eps=1e-5, center=True)[0]),
        "rows bias only, residual": lambda: ((_d(4, 7), _d(7, seed=2), _d(4, 7, seed=3)),
                                             lambda x, b, r: rows(x, None, b, eps=1e-5, center=True,
                                                                  residual=r)[::2]),
        "rows residual, only y used": lambda: ((_d(4, 7), _d(7, seed=1), _d(7, seed=2), _d(4, 7, seed=3)),
                                               lambda x, w, b, r: rows(x, w, b, eps=1e-5, center=True,
                                                                           residual=r)[0]),
    }
    return {name.replace("rows", prefix, 1): make for name, make in cases.items()}


GRADCHECKS = {
    **_rows_gradchecks("rows", "rows"),
    **_rows_gradchecks("rows_eager", "rows_eager"),
    # the eager path's n-d calls: x in its own shape, read as rows of `row` elements (outputs in that shape)
    "rows_eager n-d": lambda: ((_d(2, 3, 7), _d(7, seed=1), _d(7, seed=2)),
                               lambda x, w, b: ops.rows_eager(x, w, b, eps=1e-5, center=True, row=7)[0]),
    "rows_eager n-d, two trailing dims a row": lambda: (
        (_d(2, 3, 4), _d(12, seed=1)), lambda x, w: ops.rows_eager(x, w, None, eps=1e-5, center=True, row=12)[0]),
    "rows_eager n-d groups/seg": lambda: (
        (_d(2, 3, 8), _d(6, seed=1), _d(6, seed=2)),
        lambda x, w, b: ops.rows_eager(x, w, b, groups=3, seg=4, eps=1e-5, center=True, row=8)[0]),
    "rows_eager n-d residual": lambda: (
        (_d(2, 2, 7), _d(7, seed=1), _d(7, seed=2), _d(2, 2, 7, seed=3)),
        lambda x, w, b, r: ops.rows_eager(x, w, b, eps=1e-5, center=False, residual=r, row=7)[::2]),
    "chfirst center": lambda: ((_d(2, 5, 7), _d(5, seed=1), _d(5, seed=2)),
                               lambda x, w, b: ops.chfirst(x, w, b, eps=1e-5, center=True)[0]),
    "chfirst no center": lambda: ((_d(2, 5, 7), _d(5, seed=1)),
                                  lambda x, w: ops.chfirst(x, w, None, eps=1e-5, center=False)[0]),
    "chfirst no affine": lambda: ((_d(2, 5, 7),), lambda x: ops.chfirst(x, None, None, eps=1e-5, center=True)[0]),
    "batch ncs": lambda: ((_d(3, 4, 5), _d(4, seed=1), _d(4, seed=2)),
                          lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=False)[0]),
    "batch ncs no affine": lambda: ((_d(3, 4, 5),), lambda x: ops.batch(x, None, None, eps=1e-5, cols=False)[0]),
    "batch cols": lambda: ((_d(9, 4), _d(4, seed=1), _d(4, seed=2)),
                           lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=True)[0]),
    "batch ncs mask": lambda: ((_d(3, 4, 5), _d(4, seed=1), _d(4, seed=2)),
                               lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=False,
                                                         mask=_mask1(15).view(3, 5))[0]),
    "batch cols mask": lambda: ((_d(9, 4), _d(4, seed=1), _d(4, seed=2)),
                                lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=True, mask=_mask1(9))[0]),
    "batch ncs given mean/var": lambda: ((_d(3, 4, 5), _d(4, seed=1), _d(4, seed=2)),
                                         lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=False, **_given(4))[0]),
    "batch cols given mean/var": lambda: ((_d(9, 4), _d(4, seed=1), _d(4, seed=2)),
                                          lambda x, w, b: ops.batch(x, w, b, eps=1e-5, cols=True, **_given(4))[0]),
    "batch_eager ncs": lambda: ((_d(3, 4, 5), _d(4, seed=1), _d(4, seed=2)),
                                lambda x, w, b: ops.batch_eager(x, w, b, eps=1e-5, cols=False)[0]),
    "batch_eager cols no affine": lambda: ((_d(9, 4),), lambda x: ops.batch_eager(x, None, None, eps=1e-5,
                                                                                 cols=True)[0]),
    "batch_eager cols weight only": lambda: ((_d(9, 4), _d(4, seed=1)),
                                             lambda x, w: ops.batch_eager(x, w, None, eps=1e-5, cols=True)[0]),
    "batch_eager cols bias only": lambda: ((_d(9, 4), _d(4, seed=2)),
                                           lambda x, b: ops.batch_eager(x, None, b, eps=1e-5, cols=True)[0]),
    "batch_eager ncs bias only, given mean/var": lambda: ((_d(3, 4, 5), _d(4, seed=2)),
                                                          lambda x, b: ops.batch_eager(x, None, b, eps=1e-5, cols=False,
                                                                                       **_given(4))[0]),
    "batch_eager ncs given mean/var": lambda: ((_d(3, 4, 5), _d(4, seed=1), _d(4, seed=2)),
                                               lambda x, w, b: ops.batch_eager(x, w, b, eps=1e-5, cols=False,
                                                                               **_given(4))[0]),
    "batch_eager cols given mean/var": lambda: ((_d(9, 4), _d(4, seed=1), _d(4, seed=2)),
                                                lambda x, w, b: ops.batch_eager(x, w, b, eps=1e-5, cols=True,
                                                                                **_given(4))[0]),
    # the eager path's n-d calls: (N, C, *) and (*, C) in their own shape
    "batch_eager n-d ncs": lambda: ((_d(3, 4, 2, 3), _d(4, seed=1), _d(4, seed=2)),
                                    lambda x, w, b: ops.batch_eager(x, w, b, eps=1e-5, cols=False)[0]),
    "batch_eager n-d ncs given mean/var": lambda: (
        (_d(3, 4, 2, 3), _d(4, seed=1)), lambda x, w: ops.batch_eager(x, w, None, eps=1e-5, cols=False,
                                                                      **_given(4))[0]),
    "batch_eager n-d cols": lambda: ((_d(3, 3, 4), _d(4, seed=1), _d(4, seed=2)),
                                     lambda x, w, b: ops.batch_eager(x, w, b, eps=1e-5, cols=True)[0]),
    "batch cols given mean/var and mask": lambda: ((_d(9, 4), _d(4, seed=1)),
                                                   lambda x, w: ops.batch(x, w, None, eps=1e-5, cols=True,
                                                                          mask=_mask1(9), **_given(4))[0]),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck_ops(name):
    need_cpp()
    inputs, fn = GRADCHECKS[name]()
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_rows_eager_n_d_matches_the_2d_call():
    """row > 0: the same values, statistics and gradients as the (R, L) call, in x's own shape."""
    need_cpp()
    x, w, b, r = _d(2, 3, 8), _d(8, seed=1), _d(8, seed=2), _d(2, 3, 8, seed=3)
    got = ops.rows_eager(x, w, b, eps=1e-5, center=True, residual=r, row=8)
    want = ops.rows_eager(x.view(6, 8), w, b, eps=1e-5, center=True, residual=r.view(6, 8))
    assert got[0].shape == x.shape and got[2].shape == x.shape
    for g, e in zip(got, want):
        torch.testing.assert_close(g.reshape(e.shape), e, rtol=0, atol=0)
    dy = torch.randn(2, 3, 8, dtype=x.dtype)
    g1 = torch.autograd.grad([got[0], got[2]], [x, w, b, r], [dy, dy])
    g2 = torch.autograd.grad([want[0], want[2]], [x, w, b, r], [dy.view(6, 8), dy.view(6, 8)])
    for a, e in zip(g1, g2):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="13 elements are not rows of 4"):
        ops.rows_eager(torch.randn(13), None, None, eps=1e-5, center=True, row=4)


def test_batch_eager_n_d_matches_the_3d_call():
    """(N, C, *) and (*, C) in their own shape: the values, statistics and gradients of the 3-d / 2-d call."""
    need_cpp()
    for x, flat, cols in ((_d(3, 4, 2, 3), lambda t: t.reshape(3, 4, 6), False),
                          (_d(2, 3, 4), lambda t: t.reshape(6, 4), True)):
        w, b = _d(4, seed=1), _d(4, seed=2)
        got = ops.batch_eager(x, w, b, eps=1e-5, cols=cols)
        want = ops.batch_eager(flat(x), w, b, eps=1e-5, cols=cols)
        assert got[0].shape == x.shape
        torch.testing.assert_close(flat(got[0]), want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
        dy = torch.randn(x.shape, dtype=x.dtype)
        g1 = torch.autograd.grad(got[0], [x, w, b], dy)
        g2 = torch.autograd.grad(want[0], [x, w, b], flat(dy))
        for a, e in zip(g1, g2):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="expects a contiguous"):
        ops.batch_eager(torch.randn(3, 4, 5).transpose(1, 2), None, None, eps=1e-5, cols=False)


@pytest.mark.parametrize("make,shape", [(lambda: nl.LayerNorm(24), (3, 5, 24)),
                                        (lambda: nl.GroupNorm(2, 4), (3, 4, 5, 5))], ids=["LayerNorm", "GroupNorm"])
def test_input_gradient_alone_matches_reference(make, shape):
    """Frozen parameters: the backward skips the parameter sums (another kernel variant); dx as the reference's."""
    need_cpp()
    layer = _randomize(make())
    for p in layer.parameters():
        p.requires_grad_(False)
    x = _input(shape, "contiguous", torch.float32, 0)
    dy = torch.randn(shape)
    out = []
    for mode in ("auto", "reference"):
        xi = x.clone().requires_grad_(True)
        with nl.kernels.use(mode):
            assert mode == "reference" or nl.kernels.implementation(layer, xi) == "cpp:rows"
            (g,) = torch.autograd.grad(layer(xi), xi, dy)
        out.append(g)
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)


FUNC_LAYERS = [("LayerNorm", lambda: nl.LayerNorm(8), (3, 4, 8)), ("RMSNorm", lambda: nl.RMSNorm(8), (3, 4, 8)),
               ("GroupNorm", lambda: nl.GroupNorm(2, 4), (3, 4, 5)),
               ("BatchNorm2d eval", lambda: nl.BatchNorm2d(4).eval(), (3, 4, 2, 2)),
               ("BatchNorm1d batch stats only", lambda: nl.BatchNorm1d(4, track_running_stats=False), (6, 4))]


@pytest.mark.parametrize("name,make,shape", FUNC_LAYERS, ids=[f[0] for f in FUNC_LAYERS])
def test_torch_func_transforms_and_forward_ad(name, make, shape):
    """grad, vmap, jvp and forward-mode AD (the C++ ops have no batching rule nor forward derivative: inside
    them the calls take torch's ops), each against the reference; the same layer then runs its kernel again."""
    need_cpp()
    import torch.autograd.forward_ad as fwad

    layer = _randomize(make())
    x, t = _randn(shape, 0, torch.float32), _randn(shape, 1, torch.float32)
    out = {}
    for mode in ("auto", "reference"):
        with nl.kernels.use(mode):
            g = torch.func.grad(lambda v: (layer(v) ** 2).sum())(x)
            vm = torch.func.vmap(layer, in_dims=1, out_dims=1)(x.unsqueeze(1).expand(-1, 2, *shape[1:]))
            _, jv = torch.func.jvp(layer, (x,), (t,))
            with fwad.dual_level():
                fa = fwad.unpack_dual(layer(fwad.make_dual(x, t))).tangent
        out[mode] = (g, vm, jv, fa)
    for what, a, b in zip(("grad", "vmap", "jvp", "forward AD"), out["auto"], out["reference"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{what}: {m}")
    assert nl.kernels.implementation(layer, x).startswith("cpp:")  # outside the transforms: the kernel again


def test_ops_statistics_layout():
    """The statistics the ops return: shift + corr is the mean, then the biased variance (and the count)."""
    need_cpp()
    x = _randn((5, 9), 0) * 3 + 7
    _, st, s = ops.rows(x, None, None, eps=1e-5, center=True)
    assert s is None
    torch.testing.assert_close(st[0] + st[1], x.mean(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st[2], x.var(1, unbiased=False), rtol=1e-12, atol=1e-12)
    _, st, _ = ops.rows(x, None, None, eps=1e-5, center=False)
    torch.testing.assert_close(st[0], x.square().mean(1), rtol=1e-12, atol=1e-12)
    x3 = _randn((2, 5, 7), 1) + 3
    _, st = ops.chfirst(x3, None, None, eps=1e-5, center=True)
    torch.testing.assert_close(st[0] + st[1], x3.mean(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st[2], x3.var(1, unbiased=False), rtol=1e-12, atol=1e-12)
    m = torch.rand(2, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    _, st = ops.batch(x3, None, None, eps=1e-5, cols=False, mask=m)
    sel = x3.transpose(0, 1)[:, m]  # (C, real elements)
    torch.testing.assert_close(st[0] + st[1], sel.mean(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st[2], sel.var(1, unbiased=False), rtol=1e-12, atol=1e-12)
    assert torch.equal(st[3], torch.full((5,), float(m.sum()), dtype=torch.float64))


# ----------------------------------------------------------------------------- 4. hostile numerics
HOSTILE_MEAN, HOSTILE_STD = 1e4, 1e-2


def _hostile(shape, seed=0) -> torch.Tensor:
    return (HOSTILE_MEAN + HOSTILE_STD * _randn(shape, seed)).float()


def _f64_masked_batch_norm(x: torch.Tensor, mask: torch.Tensor, eps: float) -> torch.Tensor:
    xd = x.double()
    real = xd[mask]  # (count, C)
    mean, var = real.mean(0), real.var(0, unbiased=False)
    return (xd - mean) / torch.sqrt(var + eps)


HOSTILE = [
    ("LayerNorm", lambda: nl.LayerNorm(4097), (4, 4097), None, "cpp:rows",
     lambda x, m: F.layer_norm(x.double(), (4097,), eps=1e-5)),
    ("LayerNorm (B,T,D)", lambda: nl.LayerNorm(64), (4, 16, 64), None, "cpp:rows",
     lambda x, m: F.layer_norm(x.double(), (64,), eps=1e-5)),
    ("RMSNorm", lambda: nl.RMSNorm(4097), (4, 4097), None, "cpp:rows",
     lambda x, m: x.double() / torch.sqrt(x.double().square().mean(-1, keepdim=True) + torch.finfo(torch.float32).eps)),
    ("GroupNorm", lambda: nl.GroupNorm(4, 16), (3, 16, 17, 19), None, "cpp:rows",
     lambda x, m: F.group_norm(x.double(), 4, eps=1e-5)),
    ("InstanceNorm2d", lambda: nl.InstanceNorm2d(6), (3, 6, 33, 35), None, "cpp:rows",
     lambda x, m: F.instance_norm(x.double(), eps=1e-5)),
    ("LayerNorm2d", lambda: nl.LayerNorm2d(64), (2, 64, 9, 9), None, "cpp:chfirst",
     lambda x, m: F.layer_norm(x.double().movedim(1, -1), (64,), eps=1e-6).movedim(-1, 1)),
    ("BatchNorm2d train", lambda: nl.BatchNorm2d(4), (16, 4, 32, 33), None, "cpp:batch",
     lambda x, m: F.batch_norm(x.double(), None, None, training=True, eps=1e-5)),
    ("BatchNorm2d channels_last train", lambda: nl.BatchNorm2d(4), (16, 4, 32, 33), None, "cpp:batch-cols",
     lambda x, m: F.batch_norm(x.double(), None, None, training=True, eps=1e-5)),
    ("BatchNorm1d (N,C) train", lambda: nl.BatchNorm1d(7), (5000, 7), None, "cpp:batch-cols",
     lambda x, m: F.batch_norm(x.double(), None, None, training=True, eps=1e-5)),
    ("BatchNorm masked (N,C,L) train", lambda: nl.BatchNorm(4), (16, 4, 300), lambda: _lengths_mask(
        16, 300, [300 - 17 * i for i in range(16)]), "cpp:batch",
     lambda x, m: _f64_masked_batch_norm(x.movedim(1, -1), m, 1e-5).movedim(-1, 1)),
    ("BatchNorm channel_dim=-1 masked train", lambda: nl.BatchNorm(8, channel_dim=-1), (16, 300, 8),
     lambda: _lengths_mask(16, 300, [300 - 17 * i for i in range(16)]), "cpp:batch-cols",
     lambda x, m: _f64_masked_batch_norm(x, m, 1e-5)),
]


def _full_mask(m: torch.Tensor, x: torch.Tensor, cdim: int) -> torch.Tensor:
    """A mask of the input's shape without the channel dim, expanded over the channel."""
    return m.unsqueeze(cdim).expand(x.shape)


@pytest.mark.parametrize("name,make,shape,mask,path,f64", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_large_mean_small_spread(name, make, shape, mask, path, f64):
    """float32 rows of mean 1e4, std 1e-2: within 1e-6 normalized units of the float64 formula."""
    need_cpp()
    layer = make()
    x = _hostile(shape)
    if "channels_last" in name:
        x = x.contiguous(memory_format=torch.channels_last)
    m = None if mask is None else mask()
    cdim = x.ndim - 1 if getattr(layer, "channel_dim", 1) == -1 else 1
    if m is not None:  # padding far from the data: it must stay out of the statistics
        real = _full_mask(m, x, cdim)
        x = torch.where(real, x, torch.full_like(x, 3e4))
    assert nl.kernels.implementation(layer, x, m) == path
    y = layer(x) if m is None else layer(x, mask=m)
    want = f64(x, m)
    if m is None:
        err = (y.double() - want).abs().max().item()
        assert err <= 1e-6, f"{name}: max error {err:.3e} normalized units"
    else:
        err = (y.double() - want)[real].abs().max().item()
        assert err <= 1e-6, f"{name}: max error {err:.3e} normalized units on the real elements"
        # padded elements are normalized with the real elements' statistics (|y| ~ 2e6 here)
        torch.testing.assert_close(y.double()[~real], want[~real], rtol=1e-6, atol=0)
    if getattr(layer, "running_mean", None) is not None:
        xd = x.double()
        if m is None:
            red = [d for d in range(x.ndim) if d != cdim]
            mean, var = xd.mean(red), xd.var(red, unbiased=True)
        else:
            xr = xd.movedim(cdim, -1)[m]  # (real elements, C)
            mean, var = xr.mean(0), xr.var(0, unbiased=True)
        torch.testing.assert_close(layer.running_mean.double(), 0.1 * mean, rtol=1e-6, atol=0)
        torch.testing.assert_close(layer.running_var.double(), 0.9 + 0.1 * var, rtol=1e-6, atol=0)


CONSTANT = [
    ("LayerNorm", lambda: nl.LayerNorm(33), lambda: _randn((4, 6, 1), 0).mul(50).add(3.3).expand(4, 6, 33),
     "cpp:rows"),
    ("CNN LayerNorm", lambda: nl.LayerNorm((3, 4, 5)),
     lambda: _randn((2, 1, 1, 1), 0).mul(50).add(3.3).expand(2, 3, 4, 5), "cpp:rows"),
    ("GroupNorm", lambda: nl.GroupNorm(3, 6),
     lambda: _randn((2, 3, 1, 1, 1), 0).mul(50).add(3.3).expand(2, 3, 2, 5, 7).reshape(2, 6, 5, 7), "cpp:rows"),
    ("InstanceNorm2d affine", lambda: nl.InstanceNorm2d(5, affine=True),
     lambda: _randn((3, 5, 1, 1), 0).mul(50).add(3.3).expand(3, 5, 4, 7), "cpp:rows"),
    ("LayerNorm2d", lambda: nl.LayerNorm2d(6), lambda: _randn((2, 1, 5, 7), 0).mul(50).add(3.3).expand(2, 6, 5, 7),
     "cpp:chfirst"),
    ("BatchNorm2d", lambda: nl.BatchNorm2d(5), lambda: _randn((1, 5, 1, 1), 0).mul(50).add(3.3).expand(4, 5, 3, 7),
     "cpp:batch"),
    ("BatchNorm1d (N,C)", lambda: nl.BatchNorm1d(5), lambda: _randn((1, 5), 0).mul(50).add(3.3).expand(9, 5),
     "cpp:batch-cols"),
    ("BatchNorm channel_dim=-1", lambda: nl.BatchNorm(6, channel_dim=-1),
     lambda: _randn((1, 1, 6), 0).mul(50).add(3.3).expand(3, 7, 6), "cpp:batch-cols"),
]


@pytest.mark.parametrize("name,make,x,path", CONSTANT, ids=[c[0] for c in CONSTANT])
def test_constant_rows_give_beta(name, make, x, path):
    """Variance 0: the normalized value is exactly 0, the output exactly beta, everything finite."""
    need_cpp()
    layer = _randomize(make())
    x = x().float().contiguous()
    assert nl.kernels.implementation(layer, x) == path
    xi = x.clone().requires_grad_(True)
    y = layer(xi)
    beta = layer._param_view(layer.bias, x, layer._layout(x)[1]).expand(x.shape)
    assert torch.equal(y, beta.detach()), f"{name}: max |y - beta| = {(y - beta).abs().max().item():.3e}"
    y.backward(_randn(y.shape, 5, torch.float32))
    assert torch.isfinite(xi.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())
    for b in layer.buffers():
        assert torch.isfinite(b.float()).all()


def test_rmsnorm_zero_rows():
    need_cpp()
    rms = _randomize(nl.RMSNorm(16))
    x = torch.randn(4, 16)
    x[1] = 0
    assert nl.kernels.implementation(rms, x) == "cpp:rows"
    xi = x.clone().requires_grad_(True)
    y = rms(xi)
    assert torch.equal(y[1], torch.zeros(16))
    y.backward(torch.randn(4, 16))
    assert torch.isfinite(xi.grad).all()


@pytest.mark.parametrize("make,shape,path", [
    (lambda: nl.LayerNorm(33), (4, 6, 33), "cpp:rows"),
    (lambda: nl.RMSNorm(33), (4, 6, 33), "cpp:rows"),
], ids=["LayerNorm", "RMSNorm"])
def test_nan_stays_in_its_row(make, shape, path):
    need_cpp()
    layer = _randomize(make())
    x = _input(shape, "contiguous", torch.float32, 0)
    x[1, 3, 5] = float("nan")
    assert nl.kernels.implementation(layer, x) == path
    y = layer(x)
    assert torch.isnan(y[1, 3]).all()
    others = torch.ones(shape[:-1], dtype=torch.bool)
    others[1, 3] = False
    assert torch.isfinite(y[others]).all()
    with nl.use_reference():
        y_ref = layer(x)
    torch.testing.assert_close(y[others], y_ref[others], rtol=1e-5, atol=1e-5)


NAN_BN = [
    ("BatchNorm2d", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "contiguous", None, "cpp:batch"),
    ("BatchNorm2d channels_last", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), "channels_last", None, "cpp:batch-cols"),
    ("BatchNorm1d (N,C)", lambda: nl.BatchNorm1d(5), (9, 5), "contiguous", None, "cpp:batch-cols"),
    ("BatchNorm masked (N,C,L)", lambda: nl.BatchNorm(5), (4, 5, 9), "contiguous", _ncl_mask, "cpp:batch"),
    ("BatchNorm channel_dim=-1 masked", lambda: nl.BatchNorm(5, channel_dim=-1), (3, 7, 5), "contiguous",
     _seq_mask, "cpp:batch-cols"),
]


@pytest.mark.parametrize("name,make,shape,layout,mask,path", NAN_BN, ids=[c[0] for c in NAN_BN])
def test_nan_stays_in_its_channel_and_out_of_running_stats(name, make, shape, layout, mask, path):
    need_cpp()
    layer = _randomize(make())
    cdim = 1 if getattr(layer, "channel_dim", 1) == 1 else len(shape) - 1
    x = _input(shape, layout, torch.float32, 0)
    idx = [0] * len(shape)
    idx[cdim] = 2
    x[tuple(idx)] = float("nan")  # a real (unmasked) element of channel 2
    m = None if mask is None else mask()
    assert nl.kernels.implementation(layer, x, m) == path
    old_mean, old_var = layer.running_mean.clone(), layer.running_var.clone()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        y = layer(x) if m is None else layer(x, mask=m)
    assert torch.isnan(y.select(cdim, 2)).all()
    others = [c for c in range(shape[cdim]) if c != 2]
    assert torch.isfinite(y.index_select(cdim, torch.tensor(others))).all()
    assert torch.isfinite(layer.running_mean).all() and torch.isfinite(layer.running_var).all()
    assert layer.running_mean[2] == old_mean[2] and layer.running_var[2] == old_var[2]
    assert (layer.running_mean[others] != old_mean[others]).all()
    ref = _randomize(make())
    with nl.use_reference(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y_ref = ref(x) if m is None else ref(x, mask=m)
    torch.testing.assert_close(y.index_select(cdim, torch.tensor(others)),
                               y_ref.index_select(cdim, torch.tensor(others)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_mean, ref.running_mean)
    torch.testing.assert_close(layer.running_var, ref.running_var)


# ----------------------------------------------------------------------------- 5. torch.compile
def _recording_inductor(seen: list[str]):
    from torch._inductor.compile_fx import compile_fx

    def backend(gm, example_inputs):
        seen.append(gm.print_readable(print_output=False))
        return compile_fx(gm, example_inputs)

    return backend


COMPILE = [
    pytest.param("LayerNorm", lambda: nl.LayerNorm(16), (3, 5, 16), None, "rows_fwd", id="LayerNorm"),
    pytest.param("RMSNorm", lambda: nl.RMSNorm(16), (3, 5, 16), None, "rows_fwd", id="RMSNorm"),
    pytest.param("GroupNorm", lambda: nl.GroupNorm(2, 4), (3, 4, 5, 5), None, "rows_fwd", id="GroupNorm"),
    pytest.param("LayerNorm2d", lambda: nl.LayerNorm2d(4), (3, 4, 5, 5), None, "chfirst_fwd", id="LayerNorm2d"),
    pytest.param("BatchNorm2d train", lambda: nl.BatchNorm2d(4), (3, 4, 5, 5), None, "batch_fwd",
                 id="BatchNorm2d train"),
    pytest.param("BatchNorm2d eval", lambda: nl.BatchNorm2d(4).eval(), (3, 4, 5, 5), None, "batch_fwd",
                 id="BatchNorm2d eval"),
    pytest.param("BatchNorm channel_dim=-1 masked", lambda: nl.BatchNorm(16, channel_dim=-1), (3, 7, 16), _seq_mask,
                 "batch_fwd", id="BatchNorm channel_dim=-1 masked"),
]


@pytest.mark.parametrize("name,make,shape,mask,op", COMPILE)
def test_compile_matches_eager(name, make, shape, mask, op):
    need_cpp()
    torch._dynamo.reset()
    eager = _randomize(make())
    compiled_layer = copy.deepcopy(eager)
    seen: list[str] = []
    fn = torch.compile(compiled_layer, backend=_recording_inductor(seen), fullgraph=True)
    m = None if mask is None else mask()
    for step in range(2):
        x = _input(shape, "contiguous", torch.float32, step)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya = fn(xa) if m is None else fn(xa, mask=m)
        yb = eager(xb) if m is None else eager(xb, mask=m)
        torch.testing.assert_close(ya, yb, rtol=1e-6, atol=1e-6)
        g = _randn(ya.shape, 7 + step, torch.float32)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-5, atol=1e-5)
    for (n, a), (_, b) in zip(compiled_layer.named_parameters(), eager.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-5, msg=lambda s: f"grad of {n}: {s}")
    for (n, a), (_, b) in zip(compiled_layer.named_buffers(), eager.named_buffers()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=lambda s: f"buffer {n}: {s}")
    assert seen and any(f"normlab.{op}" in g for g in seen), f"the compiled graph does not call normlab::{op}"


# ----------------------------------------------------------------------------- 6. add_norm
def _add_norm_run(norm, x, r, mode, gdtype, fn=nl.add_norm):
    """y, s = fn(x, r, norm) and the gradients of <y, gy> + <s, gs> (the residual stream continues)."""
    norm = copy.deepcopy(norm)
    xi, ri = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
    with nl.kernels.use(mode):
        y, s = fn(xi, ri, norm)
    gy = _randn(y.shape, 1, gdtype).to(y.dtype)
    gs = _randn(s.shape, 2, gdtype).to(s.dtype)
    torch.autograd.backward([y, s], [gy, gs])
    return {"y": y.detach(), "s": s.detach(), "dx": xi.grad, "dr": ri.grad,
            "grads": {n: p.grad for n, p in norm.named_parameters()}}


def _composition(x, r, norm):
    s = x + r
    return norm(s), s


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("make", [lambda: nl.LayerNorm(40), lambda: nl.RMSNorm(40),
                                  lambda: nl.LayerNorm(40, bias=False, zero_centered_gamma=True)],
                         ids=["LayerNorm", "RMSNorm", "LayerNorm zero_centered no bias"])
def test_add_norm_matches_composition(make, dtype, monkeypatch):
    need_cpp()
    norm = _randomize(make().to(dtype))
    x = _input((3, 5, 40), "contiguous", dtype, 0)
    r = _input((3, 5, 40), "contiguous", dtype, 1)
    fused_calls = []
    for op in ("rows", "rows_eager"):  # eager calls take rows_eager (autograd in C++), traced ones rows
        monkeypatch.setattr(ops, op, functools.partial(
            lambda real, *a, **k: fused_calls.append(k.get("residual") is not None) or real(*a, **k),
            getattr(ops, op)))
    fast = _add_norm_run(norm, x, r, "auto", dtype)
    assert fused_calls and all(fused_calls), "add_norm did not take the fused rows kernel"
    fused_calls.clear()
    ref = _add_norm_run(norm, x, r, "reference", dtype, fn=_composition)
    assert not fused_calls
    assert torch.equal(fast["s"], x + r), "the sum must be x + r rounded to x's dtype, exactly"
    ref64 = None
    if dtype in LOW:
        ref64 = _add_norm_run(copy.deepcopy(norm).double(), x.double(), r.double(), "reference", dtype,
                              fn=_composition)
    for k in ("y", "dx", "dr"):
        _agree(fast[k], ref[k], None if ref64 is None else ref64[k], dtype, k, "out" if k == "y" else "grad")
    for k in fast["grads"]:
        _agree(fast["grads"][k], ref["grads"][k], None if ref64 is None else ref64["grads"][k], dtype,
               f"grad of {k}", "grad")


def test_add_norm_falls_back_to_the_composition(monkeypatch):
    x, r = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
    fused = []
    for op in ("rows", "rows_eager"):
        monkeypatch.setattr(ops, op, functools.partial(
            lambda real, *a, **k: fused.append(k.get("residual") is not None) or real(*a, **k), getattr(ops, op)))
    y, s = nl.add_norm(x, r, nn.Identity())
    assert torch.equal(y, x + r) and torch.equal(s, x + r)
    tln = nn.LayerNorm(16)
    y, s = nl.add_norm(x, r, tln)
    assert torch.equal(s, x + r) and torch.equal(y, tln(x + r))
    # normlab layers without a fused path: running statistics are updated exactly once
    bn = nl.BatchNorm(16, channel_dim=-1)
    twin = copy.deepcopy(bn)
    y, s = nl.add_norm(x, r, bn)
    torch.testing.assert_close(y, twin(x + r))
    torch.testing.assert_close(bn.running_mean, twin.running_mean)
    assert int(bn.num_batches_tracked) == 1
    gn = nl.GroupNorm(2, 4)
    x4, r4 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(nl.add_norm(x4, r4, gn)[0], gn(x4 + r4))
    # a forward hook needs the norm's own forward to run
    ln = nl.LayerNorm(16)
    calls = []
    ln.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    y, s = nl.add_norm(x, r, ln)
    assert calls == [x.shape]
    torch.testing.assert_close(y, ln(x + r))
    # mismatched shapes: the composition (broadcasting as x + r does)
    ln2 = nl.LayerNorm(16)
    y, s = nl.add_norm(x, r[:1], ln2)
    assert torch.equal(s, x + r[:1])
    torch.testing.assert_close(y, ln2(x + r[:1]))
    # under the reference mode a normlab LayerNorm is the plain composition too
    with nl.use_reference():
        y, s = nl.add_norm(x, r, nl.LayerNorm(16))
    assert not any(fused), "a fallback case took the fused kernel"


# ----------------------------------------------------------------------------- 7. selection control
def _subprocess(code: str, value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, NORMLAB_KERNELS=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


_IMPL = ("import torch, normlab as nl; print(nl.kernels.mode(), nl.kernels.implementation(nl.LayerNorm(8), "
         "torch.randn(2, 8)))")


@pytest.mark.parametrize("value,expected", [("reference", "reference reference"),
                                            (" Native ", "native native:layer_norm")])
def test_env_var_sets_the_mode(value, expected):
    p = _subprocess(_IMPL, value)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[-2:] == expected.split()


def test_env_var_invalid_value_is_refused():
    p = _subprocess("import normlab", "bogus")
    assert p.returncode != 0
    assert "ValueError" in p.stderr and "NORMLAB_KERNELS" in p.stderr
    for m in nl.kernels.MODES:
        assert m in p.stderr.splitlines()[-1], p.stderr.splitlines()[-1]


def test_use_and_use_reference_nest_and_restore():
    start = nl.kernels.mode()
    ln, x = nl.LayerNorm(8), torch.randn(2, 8)
    with pytest.raises(ValueError, match="auto, reference, native, cpp"):
        with nl.kernels.use("bogus"):
            pass
    assert nl.kernels.mode() == start
    with nl.kernels.use("native"):
        assert nl.kernels.mode() == "native"
        assert nl.kernels.implementation(ln, x) == "native:layer_norm"
        with nl.use_reference():
            assert nl.kernels.mode() == "reference"
            assert nl.kernels.implementation(ln, x) == "reference"
            with nl.kernels.use("auto"):
                assert nl.kernels.mode() == "auto"
            assert nl.kernels.mode() == "reference"
        assert nl.kernels.mode() == "native"
        with pytest.raises(RuntimeError, match="boom"):
            with nl.use_reference():
                raise RuntimeError("boom")
        assert nl.kernels.mode() == "native"
    assert nl.kernels.mode() == start


def test_implementation_refuses_other_modules():
    with pytest.raises(TypeError, match="LayerNorm"):
        nl.kernels.implementation(nn.LayerNorm(8), torch.randn(2, 8))
    with pytest.raises(TypeError):
        nl.kernels.implementation(nn.Identity(), torch.randn(2, 8))


def test_auto_without_the_cpp_kernels(monkeypatch):
    """Where the C++ kernels could not be built: float32 takes the reference, bf16/fp16/float64 torch's kernels."""
    monkeypatch.setitem(build._state, "loaded", False)
    monkeypatch.setitem(build._state, "failure", "simulated: no compiler")
    ln = nl.LayerNorm(8)
    assert not nl.kernels.cpp_available()
    assert nl.kernels.implementation(ln, torch.randn(2, 8)) == "reference"
    for dt in (torch.float64, torch.bfloat16, torch.float16):
        assert nl.kernels.implementation(ln.to(dt), torch.randn(2, 8, dtype=dt)) == "native:layer_norm", dt
    assert nl.kernels.implementation(nl.RMSNorm(8).double(), torch.randn(2, 8, dtype=torch.float64)) == "reference"
    with nl.kernels.use("cpp"):
        assert nl.kernels.implementation(nl.LayerNorm(8), torch.randn(2, 8)) == "reference"
    ln = _randomize(nl.LayerNorm(8).double())
    x = torch.randn(3, 8, dtype=torch.float64)
    y = ln(x)
    with nl.use_reference():
        torch.testing.assert_close(y, ln(x), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- 8. torch's native kernels
NATIVE = [
    ("LayerNorm", lambda: nl.LayerNorm(24), (3, 5, 24), True, "native:layer_norm"),
    ("CNN LayerNorm", lambda: nl.LayerNorm((4, 5, 7)), (3, 4, 5, 7), True, "native:layer_norm"),
    ("LayerNorm no affine", lambda: nl.LayerNorm(24, elementwise_affine=False), (3, 5, 24), True,
     "native:layer_norm"),
    ("GroupNorm", lambda: nl.GroupNorm(3, 6), (2, 6, 5, 7), True, "native:group_norm"),
    ("BatchNorm2d train", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), True, "native:batch_norm"),
    ("BatchNorm2d train momentum=None", lambda: nl.BatchNorm2d(5, momentum=None), (4, 5, 3, 7), True,
     "native:batch_norm"),
    ("BatchNorm2d eval", lambda: nl.BatchNorm2d(5), (4, 5, 3, 7), False, "native:batch_norm"),
    ("BatchNorm2d no running stats", lambda: nl.BatchNorm2d(5, track_running_stats=False), (4, 5, 3, 7), True,
     "native:batch_norm"),
    ("BatchNorm1d (N,C) train", lambda: nl.BatchNorm1d(5), (9, 5), True, "native:batch_norm"),
    ("InstanceNorm2d", lambda: nl.InstanceNorm2d(5, affine=True), (3, 5, 4, 7), True, "native:instance_norm"),
    ("InstanceNorm2d eval running stats", lambda: nl.InstanceNorm2d(5, track_running_stats=True), (3, 5, 4, 7),
     False, "native:batch_norm"),
    # running statistics in training: only batch_norm's per-channel statistics feed them on the native tier
    ("InstanceNorm2d train running stats", lambda: nl.InstanceNorm2d(5, track_running_stats=True), (3, 5, 4, 7),
     True, "reference"),
    ("InstanceNorm2d affine train running stats",
     lambda: nl.InstanceNorm2d(5, affine=True, track_running_stats=True), (3, 5, 4, 7), True, "reference"),
    ("RMSNorm", lambda: nl.RMSNorm(24), (3, 5, 24), True, "reference"),
    ("LayerNorm2d", lambda: nl.LayerNorm2d(6), (2, 6, 5, 7), True, "reference"),
    ("BatchNorm channel_dim=-1", lambda: nl.BatchNorm(6, channel_dim=-1), (3, 7, 6), True, "reference"),
    ("BatchNorm masked", lambda: nl.BatchNorm(5), (4, 5, 9), True, "reference"),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name,make,shape,train,path",
                         [n if isinstance(n, type(pytest.param(0))) else pytest.param(*n, id=n[0]) for n in NATIVE])
def test_native_paths_match_reference(name, make, shape, train, path, dtype):
    layer = _randomize(make().to(dtype)).train(train)
    xs = [_input(shape, "contiguous", dtype, seed=k) for k in range(STEPS)]
    mask = _ncl_mask() if "masked" in name else None
    fast = _steps(layer, xs, mask, "native", dtype)
    if path is not None:
        assert fast["paths"] == [path] * STEPS
    ref = _steps(layer, xs, mask, "reference", dtype)
    if dtype in LOW:
        ref64 = _steps(copy.deepcopy(layer).double(), [x.double() for x in xs], mask, "reference", dtype)
    else:
        ref64 = {"y": None, "dx": None, "grads": {k: None for k in ref["grads"]},
                 "state": {k: None for k in ref["state"]}}
    _compare(fast, ref, ref64, dtype)


def test_native_layer_norm_is_imprecise_on_large_mean_float32():
    """Why float32 never takes torch's kernels in auto: on mean 1e4, std 1e-2 rows they are off by > 1e-3."""
    ln = nl.LayerNorm(4097)
    x = _hostile((4, 4097))
    want = F.layer_norm(x.double(), (4097,), eps=1e-5)
    with nl.kernels.use("native"):
        assert nl.kernels.implementation(ln, x) == "native:layer_norm"
        err_native = (ln(x).double() - want).abs().max().item()
    assert nl.kernels.implementation(ln, x) != "native:layer_norm"
    err_auto = (ln(x).double() - want).abs().max().item()
    assert err_native > 1e-3, f"torch's layer_norm is now precise here ({err_native:.2e}): revisit auto's choice"
    assert err_auto <= 1e-6, f"auto path error {err_auto:.2e}"


# ----------------------------------------------------------------------------- double backward
# a backward with create_graph=True recomputes the gradient through the reference, so it is differentiable
@pytest.mark.parametrize("make,shape", [(lambda: nl.LayerNorm(16), (4, 16)), (lambda: nl.RMSNorm(16), (4, 16)),
                                        (lambda: nl.GroupNorm(2, 4), (3, 4, 3, 3)),
                                        (lambda: nl.LayerNorm2d(4), (2, 4, 3, 3)),
                                        (lambda: nl.BatchNorm2d(3), (4, 3, 2, 2)),
                                        (lambda: nl.BatchNorm2d(3).eval(), (4, 3, 2, 2)),
                                        (lambda: nl.BatchNorm1d(3), (6, 3))],
                         ids=["LayerNorm", "RMSNorm", "GroupNorm", "LayerNorm2d", "BatchNorm2d", "BatchNorm2d-eval",
                              "BatchNorm1d"])
def test_double_backward_matches_reference(make, shape):
    need_cpp()
    layer = _randomize(make())
    x = _input(shape, "contiguous", torch.float32, 0)
    out = []
    for mode in ("auto", "reference"):
        xi = x.clone().requires_grad_(True)
        with nl.kernels.use(mode), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            lay = copy.deepcopy(layer)
            params = [p for p in lay.parameters()]
            y = lay(xi)
            (g,) = torch.autograd.grad((y ** 3).sum(), xi, create_graph=True)
            gg = torch.autograd.grad(g.square().sum(), [xi, *params])
        out.append(gg)
    assert out[0][0].abs().sum() > 0
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_double_backward_through_add_norm():
    need_cpp()
    ln = _randomize(nl.LayerNorm(16))
    x, r = _input((4, 16), "contiguous", torch.float32, 0), _input((4, 16), "contiguous", torch.float32, 1)
    out = []
    for mode in ("auto", "reference"):
        xi, ri = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
        with nl.kernels.use(mode):
            y, s = nl.add_norm(xi, ri, ln)
            gx, gr = torch.autograd.grad((y ** 3).sum() + (s ** 3).sum(), [xi, ri], create_graph=True)
            out.append(torch.autograd.grad((gx * gr).sum(), [xi, ri, ln.weight]))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---- streaming (non-temporal) stores of large outputs: the same bits as ordinary stores ----

def _stream_run(make, shape, dtype, fused: bool):
    norm = _randomize(make().to(dtype))
    x = _input(shape, "contiguous", dtype, 3).requires_grad_()
    r = _input(shape, "contiguous", dtype, 4).requires_grad_()
    if fused:
        y, s = nl.add_norm(x, r, norm)
        outs = [y, s]
    else:
        outs = [norm(x)]
    torch.manual_seed(0)  # the same upstream gradients in every run
    grads = [torch.randn_like(o) for o in outs]
    params = [p for p in norm.parameters()]
    inputs = [x, r] if fused else [x]
    got = torch.autograd.grad(outs, inputs + params, grads)
    return [o.detach() for o in outs] + list(got)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("make, shape, fused", [
    (lambda: nl.LayerNorm(4097), (40, 4097), False),  # several tasks: each thread's staging buffer and fence
    (lambda: nl.RMSNorm(1000), (70, 1000), True),
    (lambda: nl.LayerNorm(4097), (3, 4097), False),
    (lambda: nl.RMSNorm(3), (5, 3), False),
    (lambda: nl.LayerNorm(1, elementwise_affine=False), (6, 1), False),
    (lambda: nl.LayerNorm(768, bias=False, zero_centered_gamma=True), (2, 4, 768), False),
    (lambda: nl.GroupNorm(4, 8), (3, 8, 5, 7), False),
    (lambda: nl.InstanceNorm2d(6, affine=True), (2, 6, 9, 9), False),
    (lambda: nl.LayerNorm(4097), (3, 4097), True),
    (lambda: nl.RMSNorm(77), (4, 77), True),
], ids=["LayerNorm-40x4097", "add+RMSNorm-70x1000", "LayerNorm-4097", "RMSNorm-3", "LayerNorm-1-no-affine",
        "LayerNorm-zero-centered", "GroupNorm", "InstanceNorm", "add+LayerNorm", "add+RMSNorm"])
def test_streaming_stores_give_the_same_bits(make, shape, fused, dtype):
    need_cpp()
    torch.manual_seed(0)
    norm = make()
    assert nl.kernels.implementation(norm.to(dtype), _input(shape, "contiguous", dtype, 0)) == "cpp:rows"
    with nl.kernels.streaming_stores(0):  # every output streamed (rows start unaligned for odd lengths)
        streamed = _stream_run(make, shape, dtype, fused)
    with nl.kernels.streaming_stores(2 ** 62):  # none
        plain = _stream_run(make, shape, dtype, fused)
    for k, (a, b) in enumerate(zip(streamed, plain)):
        assert torch.equal(a, b), f"output {k}: streaming stores changed the values"
    if dtype in LOW:
        return  # the fast path's bf16/fp16 agreement with the reference is pinned by the tests above
    with nl.use_reference():
        ref = _stream_run(make, shape, dtype, fused)
    for k, (a, b) in enumerate(zip(streamed, ref)):
        _agree(a, b, None, dtype, f"output {k}", "out" if k < (2 if fused else 1) else "grad")


def test_streaming_threshold_default_and_restore():
    need_cpp()
    default = torch.ops.normlab.stream_bytes(-1)
    assert 1 << 20 <= default <= 1 << 30, f"default streaming threshold {default} bytes is not a cache size / 2"
    with nl.kernels.streaming_stores(123):
        assert torch.ops.normlab.stream_bytes(-1) == 123
    assert torch.ops.normlab.stream_bytes(-1) == default
    with pytest.raises(ValueError, match="min_bytes must be >= 0, got -1"):
        with nl.kernels.streaming_stores(-1):
            pass


@pytest.mark.parametrize("make, shape, path", [
    (lambda: nl.BatchNorm2d(4), (3, 4, 5, 6), "cpp:batch"),
    (lambda: nl.BatchNorm1d(4), (9, 4), "cpp:batch-cols"),
], ids=["BatchNorm2d", "BatchNorm1d"])
def test_eval_with_a_zero_running_variance_matches_the_reference(make, shape, path):
    """Running statistics of variance 0 are used as they are (x scaled by 1/sqrt(eps)), not read as a
    constant batch (whose output would be beta)."""
    need_cpp()
    layer = _randomize(make()).eval()
    with torch.no_grad():
        layer.running_var[1] = 0.0
    x = _input(shape, "contiguous", torch.float32, 0)
    assert nl.kernels.implementation(layer, x) == path
    y = layer(x)
    with nl.use_reference():
        ref = layer(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-4)
    assert (y.select(1, 1) - layer.bias[1]).abs().max() > 1.0  # far from beta: the channel was normalized


def test_streaming_stores_at_the_default_threshold_give_the_same_bits():
    """An output above the default threshold (half the last-level cache) streams without being asked to."""
    need_cpp()
    threshold = torch.ops.normlab.stream_bytes(-1)
    cols = 4096
    rows = threshold // (4 * cols) + 3  # float32 output just over the threshold
    x = torch.randn(rows, cols)
    ln = _randomize(nl.LayerNorm(cols))
    with torch.no_grad():
        streamed = ln(x)
        with nl.kernels.streaming_stores(2 ** 62):
            plain = ln(x)
    assert torch.equal(streamed, plain)


def test_masked_batchnorm_constant_channel_normalizes_the_padding():
    """A channel constant over its real elements has variance 0, but the padded elements (outside the statistics)
    are normalized too: they are not beta."""
    need_cpp()
    bn = nl.BatchNorm(1)
    x = torch.tensor([[[1.0, 1.0, 7.0]], [[1.0, 1.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, True, False]]).view(2, 1, 3)
    assert nl.kernels.implementation(bn, x, mask) == "cpp:batch"
    y = bn(x, mask)
    with nl.use_reference():
        ref = copy.deepcopy(bn)(x, mask)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-3)
    assert y[0, 0, 2] > 1000  # 6 / sqrt(eps)


@pytest.mark.parametrize("make, x", [
    (lambda: nl.BatchNorm2d(2, eps=0.0), torch.full((3, 2, 2, 2), 1.5)),
    (lambda: nl.BatchNorm1d(2, eps=0.0), torch.full((5, 2), -2.0)),
], ids=["BatchNorm2d", "BatchNorm1d"])
def test_batchnorm_constant_channel_with_eps_zero_is_nan_as_the_reference(make, x):
    """eps = 0 on a constant channel: 0 * inf, NaN in the reference; the fast path must not turn it into beta."""
    need_cpp()
    bn = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = bn(x)
        with nl.use_reference():
            ref = make()(x)
    assert torch.isnan(ref).all()
    assert torch.isnan(y).all()


def test_batchnorm_update_bumps_the_running_buffers_versions():
    """The fused training call writes running_mean/var in place: a graph that saved them must refuse to use them."""
    need_cpp()
    bn = nl.BatchNorm1d(3)
    x = torch.randn(8, 3)
    before = (bn.running_mean._version, bn.running_var._version)
    bn(x)
    assert bn.running_mean._version > before[0] and bn.running_var._version > before[1]

"""The triton row kernels as ``torch.library`` custom ops: fake (shape) implementations and autograd.

``normlab::triton_rows_fwd`` and ``normlab::triton_rows_bwd`` wrap :mod:`normlab.kernels.triton_rows`
(imported at the first call, so nothing here imports triton).  As custom ops they stay opaque
nodes under ``torch.compile`` (``fullgraph=True`` traces through them) instead of being traced
into.  The forward's autograd saves the normalized input (``x``, or the sum ``x + residual``) and
the float32 row statistics; a backward run with ``create_graph=True`` goes through the reference
instead, so second derivatives are exact (as the C++ ops do, :mod:`normlab.kernels.ops`).

:func:`available` says whether triton imports here (asked once, then remembered).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import ops

__all__ = ["available", "known_available", "rows_fwd", "rows_bwd", "rows"]

_importable: bool | None = None


def available() -> bool:
    """Whether ``import triton`` works in this process (the first call imports it; later calls remember).

    Asked eagerly when mode ``triton`` is entered (``NORMLAB_KERNELS=triton``, ``use("triton")``), so a
    compiled call finds the answer remembered (:func:`known_available`) instead of importing in a trace.
    """
    global _importable
    if _importable is None:
        try:
            import triton  # noqa: F401
        except Exception:  # an ImportError, or a triton broken for this platform: no triton path
            _importable = False
        else:
            _importable = True
    return _importable


def known_available() -> bool:
    """:func:`available` as remembered, without asking (False before anything asked): what a trace reads."""
    return _importable is True


def _rows2(t: Tensor) -> Tensor:
    """``t`` as contiguous rows of its last dim."""
    return t.contiguous().view(-1, t.shape[-1])


@torch.library.custom_op("normlab::triton_rows_fwd", mutates_args=())
def rows_fwd(x: Tensor, residual: Tensor | None, weight: Tensor | None, bias: Tensor | None, eps: float,
             center: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, s, stats)``: ``y`` the rows of ``x`` (of ``s = x + residual``) normalized over the last dim; ``s``
    empty without a residual; ``stats`` float32 ``(3, rows)`` = shift, corr, rstd (``(1, rows)`` = rstd)."""
    from . import triton_rows

    y, s, stats = triton_rows.forward(_rows2(x), None if residual is None else _rows2(residual), weight, bias,
                                      eps, center)
    return y.view(x.shape), (x.new_empty((0,)) if s is None else s.view(x.shape)), stats


@rows_fwd.register_fake
def _(x, residual, weight, bias, eps, center):
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    s = torch.empty_like(x) if residual is not None else x.new_empty((0,))
    return torch.empty_like(x), s, x.new_empty((3 if center else 1, rows), dtype=torch.float32)


@torch.library.custom_op("normlab::triton_rows_bwd", mutates_args=())
def rows_bwd(dy: Tensor, dsum: Tensor | None, src: Tensor, weight: Tensor | None, bias: Tensor | None,
             stats: Tensor, center: bool, need_weight: bool, need_bias: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(dx, dweight, dbias)`` of :func:`rows_fwd` (empty where not needed), the parameters' in their dtypes."""
    from . import triton_rows

    dx, dw, db = triton_rows.backward(_rows2(dy), None if dsum is None else _rows2(dsum), _rows2(src), weight,
                                      stats, center, need_weight, need_bias)
    return (dx.view(src.shape), src.new_empty((0,)) if dw is None or weight is None else dw.to(weight.dtype),
            src.new_empty((0,)) if db is None or bias is None else db.to(bias.dtype))


@rows_bwd.register_fake
def _(dy, dsum, src, weight, bias, stats, center, need_weight, need_bias):
    dw = torch.empty_like(weight) if need_weight and weight is not None else src.new_empty((0,))
    db = torch.empty_like(bias) if need_bias and bias is not None else src.new_empty((0,))
    return torch.empty_like(src), dw, db


def _setup(ctx, inputs, output) -> None:
    x, residual, weight, bias, eps, center = inputs
    _, s, stats = output
    ctx.save_for_backward(s if residual is not None else x, weight, bias, stats, x, residual)
    ctx.conf = (eps, center, residual is not None)
    ctx.mark_non_differentiable(stats)


def _backward(ctx, dy, dsum, _dstats):
    src, weight, bias, stats, x, residual = ctx.saved_tensors
    eps, center, fused = ctx.conf
    need = ctx.needs_input_grad  # x, residual, weight, bias, eps, center
    if not fused:
        dsum = None
    if dy is None:  # only the sum was differentiated: its gradient reaches both addends
        return dsum, dsum, None, None, None, None
    if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, through the reference
        n = x.shape[-1]
        gx, gw, gb, gr = ops._differentiable_grads(
            lambda: ops._rows_reference(x.reshape(-1, n), weight, bias, None if residual is None
                                        else residual.reshape(-1, n), 1, 1, eps, center).view(x.shape),
            [x, weight, bias, residual], [dy])
        if dsum is not None:
            gx = dsum if gx is None else gx + dsum
            gr = dsum if gr is None else gr + dsum
        return gx, gr, gw, gb, None, None
    dx, dw, db = torch.ops.normlab.triton_rows_bwd(dy, dsum, src, weight, bias, stats, center,
                                                   bool(need[2]), bool(need[3]))
    return (dx, dx if fused else None, dw if need[2] and weight is not None else None,
            db if need[3] and bias is not None else None, None, None)


rows_fwd.register_autograd(_backward, setup_context=_setup)


def rows(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, center: bool,
         residual: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Normalize ``x`` (or ``x + residual``) over its last dim by the triton kernels: ``(y, x + residual or None)``.

    ``weight``/``bias`` 1-D of the last dim's size, or None.
    """
    y, s, _ = torch.ops.normlab.triton_rows_fwd(x, residual, weight, bias, float(eps), center)
    return y, (s if residual is not None else None)

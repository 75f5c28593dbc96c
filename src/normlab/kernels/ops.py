"""Autograd and shape (fake) registrations of the C++ ops, and their Python entry points.

Each kernel family is a pair of ops in the ``normlab`` namespace
(``rows_fwd``/``rows_bwd``, ``chfirst_fwd``/``chfirst_bwd``,
``batch_fwd``/``batch_bwd``) registered by the C++ library, a fake
implementation here (so ``torch.compile`` and ``torch.export`` trace them
without running them), and a ``torch.autograd.Function`` that calls the
forward op and the backward op.  The forward returns the statistics it
used (float32, float64 for float64 input) so the modules can update running
statistics without recomputing them.

Statistics layouts: rows ``(3, R)`` = shift, corr, var per row (``(1, R)``
= mean square without centering); chfirst ``(3, N, S)`` / ``(1, N, S)``;
batch ``(4, C)`` = shift, corr, var, count per channel.  The mean is
``shift + corr``: they are kept apart for precision (see
:mod:`normlab.functional`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .call import Running

__all__ = ["register", "rows", "rows_eager", "chfirst", "batch", "batch_eager"]

_registered = False

# the eager ops' overloads, resolved once the library is loaded (register()): the cached path calls
# them directly, without torch.ops's attribute lookups
ROWS_AD: Any = None
BATCH_AD: Any = None


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def register() -> None:
    """Fake (meta) implementations of the ops, once the library that defines them is loaded."""
    global _registered, ROWS_AD, BATCH_AD
    if _registered:
        return
    ROWS_AD, BATCH_AD = torch.ops.normlab.rows_ad.default, torch.ops.normlab.batch_ad.default
    lib = torch.library

    @lib.register_fake("normlab::rows_fwd")
    def _rows_fwd(x, weight, bias, residual, groups, seg, eps, center):
        stats = x.new_empty((3 if center else 1, x.shape[0]), dtype=_acc(x.dtype))
        s = torch.empty_like(x) if residual is not None else x.new_empty((0,))
        return torch.empty_like(x), stats, s

    @lib.register_fake("normlab::rows_bwd")
    def _rows_bwd(dy, x, weight, stats, dsum, groups, seg, eps, center, need_weight, need_bias, bias):
        return (torch.empty_like(x), _param_like(weight, need_weight, x), _param_like(bias, need_bias, x))

    @lib.register_fake("normlab::chfirst_fwd")
    def _chfirst_fwd(x, weight, bias, eps, center):
        n, _, s = x.shape
        return torch.empty_like(x), x.new_empty((3 if center else 1, n, s), dtype=_acc(x.dtype))

    @lib.register_fake("normlab::chfirst_bwd")
    def _chfirst_bwd(dy, x, weight, stats, eps, center, need_weight, need_bias, bias):
        return (torch.empty_like(x), _param_like(weight, need_weight, x), _param_like(bias, need_bias, x))

    @lib.register_fake("normlab::batch_fwd")
    def _batch_fwd(x, weight, bias, mask, mean, var, eps, cols):
        given = mean is not None
        return torch.empty_like(x), x.new_empty((0 if given else 4, x.shape[1]), dtype=_acc(x.dtype))

    @lib.register_fake("normlab::batch_bwd")
    def _batch_bwd(dy, x, weight, mask, stats, eps, cols, need_weight, need_bias, bias):
        return (torch.empty_like(x), _param_like(weight, need_weight, x), _param_like(bias, need_bias, x))

    _registered = True


def _param_like(p: Tensor | None, want: bool, x: Tensor) -> Tensor:
    if not want:
        return x.new_empty((0,))  # an undefined tensor comes back from C++; fake it as empty
    return torch.empty_like(p) if p is not None else x.new_empty((0,))


def _needs_grad(*ts: Tensor | None) -> bool:
    """Whether autograd must record the call (else the forward op runs alone, without the Function's cost)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _grad(t: Tensor | None, want: bool) -> Tensor | None:
    return t if want and t is not None and t.numel() else None


# Higher-order derivatives: the C++ backward ops have no derivative of their own.  When a backward
# runs with create_graph=True (grad mode is on inside backward only then), the gradient is computed
# by autograd through the reference formula instead, so it is itself differentiable (gradient
# penalties, MAML, double backward) and equal to the first-order kernels' result.
def _differentiable_grads(ref, inputs: list, grads: list) -> list:
    need = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    with torch.enable_grad():
        out = ref()
        got = torch.autograd.grad(out, [inputs[i] for i in need], grads, create_graph=True, allow_unused=True)
    res: list = [None] * len(inputs)
    for i, g in zip(need, got):
        res[i] = g
    return res


def _rows_reference(x, weight, bias, residual, groups, seg, eps, center):
    from .. import functional as NF

    src = x if residual is None else x + residual
    R, L = src.shape
    shift, corr, var, _ = NF._stats(src, (1,), center, None)
    y = NF.normalize_with(src, shift, var, eps=eps, corr=corr).to(NF.compute_dtype(x.dtype))
    if weight is not None or bias is not None:
        K = L // seg

        def per_element(p):  # (groups * K,) -> the value at each (row, element), as the kernel indexes it
            return None if p is None else p.reshape(groups, K, 1).expand(groups, K, seg).reshape(1, groups, L)
        y = NF.affine(y.view(R // groups, groups, L), per_element(weight), per_element(bias)).view(R, L)
    return y.to(x.dtype)


# ------------------------------------------------------------------------------ rows
class _Rows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, groups, seg, eps, center):
        y, stats, s = torch.ops.normlab.rows_fwd(x, weight, bias, residual, groups, seg, eps, center)
        src = s if residual is not None else x
        ctx.save_for_backward(src, weight, bias, stats, x, residual)
        ctx.conf = (groups, seg, eps, center, residual is not None)
        ctx.mark_non_differentiable(stats)
        ctx.set_materialize_grads(False)  # no zero tensors for the outputs nobody differentiated
        return y, stats, s

    @staticmethod
    def backward(ctx, dy, _dstats, dsum):
        src, weight, bias, stats, x, residual = ctx.saved_tensors
        groups, seg, eps, center, fused = ctx.conf
        need = ctx.needs_input_grad
        if dy is None:  # only the sum was differentiated: it passes its gradient to both addends
            g = dsum if fused else None
            return g, None, None, g, None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, through the reference
            gx, gw, gb, gr = _differentiable_grads(
                lambda: _rows_reference(x, weight, bias, residual, groups, seg, eps, center),
                [x, weight, bias, residual], [dy])
            if fused and dsum is not None:
                gx = dsum if gx is None else gx + dsum
                gr = dsum if gr is None else gr + dsum
            return gx, gw, gb, gr, None, None, None, None
        dx, dw, db = torch.ops.normlab.rows_bwd(dy, src, weight, stats, dsum if fused else None, groups, seg, eps,
                                                center, bool(need[1]), bool(need[2]), bias)
        return dx, _grad(dw, need[1]), _grad(db, need[2]), (dx if fused else None), None, None, None, None


def rows(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, groups: int = 1, seg: int = 1, eps: float,
         center: bool, residual: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Normalize each row of a contiguous 2-D ``x`` (R, L): ``(y, stats, x + residual or None)``.

    The affine index of element i of row r is ``(r % groups) * (L // seg) + i // seg``.
    """
    if _needs_grad(x, weight, bias, residual):
        y, stats, s = _Rows.apply(x, weight, bias, residual, groups, seg, eps, center)
    else:
        y, stats, s = torch.ops.normlab.rows_fwd(x, weight, bias, residual, groups, seg, eps, center)
    return y, stats, (s if residual is not None else None)


def rows_eager(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, groups: int = 1, seg: int = 1,
               eps: float, center: bool, residual: Tensor | None = None,
               row: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`rows` for eager CPU calls: the op whose autograd is in C++ (``normlab::rows_ad``), no Python backward.

    ``row`` > 0: ``x`` (and ``residual``) of any shape, contiguous, read as rows of ``row`` elements; the
    outputs keep that shape (no view ops around the call: each costs about a microsecond with autograd
    on, as much as the kernel of a small LayerNorm saves).  Not for tracing (torch.compile uses
    :func:`rows`, whose autograd.Function it can trace).
    """
    y, stats, s = torch.ops.normlab.rows_ad(x, weight, bias, residual, groups, seg, eps, center, row)
    return y, stats, (s if residual is not None else None)


# --------------------------------------------------------------------------- chfirst
class _ChFirst(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, center):
        y, stats = torch.ops.normlab.chfirst_fwd(x, weight, bias, eps, center)
        ctx.save_for_backward(x, weight, bias, stats)
        ctx.conf = (eps, center)
        ctx.mark_non_differentiable(stats)
        ctx.set_materialize_grads(False)
        return y, stats

    @staticmethod
    def backward(ctx, dy, _dstats):
        x, weight, bias, stats = ctx.saved_tensors
        eps, center = ctx.conf
        need = ctx.needs_input_grad
        if dy is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, through the reference
            from .. import functional as NF

            def ref():
                view = (1, x.shape[1], 1)
                return NF.normalize(x, (1,), None if weight is None else weight.reshape(view),
                                    None if bias is None else bias.reshape(view), center=center, eps=eps)
            return (*_differentiable_grads(ref, [x, weight, bias], [dy]), None, None)
        dx, dw, db = torch.ops.normlab.chfirst_bwd(dy, x, weight, stats, eps, center, bool(need[1]), bool(need[2]),
                                                   bias)
        return dx, _grad(dw, need[1]), _grad(db, need[2]), None, None


def chfirst(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, eps: float, center: bool
            ) -> tuple[Tensor, Tensor]:
    """Normalize a contiguous (N, C, S) ``x`` over C at every (n, s): ``(y, stats)``."""
    if _needs_grad(x, weight, bias):
        return _ChFirst.apply(x, weight, bias, eps, center)
    return torch.ops.normlab.chfirst_fwd(x, weight, bias, eps, center)


# ----------------------------------------------------------------------------- batch
class _Batch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mask, mean, var, eps, cols):
        y, stats = torch.ops.normlab.batch_fwd(x, weight, bias, mask, mean, var, eps, cols)
        used = stats if mean is None else torch.stack([mean, var]).to(_acc(x.dtype))
        ctx.save_for_backward(x, weight, bias, mask, used)
        ctx.conf = (eps, cols)
        ctx.mark_non_differentiable(stats)
        ctx.set_materialize_grads(False)
        return y, stats

    @staticmethod
    def backward(ctx, dy, _dstats):
        x, weight, bias, mask, used = ctx.saved_tensors
        eps, cols = ctx.conf
        need = ctx.needs_input_grad
        if dy is None:
            return None, None, None, None, None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient, through the reference
            return (*_differentiable_grads(lambda: _batch_reference(x, weight, bias, mask, used, eps, cols),
                                           [x, weight, bias], [dy]), None, None, None, None, None)
        dx, dw, db = torch.ops.normlab.batch_bwd(dy, x, weight, mask, used, eps, cols, bool(need[1]), bool(need[2]),
                                                 bias)
        return dx, _grad(dw, need[1]), _grad(db, need[2]), None, None, None, None, None


def _batch_reference(x, weight, bias, mask, used, eps, cols):
    from .. import functional as NF

    c = x.shape[1]
    view = (1, c) if cols else (1, c, 1)
    w = None if weight is None else weight.reshape(view)
    b = None if bias is None else bias.reshape(view)
    if used.shape[0] == 2:  # given (running) statistics: constants
        return NF.normalize_with(x, used[0].reshape(view), used[1].reshape(view), w, b, eps=eps)
    dims = (0,) if cols else (0, 2)
    m = None if mask is None else (mask.reshape(-1, 1) if cols else mask.reshape(x.shape[0], 1, x.shape[2]))
    return NF.normalize(x, dims, w, b, eps=eps, mask=m)


def batch(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, eps: float, cols: bool,
          mask: Tensor | None = None, mean: Tensor | None = None, var: Tensor | None = None
          ) -> tuple[Tensor, Tensor]:
    """BatchNorm of a contiguous (N, C, S) (or, ``cols``, (M, C)) ``x``: ``(y, stats)``.

    With ``mean``/``var`` (running statistics) nothing is reduced and no
    gradient flows through the statistics; ``stats`` is then empty.
    """
    if _needs_grad(x, weight, bias):
        return _Batch.apply(x, weight, bias, mask, mean, var, eps, cols)
    return torch.ops.normlab.batch_fwd(x, weight, bias, mask, mean, var, eps, cols)


def batch_eager(x: Tensor, weight: Tensor | None, bias: Tensor | None, *, eps: float, cols: bool,
                mean: Tensor | None = None, var: Tensor | None = None, update: Running | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`batch` (no mask) for eager CPU calls: the op whose autograd is in C++ (``normlab::batch_ad``).

    With ``update`` (running statistics, in training: batch statistics) the same op folds the batch
    statistics into them (the rule of :class:`~normlab.kernels.call.Running`).  Returns ``(y, stats, bad)``:
    ``bad`` is empty unless some channel's batch statistics were non-finite (then the bool per channel).
    Not for tracing (torch.compile uses :func:`batch`, whose autograd.Function it can trace).
    """
    if update is None:
        return torch.ops.normlab.batch_ad(x, weight, bias, mean, var, eps, cols)
    momentum = -1.0 if update.momentum is None else float(update.momentum)
    return torch.ops.normlab.batch_ad(x, weight, bias, None, None, eps, cols, update.mean, update.var,
                                      update.batches, momentum, update.min_count, update.count_batch)

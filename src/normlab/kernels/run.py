"""The calls: a chosen path run on a described call, tensors back (no module in here).

:func:`run` is the general path (any call :func:`~normlab.kernels.choose.choose` gave a fast path,
masks and parameters laid along the input's dims); :func:`run_planned` is a layer's common call (no
mask, eager, a C++ kernel, its validation remembered by the layer), written flat: it runs on every
call of every layer, and a call that follows a matmul finds its code and data out of cache, where
each Python frame costs microseconds (a BatchNorm call on a tiny tensor after a 64 MB pass: 127 us
through normlab's layer, 87 us through torch's, 40 us the op itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from . import ops, triton_ops
from .call import Call, Running
from .choose import Layout, cpp_available, prod

__all__ = ["run", "run_planned", "run_add_norm", "run_add_norm_triton", "streaming_stores"]

Moments = tuple  # (mean, var, count) shaped as normlab.functional.moments's, or None


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.reshape(-1)


def _keep_shape(x: Tensor, rdims) -> list[int]:
    return [1 if d in rdims else s for d, s in enumerate(x.shape)]


def run(name: str, lay: Layout | None, call: Call, x: Tensor, mask: Tensor | None, weight: Tensor | None,
        bias: Tensor | None, eps: float) -> tuple[Tensor, Moments | None]:
    """Run ``call`` on the path ``name`` (from ``choose``): ``(y, moments)``.

    ``moments`` is None or the batch statistics ``(mean, var, count)`` for the caller's running
    statistics and count check.  ``weight``/``bias`` are laid along ``call.pdims``.
    """
    if lay is not None:
        return _run_cpp(call, x, mask, weight, bias, eps, lay)
    if name == "triton:rows":
        return triton_ops.rows(x, _flat(weight), _flat(bias), eps, call.center)[0], None
    return _run_native(call, x, weight, bias, eps, name.split(":", 1)[1])


def _run_cpp(call: Call, x, mask, weight, bias, eps, lay):
    kind = lay[0]
    w, b = _flat(weight), _flat(bias)
    rdims, pdims = call.rdims, call.pdims
    if kind == "rows":
        _, R, L, groups, seg = lay
        y, stats, _ = ops.rows(x.contiguous().view(R, L), w, b, groups=groups, seg=seg, eps=eps, center=call.center)
        y = y.view(x.shape)
        if call.groups is not None or call.running is None:
            return y, None
        keep = _keep_shape(x, rdims)
        return y, ((stats[0] + stats[1]).view(keep), stats[2].view(keep), prod([x.shape[d] for d in rdims]))
    if kind == "chfirst":
        _, N, C, S = lay
        y, _ = ops.chfirst(x.contiguous().view(N, C, S), w, b, eps=eps, center=call.center)
        return y.view(x.shape), None
    given = None if call.batch_stats or call.running is None else call.running
    mean, var = (None, None) if given is None else (given.mean, given.var)
    if kind == "batch-cols":
        _, M, C, permuted = lay
        xv = x.movedim(1, -1) if permuted else x
        # (N, *S) or (*, ) without the channel: the row order of channels-last and channel-last layouts
        m = None if mask is None else mask.expand(x.shape).select(pdims[0], 0)
        y, stats = ops.batch(xv.contiguous().view(M, C), w, b, eps=eps, cols=True,
                             mask=None if m is None else m.reshape(M), mean=mean, var=var)
        y = y.view(xv.shape)
        y = y.movedim(-1, 1) if permuted else y
    else:
        _, N, C, S = lay
        m = None if mask is None else mask.expand(x.shape).select(1, 0).reshape(N, S)
        y, stats = ops.batch(x.contiguous().view(N, C, S), w, b, eps=eps, cols=False, mask=m, mean=mean, var=var)
        y = y.view(x.shape)
    if given is not None:
        return y, None
    view = [1] * x.ndim
    view[pdims[0]] = x.shape[pdims[0]]
    count = prod([x.shape[d] for d in rdims]) if mask is None else stats[3].view(view)
    return y, ((stats[0] + stats[1]).view(view), stats[2].view(view), count)


def _run_native(call: Call, x, weight, bias, eps, name):
    w, b = _flat(weight), _flat(bias)
    rdims = call.rdims
    if name == "layer_norm":
        shape = tuple(x.shape[rdims[0]:])
        return F.layer_norm(x, shape, None if w is None else w.view(shape), None if b is None else b.view(shape),
                            eps), None
    if name == "group_norm":
        return F.group_norm(x, call.groups, w, b, eps), None
    if name == "instance_norm":
        return F.instance_norm(x, None, None, w, b, True, 0.0, eps), None
    # batch_norm
    running = call.running
    if not call.batch_stats and running is not None:
        return F.batch_norm(x, running.mean, running.var, w, b, False, 0.0, eps), None
    if not call.update or running is None:
        return F.batch_norm(x, None, None, w, b, True, 0.0, eps), None
    y, mean, invstd = torch.native_batch_norm(x, w, b, None, None, True, 0.0, eps)
    view = [1] * x.ndim
    view[1] = x.shape[1]
    var = (invstd.detach().double().square().reciprocal() - eps).clamp_min(0).to(mean.dtype)
    return y, (mean.detach().view(view), var.view(view), prod([x.shape[d] for d in rdims]))


def run_planned(lay: Layout, x: Tensor, w: Tensor | None, b: Tensor | None, eps: float, center: bool,
                running: Running | None, batch_stats: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A remembered C++ call on ``x`` as it is (no mask, eager): ``(y, stats, bad)``.

    ``w``/``b`` in the layer's own shape.  ``stats`` are the rows kernel's (``(3, R)``: shift, corr,
    var) for a caller that keeps running statistics over rows, else None.  BatchNorm's kernels use
    ``running``'s statistics (``batch_stats`` False) or fold the batch's into them (True), in the same
    op; ``bad`` is then None or the per-feature flags of non-finite batch statistics (empty when none).
    """
    kind = lay[0]
    xc = x if x.is_contiguous() else x.contiguous()
    if kind == "rows":  # eager: the op with its autograd in C++ (no Python in the backward)
        _, R, L, groups, seg = lay  # L > 0: empty inputs get no plan
        y, stats, _ = ops.ROWS_AD(xc, w, b, None, groups, seg, eps, center, L)  # rows of L, x's shape
        return y, stats, None
    if kind == "chfirst":
        _, N, C, S = lay
        return ops.chfirst(xc.view(N, C, S), w, b, eps=eps, center=center)[0].view(x.shape), None, None
    cols = kind == "batch-cols"
    permuted = cols and lay[3]
    xm = x.movedim(1, -1) if permuted else xc  # channels-last NCHW: the channel last, as (M, C) reads it
    # as (M, C) when the channel is not x's last dim ((N, C, 1, ...)), and for a permuted plan (reshape:
    # a view of a channels-last x; a copy of another non-contiguous one, whose signature is the same)
    xv = xm.reshape(lay[1], lay[2]) if permuted or (cols and xc.shape[-1] != lay[2]) else xm
    if running is None or not batch_stats:  # batch statistics kept nowhere, or given (running) statistics
        mean, var = (None, None) if running is None else (running.mean, running.var)
        y, _, bad = ops.BATCH_AD(xv, w, b, mean, var, eps, cols)
    else:  # batch statistics, folded into the running ones by the same op
        y, _, bad = ops.batch_eager(xv, w, b, eps=eps, cols=cols, update=running)
    if permuted:
        y = y.view(xm.shape).movedim(-1, 1)
    elif y.shape != x.shape:
        y = y.view(x.shape)
    return y, None, bad


def run_add_norm(lay: Layout, x: Tensor, residual: Tensor, w: Tensor | None, b: Tensor | None, eps: float,
             center: bool, eager: bool) -> tuple[Tensor, Tensor]:
    """``(norm(x + residual), x + residual)`` by the fused rows kernel (``lay``: rows, one group, seg 1)."""
    _, R, L, _, _ = lay
    if eager:  # the op with its autograd in C++, on x as it is (rows of L elements)
        y, _, s = ops.rows_eager(x.contiguous(), w, b, eps=eps, center=center, residual=residual.contiguous(), row=L)
        assert s is not None  # a residual was given
        return y, s
    x2, r2 = x.contiguous().view(R, L), residual.contiguous().view(R, L)  # traced: the 2-d op
    y, _, s = ops.rows(x2, w, b, eps=eps, center=center, residual=r2)
    assert s is not None
    return y.view(x.shape), s.view(x.shape)


def run_add_norm_triton(x: Tensor, residual: Tensor, w: Tensor | None, b: Tensor | None, eps: float,
                        center: bool) -> tuple[Tensor, Tensor]:
    """``(norm(x + residual), x + residual)`` by the triton row kernels (``w``/``b`` of the last dim's size)."""
    y, s = triton_ops.rows(x, _flat(w), _flat(b), eps, center, residual=residual)
    assert s is not None  # a residual was given
    return y, s


@contextmanager
def streaming_stores(min_bytes: int) -> Iterator[None]:
    """Write outputs of at least ``min_bytes`` bytes with non-temporal stores inside the block.

    The row kernels (``cpp:rows``) write an output too large for the last-level cache with
    streaming stores, which skip reading each line before writing it (a third of the memory
    traffic of a large LayerNorm's forward); the default threshold is half the last-level cache.
    The values are bit for bit the same either way; ``0`` streams every output (as the tests
    do, to compare both), a huge value streams none.
    """
    if min_bytes < 0:
        raise ValueError(f"min_bytes must be >= 0, got {min_bytes}")
    if not cpp_available():
        yield
        return
    old = torch.ops.normlab.stream_bytes(int(min_bytes))
    try:
        yield
    finally:
        torch.ops.normlab.stream_bytes(old)

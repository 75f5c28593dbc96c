"""Fast paths under normlab's layers, chosen per call; the reference in :mod:`normlab.functional` stays the truth.

For each call a :class:`~normlab.Norm` asks :func:`dispatch` for the fastest
implementation that computes exactly its semantics (dims, affine dims,
centering, mask, running statistics, precision):

- ``cpp:*``: normlab's fused C++ CPU kernels (``csrc/``, built once per
  machine, see :mod:`normlab.kernels.build`), with the reference's corrected
  two-pass statistics, for contiguous (or channels-last BatchNorm) CPU
  tensors: ``cpp:rows`` (LayerNorm, RMSNorm, CNN LayerNorm, GroupNorm,
  InstanceNorm, fused add + norm), ``cpp:chfirst`` (LayerNorm2d, per-position
  RMSNorm), ``cpp:batch`` / ``cpp:batch-cols`` (BatchNorm, masked too, in
  training and with running statistics).
- ``native:*``: torch's fused kernels (``F.layer_norm``, ``F.group_norm``,
  ``F.batch_norm``, ``F.instance_norm``) where the configuration is exactly
  theirs and their precision is acceptable: float64 inputs, and bf16/fp16
  inputs, whose own rounding (2^-8 / 2^-11) dwarfs the error of torch's
  float32 Welford statistics.  On float32 rows with a large mean and a small
  spread (mean 1e4, std 1e-2) torch's kernels are off by ~0.1 normalized
  units, so float32 never takes them unless asked (``native`` mode).
- ``reference``: :mod:`normlab.functional`, for everything else (masked
  GroupNorm/InstanceNorm, arbitrary dims, SyncBatchNorm across processes,
  tensors on devices without a fast path, empty tensors).

Selection is visible and controllable::

    >>> import torch, normlab as nl
    >>> ln = nl.LayerNorm(64)
    >>> x = torch.randn(8, 64)
    >>> nl.kernels.implementation(ln, x) in ("cpp:rows", "reference")
    True
    >>> with nl.use_reference():
    ...     nl.kernels.implementation(ln, x)
    'reference'

Eager calls take ops whose autograd is in C++ (``normlab::rows_ad``,
``normlab::batch_ad``: no Python in the backward; BatchNorm's running
statistics are folded in by the same op); under ``torch.compile`` the
layers use autograd.Functions over the same kernels, which the compiler
traces.  Row outputs larger than half the last-level cache are written with
streaming stores (:func:`streaming_stores`; the same bits either way).

``NORMLAB_KERNELS`` sets the default mode: ``auto`` (default: the
order above), ``reference`` (only the reference), ``native`` (torch's
kernels wherever the configuration is theirs, any dtype, then the
reference), ``cpp`` (normlab's kernels where they apply, then the
reference).  :func:`use` sets it for a block of code, in the thread that runs the block (each thread
starts in the default mode).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from . import build, ops

__all__ = ["MODES", "mode", "use", "use_reference", "implementation", "dispatch", "cpp_available", "add_norm",
           "streaming_stores"]

MODES = ("auto", "reference", "native", "cpp")


class _ThreadModes(threading.local):
    """The :func:`use` blocks in force, per thread: one thread's block never changes what another runs."""

    def __init__(self) -> None:
        self.stack: list[str] = []


_modes = _ThreadModes()


def _env_mode() -> str:
    m = os.environ.get("NORMLAB_KERNELS", "auto").strip().lower() or "auto"
    if m not in MODES:
        raise ValueError(f"NORMLAB_KERNELS must be one of {', '.join(MODES)}, got {m!r}")
    return m


_default = _env_mode()


def mode() -> str:
    """The kernel mode in force: the innermost :func:`use`, else ``NORMLAB_KERNELS`` (read at import)."""
    stack = _modes.stack
    return stack[-1] if stack else _default


@contextmanager
def use(m: str) -> Iterator[None]:
    """Run a block with kernel mode ``m`` (one of :data:`MODES`)."""
    if m not in MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(MODES)}, got {m!r}")
    stack = _modes.stack
    stack.append(m)
    try:
        yield
    finally:
        stack.pop()


def use_reference():
    """Run a block with normlab's reference implementation only (``use("reference")``)."""
    return use("reference")


def cpp_available(*, build_now: bool = True) -> bool:
    """Whether the C++ kernels are loaded (building them first if ``build_now`` and not tried yet)."""
    if build.loaded():
        return True
    if not build_now or build.failure() is not None:
        return False
    return build.load()


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


def _prod(xs) -> int:
    """Product of ints (a plain loop: torch.compile traces it)."""
    n = 1
    for v in xs:
        n *= v
    return n


_CPP_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW = (torch.bfloat16, torch.float16)


def _transformed() -> bool:
    """Inside a torch.func transform (grad, vmap, jvp, ...) or a forward-mode AD level (eager).

    The C++ ops have neither batching rules nor forward derivatives, so such calls take torch's own
    ops (its native kernel where that applies, else the reference), which have both.
    """
    return torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0


def _cpp_ready(x: Tensor) -> bool:
    if torch.jit.is_tracing():
        return False  # torch.jit.trace records autograd Functions as Python ops it cannot compare or save
    if not torch.compiler.is_compiling() and _transformed():
        return False
    if x.device.type != "cpu" or x.dtype not in _CPP_DTYPES or x.numel() == 0:
        return False
    if build.loaded():
        return True
    if torch.compiler.is_compiling():
        return False  # never build inside a trace; the traced reference has the same semantics
    return cpp_available()


def _native_ok(x: Tensor, m: str) -> bool:
    if x.numel() == 0 or not x.dtype.is_floating_point:
        return False
    return m == "native" or (m == "auto" and (x.dtype in _LOW or x.dtype == torch.float64))


# ------------------------------------------------------------------------ layout
def _layout(norm, x: Tensor, mask: Tensor | None, rdims: tuple[int, ...], pdims: tuple[int, ...],
            batch_stats: bool) -> tuple | None:
    """Which kernel family computes this call, and its geometry; None if none does.

    ``("rows", R, L, groups, seg)``, ``("chfirst", N, C, S)``,
    ``("batch", N, C, S)``, ``("batch-cols", M, C, permuted)``.
    """
    nd = x.ndim
    affine = norm.weight is not None or norm.bias is not None
    trailing = rdims == tuple(range(rdims[0], nd)) if rdims else False
    if norm.num_groups is not None:
        if mask is not None or not batch_stats or rdims != tuple(range(1, nd)) or nd < 2:
            return None
        if norm.group_dim % nd != 1 or (affine and pdims != (1,)):
            return None
        n, c, g = x.shape[0], x.shape[1], norm.num_groups
        spatial = _prod(x.shape[2:])
        return ("rows", n * g, (c // g) * spatial, g, spatial)
    if batch_stats and mask is None and trailing:
        k = rdims[0]
        L = _prod(x.shape[k:])
        if not affine or pdims == rdims:
            return ("rows", _prod(x.shape[:k]), L, 1, 1)
        if pdims == (1,) and k == 2:  # InstanceNorm: a row per (n, c), the affine per channel
            return ("rows", x.shape[0] * x.shape[1], L, x.shape[1], L)
        if pdims == (1,) and k == 1:  # one statistic per sample over (C, *), the affine per channel
            return ("rows", x.shape[0], L, 1, L // x.shape[1])
        return None
    if batch_stats and mask is None and rdims == (1,) and nd >= 3 and (not affine or pdims == (1,)):
        return ("chfirst", x.shape[0], x.shape[1], _prod(x.shape[2:]))
    # per-channel transforms: BatchNorm's batch statistics, or given (running) statistics
    if len(pdims) != 1 or not norm.center:
        return None
    p = pdims[0]
    per_channel = rdims == tuple(d for d in range(nd) if d != p)
    if batch_stats and not per_channel:
        return None
    if not batch_stats and norm.running_mean is None:
        return None
    if p == nd - 1:
        return ("batch-cols", _prod(x.shape[:-1]), x.shape[-1], False)
    if p != 1 or nd < 2:
        return None
    spatial = _prod(x.shape[2:])
    if spatial == 1:
        return ("batch-cols", x.shape[0], x.shape[1], False)
    if nd in (4, 5) and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last if nd == 4 else torch.channels_last_3d):
        return ("batch-cols", x.numel() // x.shape[1], x.shape[1], True)
    return ("batch", x.shape[0], x.shape[1], spatial)


def _native_name(norm, x: Tensor, mask: Tensor | None, rdims, pdims, batch_stats: bool) -> str | None:
    """The torch kernel whose configuration is exactly this call's, if any."""
    if mask is not None:
        return None
    nd = x.ndim
    affine = norm.weight is not None or norm.bias is not None
    if norm.num_groups is not None:
        ok = batch_stats and nd >= 2 and rdims == tuple(range(1, nd)) and norm.group_dim % nd == 1 \
            and (not affine or pdims == (1,)) and norm.center
        return "group_norm" if ok else None
    if norm._updates_running_stats() and not (len(pdims) == 1 and pdims[0] == 1 and
                                              rdims == tuple(d for d in range(nd) if d != 1)):
        return None  # only batch_norm's per-channel statistics feed running statistics here
    if batch_stats and norm.center and rdims == tuple(range(rdims[0], nd)) and (not affine or pdims == rdims):
        return "layer_norm"
    if not norm.center or len(pdims) != 1 or pdims[0] != 1 or nd < 2:
        return None
    per_channel = rdims == tuple(d for d in range(nd) if d != 1)
    if (per_channel and batch_stats) or (not batch_stats and norm.running_mean is not None):
        return "batch_norm"
    if batch_stats and nd >= 3 and rdims == tuple(range(2, nd)):
        return "instance_norm"
    return None


def _choose(norm, x: Tensor, mask: Tensor | None, rdims, pdims) -> tuple[str, tuple | None]:
    m = mode()
    if m == "reference" or not norm._fast_paths_allowed():
        return "reference", None
    batch_stats = norm._use_batch_stats()
    if m in ("auto", "cpp") and _cpp_ready(x):
        lay = _layout(norm, x, mask, rdims, pdims, batch_stats)
        if lay is not None:
            return "cpp:" + lay[0], lay
    if m in ("auto", "native") and _native_ok(x, m):
        name = _native_name(norm, x, mask, rdims, pdims, batch_stats)
        if name is not None:
            return "native:" + name, None
    return "reference", None


def implementation(layer, x: Tensor, mask: Tensor | None = None) -> str:
    """The implementation ``layer(x, mask=mask)`` would use now: ``"cpp:..."``, ``"native:..."`` or ``"reference"``."""
    if not hasattr(layer, "_fast_paths_allowed"):
        raise TypeError(f"implementation() takes a normlab normalization layer, got {type(layer).__name__}")
    x, mask = layer._as_batched(x, mask)
    rdims, pdims = layer._layout(x)
    return _choose(layer, x, layer._mask(mask, x, pdims), rdims, pdims)[0]


# ------------------------------------------------------------------- cached path
_MAX_PLANS = 32


def _cached_plan(norm, x: Tensor):
    """``(layout, rdims, pdims)``, or False (no kernel), remembered on the layer per input signature.

    None when the cached path does not apply to this call at all (not an eager CPU tensor, tracing,
    SyncBatchNorm across processes).  The first call with a given shape, dtype, contiguity, mode and
    training state validates the input exactly as the general path does (same errors).
    """
    # torch._C._is_tracing is what torch.jit.is_tracing asks, without its two Python frames; it is
    # only reached when not compiling (dynamo sees is_compiling() first)
    if not isinstance(x, Tensor) or not x.is_cpu or torch.compiler.is_compiling() or torch._C._is_tracing() \
            or _transformed() or not norm._fast_paths_allowed():
        return None
    key = (x.shape, x.dtype, x.is_contiguous(), norm.training, norm.frozen, norm.track_running_stats,
           mode())
    try:
        plan = norm.__dict__["_kernel_plans"][key]
    except KeyError:
        plan = _new_plan(norm, x, key)
    return plan


def _new_plan(norm, x: Tensor, key: tuple):
    plans = norm.__dict__.setdefault("_kernel_plans", {})
    rdims, pdims = norm._layout(x)
    name, lay = _choose(norm, x, None, rdims, pdims)
    if lay is not None:
        _check_shape_count(norm, x, None, rdims)
    plan = (lay, rdims, pdims) if lay is not None else False
    if len(plans) >= _MAX_PLANS:
        plans.clear()
    plans[key] = plan
    return plan


def _params(norm, x: Tensor) -> tuple[Tensor | None, Tensor | None, float]:
    """The layer's (weight, bias, eps) as this call uses them: detached when frozen, 1 + weight when zero-centered."""
    p = norm._parameters  # read directly (Module.__getattr__ costs ~0.4 us a lookup); a property (a
    w = p["weight"] if "weight" in p else norm.weight  # parametrization) is not in there
    b = p["bias"] if "bias" in p else norm.bias
    if norm.frozen:
        w = None if w is None else w.detach()
        b = None if b is None else b.detach()
    if w is not None and norm.zero_centered_gamma:
        w = w + 1
    eps = norm.eps
    return w, b, (eps if eps is not None else norm._eps(x))


def cached_forward(norm, x: Tensor) -> Tensor | None:
    """The common call (no mask, eager, a C++ kernel applies) with its validation done once per input shape.

    Returns None when this call should take the general path.  Written flat, with the ops called
    directly and x passed in its own shape (the ops read it as rows or channels, no view ops): this
    runs on every call of every layer, and a call that follows a matmul finds its code and data out
    of cache, where each Python frame costs microseconds (a BatchNorm call on a tiny tensor after a
    64 MB pass: 127 us through normlab's layer, 87 us through torch's, 40 us the op itself).
    """
    plan = _cached_plan(norm, x)
    if not plan:
        return None
    lay, rdims, pdims = plan
    w, b, eps = _params(norm, x)
    kind = lay[0]
    xc = x if x.is_contiguous() else x.contiguous()
    if kind == "rows":  # eager: the op with its autograd in C++ (no Python in the backward)
        _, R, L, groups, seg = lay  # L > 0: empty inputs get no plan
        y, stats, _ = ops.ROWS_AD(xc, w, b, None, groups, seg, eps, norm.center, L)  # rows of L, x's shape
        if norm.track_running_stats and norm.training and not norm.frozen:
            keep = _keep_shape(x, rdims)
            norm._update_running_stats((stats[0] + stats[1]).view(keep), stats[2].view(keep),
                                       _prod([x.shape[d] for d in rdims]), rdims, pdims)
        return y
    if kind == "chfirst":
        _, N, C, S = lay
        return ops.chfirst(xc.view(N, C, S), w, b, eps=eps, center=norm.center)[0].view(x.shape)
    # Norm._use_batch_stats / _updates_running_stats, inline (no subclass overrides them)
    if norm.track_running_stats and not (norm.training and not norm.frozen):  # given (running) statistics
        mean, var, update = norm.running_mean, norm.running_var, None
    else:  # batch statistics, folded into the running ones by the same op when they are kept
        mean, var, update = None, None, (norm if norm.track_running_stats else None)
    cols = kind == "batch-cols"
    permuted = cols and lay[3]
    xm = x.movedim(1, -1) if permuted else xc  # channels-last NCHW: the channel last, as (M, C) reads it
    # as (M, C) when the channel is not x's last dim ((N, C, 1, ...)), and for a permuted plan (reshape:
    # a view of a channels-last x; a copy of another non-contiguous one, whose signature is the same)
    xv = xm.reshape(lay[1], lay[2]) if permuted or (cols and xc.shape[-1] != lay[2]) else xm
    if update is None:
        y, _, bad = ops.BATCH_AD(xv, w, b, mean, var, eps, cols)
    else:
        y, _, bad = ops.batch_eager(xv, w, b, eps=eps, cols=cols, update=update)
    if permuted:
        y = y.view(xm.shape).movedim(-1, 1)
    elif y.shape != x.shape:
        y = y.view(x.shape)
    if bad.numel():
        norm._warn_non_finite(bad)
    return y


# ------------------------------------------------------------------------ running
def dispatch(norm, x: Tensor, mask: Tensor | None, rdims: tuple[int, ...], pdims: tuple[int, ...],
             weight: Tensor | None, bias: Tensor | None, eps: float):
    """Run ``norm``'s call on a fast path, or return None for the reference.

    Returns ``(y, moments)`` where ``moments`` is None or the batch statistics
    ``(mean, var, count)`` shaped as :func:`normlab.functional.moments`'s (the
    module checks the count and updates its running statistics from them).
    ``weight``/``bias`` are the parameters already laid along ``pdims``.
    """
    name, lay = _choose(norm, x, mask, rdims, pdims)
    if name == "reference":
        return None
    _check_shape_count(norm, x, mask, rdims)
    if lay is not None:
        return _run_cpp(norm, x, mask, rdims, pdims, weight, bias, eps, lay)
    return _run_native(norm, x, rdims, pdims, weight, bias, eps, name.split(":", 1)[1])


def _check_shape_count(norm, x: Tensor, mask: Tensor | None, rdims) -> None:
    """The reference's refusal of statistics from too few values, where the count is the shape's."""
    if norm._use_batch_stats() and norm.num_groups is None and mask is None and x.numel():
        norm._check_count(_prod([x.shape[d] for d in rdims]), x)


def _flat(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.reshape(-1)


def _keep_shape(x: Tensor, rdims) -> list[int]:
    return [1 if d in rdims else s for d, s in enumerate(x.shape)]


def _run_cpp(norm, x, mask, rdims, pdims, weight, bias, eps, lay):
    kind = lay[0]
    w, b = _flat(weight), _flat(bias)
    batch_stats = norm._use_batch_stats()
    if kind == "rows":
        _, R, L, groups, seg = lay
        y, stats, _ = ops.rows(x.contiguous().view(R, L), w, b, groups=groups, seg=seg, eps=eps, center=norm.center)
        y = y.view(x.shape)
        if norm.num_groups is not None or not norm.track_running_stats:
            return y, None
        keep = _keep_shape(x, rdims)
        return y, ((stats[0] + stats[1]).view(keep), stats[2].view(keep), _prod([x.shape[d] for d in rdims]))
    if kind == "chfirst":
        _, N, C, S = lay
        y, _ = ops.chfirst(x.contiguous().view(N, C, S), w, b, eps=eps, center=norm.center)
        return y.view(x.shape), None
    given = None if batch_stats else (norm.running_mean, norm.running_var)
    if kind == "batch-cols":
        _, M, C, permuted = lay
        xv = x.movedim(1, -1) if permuted else x
        # (N, *S) or (*, ) without the channel: the row order of channels-last and channel-last layouts
        m = None if mask is None else mask.expand(x.shape).select(pdims[0], 0)
        y, stats = ops.batch(xv.contiguous().view(M, C), w, b, eps=eps, cols=True,
                             mask=None if m is None else m.reshape(M),
                             mean=None if given is None else given[0], var=None if given is None else given[1])
        y = y.view(xv.shape)
        y = y.movedim(-1, 1) if permuted else y
    else:
        _, N, C, S = lay
        m = None if mask is None else mask.expand(x.shape).select(1, 0).reshape(N, S)
        y, stats = ops.batch(x.contiguous().view(N, C, S), w, b, eps=eps, cols=False, mask=m,
                             mean=None if given is None else given[0], var=None if given is None else given[1])
        y = y.view(x.shape)
    if given is not None:
        return y, None
    view = [1] * x.ndim
    view[pdims[0]] = x.shape[pdims[0]]
    count = _prod([x.shape[d] for d in rdims]) if mask is None else stats[3].view(view)
    return y, ((stats[0] + stats[1]).view(view), stats[2].view(view), count)


def _run_native(norm, x, rdims, pdims, weight, bias, eps, name):
    import torch.nn.functional as F

    w, b = _flat(weight), _flat(bias)
    batch_stats = norm._use_batch_stats()
    if name == "layer_norm":
        shape = tuple(x.shape[rdims[0]:])
        return F.layer_norm(x, shape, None if w is None else w.view(shape), None if b is None else b.view(shape),
                            eps), None
    if name == "group_norm":
        return F.group_norm(x, norm.num_groups, w, b, eps), None
    if name == "instance_norm":
        return F.instance_norm(x, None, None, w, b, True, 0.0, eps), None
    # batch_norm
    if not batch_stats:
        return F.batch_norm(x, norm.running_mean, norm.running_var, w, b, False, 0.0, eps), None
    if not norm._updates_running_stats() or norm.running_mean is None:
        return F.batch_norm(x, None, None, w, b, True, 0.0, eps), None
    y, mean, invstd = torch.native_batch_norm(x, w, b, None, None, True, 0.0, eps)
    view = [1] * x.ndim
    view[1] = x.shape[1]
    var = (invstd.detach().double().square().reciprocal() - eps).clamp_min(0).to(mean.dtype)
    return y, (mean.detach().view(view), var.view(view), _prod([x.shape[d] for d in rdims]))


# ---------------------------------------------------------------------- add_norm
def _has_hooks(m) -> bool:
    """Hooks on the norm (instruments reading its input) need its own forward to run."""
    from torch.nn.modules import module as _m

    return bool(m._forward_hooks or m._forward_pre_hooks or _m._global_forward_hooks
                or _m._global_forward_pre_hooks)


def add_norm(x: Tensor, residual: Tensor, norm) -> tuple[Tensor, Tensor]:
    """``(norm(x + residual), x + residual)``, fused into one pass where a kernel can.

    The residual add of a pre-LN block and the norm that follows it read
    and write the residual stream once instead of twice (as Transformer
    Engine, Liger and flash-attn's fused add + LayerNorm do on GPU).  The sum
    is rounded to ``x``'s dtype and normalized from that rounded value,
    exactly as the unfused code computes it, so both paths agree.  Any
    module works: one without a fused path (or with forward hooks, which
    need its own forward to run) gets the plain composition.

    Example::

        >>> import torch, normlab as nl
        >>> ln = nl.LayerNorm(16)
        >>> x, r = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        >>> y, s = nl.add_norm(x, r, ln)
        >>> torch.allclose(s, x + r) and torch.allclose(y, ln(x + r), atol=1e-6)
        True
    """
    if hasattr(norm, "_prepared") and not _has_hooks(norm) and isinstance(x, Tensor) and isinstance(residual, Tensor) \
            and x.shape == residual.shape and x.dtype == residual.dtype and norm.num_groups is None \
            and not norm.track_running_stats:
        plan = _cached_plan(norm, x)
        if plan is None:  # compiling or tracing: validate on every call
            rdims, pdims = norm._layout(x)
            lay = _choose(norm, x, None, rdims, pdims)[1]
        else:
            lay = plan[0] if plan else None
        if lay is not None and lay[0] == "rows" and lay[3] == 1 and lay[4] == 1:
            _, R, L, _, _ = lay
            w, b, eps = _params(norm, x)
            if plan:  # eager: the op with its autograd in C++, on x as it is (rows of L elements)
                y, _, s = ops.rows_eager(x.contiguous(), w, b, eps=eps, center=norm.center,
                                         residual=residual.contiguous(), row=L)
                assert s is not None  # a residual was given
                return y, s
            x2, r2 = x.contiguous().view(R, L), residual.contiguous().view(R, L)  # traced: the 2-d op
            y, _, s = ops.rows(x2, w, b, eps=eps, center=norm.center, residual=r2)
            return y.view(x.shape), s.view(x.shape)
    s = x + residual
    return norm(s), s

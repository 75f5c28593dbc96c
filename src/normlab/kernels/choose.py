"""The choice of path for one call: normlab's C++ kernels, torch's native ones, or the reference.

:func:`choose` takes a :class:`~normlab.kernels.call.Call` and the input and returns the path's
name and, for the C++ kernels, the geometry they read the input as (the "layout").
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import forward_ad as _forward_ad

from . import build, triton_ops
from . import mode as _mode
from .call import Call
from .mode import mode

__all__ = ["cpp_available", "choose", "implementation", "eager", "prod", "Layout", "triton_applies"]

#: ``("rows", R, L, groups, seg)``, ``("chfirst", N, C, S)``, ``("batch", N, C, S)``, ``("batch-cols", M, C, permuted)``
Layout = tuple

_CPP_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_LOW = (torch.bfloat16, torch.float16)


def cpp_available(*, build_now: bool = True) -> bool:
    """Whether the C++ kernels are loaded (building them first if ``build_now`` and not tried yet)."""
    if build.loaded():
        return True
    if not build_now or build.failure() is not None:
        return False
    return build.load()


def prod(xs) -> int:
    """Product of ints (a plain loop: torch.compile traces it)."""
    n = 1
    for v in xs:
        n *= v
    return n


def transformed() -> bool:
    """Inside a torch.func transform (grad, vmap, jvp, ...) or a forward-mode AD level (eager).

    The C++ ops have neither batching rules nor forward derivatives, so such calls take torch's own
    ops (its native kernel where that applies, else the reference), which have both.
    """
    return torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0


def eager(x) -> str | None:
    """The kernel mode in force when a call on ``x`` is an eager CPU one, whose choice of path may be
    remembered per input signature (and mode); None while compiling, tracing (torch.jit.trace), or
    under a torch.func transform.  Written flat: it runs on every call of every layer.
    """
    # torch._C._is_tracing is what torch.jit.is_tracing asks, without its two Python frames; it is
    # only reached when not compiling (dynamo sees is_compiling() first)
    if isinstance(x, Tensor) and x.is_cpu and not torch.compiler.is_compiling() and not torch._C._is_tracing() \
            and not torch._C._are_functorch_transforms_active() and _forward_ad._current_level < 0:
        stack = _mode._modes.stack  # mode(), inline
        return stack[-1] if stack else _mode._default
    return None


def _cpp_ready(x: Tensor) -> bool:
    if torch.jit.is_tracing():
        return False  # torch.jit.trace records autograd Functions as Python ops it cannot compare or save
    if not torch.compiler.is_compiling() and transformed():
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


def layout(call: Call, x: Tensor, mask: Tensor | None) -> Layout | None:
    """Which C++ kernel family computes this call, and its geometry; None if none does."""
    nd = x.ndim
    rdims, pdims = call.rdims, call.pdims
    trailing = rdims == tuple(range(rdims[0], nd)) if rdims else False
    if call.groups is not None:
        if mask is not None or not call.batch_stats or rdims != tuple(range(1, nd)) or nd < 2:
            return None
        if call.group_dim % nd != 1 or (call.affine and pdims != (1,)):
            return None
        n, c, g = x.shape[0], x.shape[1], call.groups
        spatial = prod(x.shape[2:])
        return ("rows", n * g, (c // g) * spatial, g, spatial)
    if call.batch_stats and mask is None and trailing:
        k = rdims[0]
        L = prod(x.shape[k:])
        if not call.affine or pdims == rdims:
            return ("rows", prod(x.shape[:k]), L, 1, 1)
        if pdims == (1,) and k == 2:  # InstanceNorm: a row per (n, c), the affine per channel
            return ("rows", x.shape[0] * x.shape[1], L, x.shape[1], L)
        if pdims == (1,) and k == 1:  # one statistic per sample over (C, *), the affine per channel
            return ("rows", x.shape[0], L, 1, L // x.shape[1])
        return None
    if call.batch_stats and mask is None and rdims == (1,) and nd >= 3 and (not call.affine or pdims == (1,)):
        return ("chfirst", x.shape[0], x.shape[1], prod(x.shape[2:]))
    # per-channel transforms: BatchNorm's batch statistics, or given (running) statistics
    if len(pdims) != 1 or not call.center:
        return None
    p = pdims[0]
    per_channel = rdims == tuple(d for d in range(nd) if d != p)
    if call.batch_stats and not per_channel:
        return None
    if not call.batch_stats and call.running is None:
        return None
    if p == nd - 1:
        return ("batch-cols", prod(x.shape[:-1]), x.shape[-1], False)
    if p != 1 or nd < 2:
        return None
    spatial = prod(x.shape[2:])
    if spatial == 1:
        return ("batch-cols", x.shape[0], x.shape[1], False)
    if nd in (4, 5) and not x.is_contiguous() and x.is_contiguous(
            memory_format=torch.channels_last if nd == 4 else torch.channels_last_3d):
        return ("batch-cols", x.numel() // x.shape[1], x.shape[1], True)
    return ("batch", x.shape[0], x.shape[1], spatial)


_TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_applies(call: Call, x: Tensor, mask: Tensor | None, device_type: str | None = None) -> bool:
    """Whether the triton row kernels compute this call exactly: a LayerNorm or RMSNorm over the last
    dim (affine over it or none, batch statistics, no mask) of a non-empty float32/bf16/fp16 input on
    ``device_type`` (default: ``x``'s) CUDA, where triton imports.  Tests pass ``device_type="cuda"``
    with CPU tensors to check the decision on a machine without a GPU.
    """
    if (device_type or x.device.type) != "cuda" or x.dtype not in _TRITON_DTYPES or x.numel() == 0:
        return False
    last = x.ndim - 1
    if mask is not None or call.groups is not None or not call.batch_stats or call.running is not None \
            or call.rdims != (last,) or (call.affine and call.pdims != (last,)):
        return False
    if torch.jit.is_tracing() or (not torch.compiler.is_compiling() and transformed()):
        return False  # the custom ops have no batching rules or forward derivatives, and jit.trace cannot save them
    return triton_ops.known_available() if torch.compiler.is_compiling() else triton_ops.available()


def native_name(call: Call, x: Tensor, mask: Tensor | None) -> str | None:
    """The torch kernel whose configuration is exactly this call's, if any."""
    if mask is not None:
        return None
    nd = x.ndim
    rdims, pdims = call.rdims, call.pdims
    if call.groups is not None:
        ok = call.batch_stats and nd >= 2 and rdims == tuple(range(1, nd)) and call.group_dim % nd == 1 \
            and (not call.affine or pdims == (1,)) and call.center
        return "group_norm" if ok else None
    if call.update and not (len(pdims) == 1 and pdims[0] == 1 and rdims == tuple(d for d in range(nd) if d != 1)):
        return None  # only batch_norm's per-channel statistics feed running statistics here
    if call.batch_stats and call.center and rdims == tuple(range(rdims[0], nd)) and (not call.affine or pdims == rdims):
        return "layer_norm"
    if not call.center or len(pdims) != 1 or pdims[0] != 1 or nd < 2:
        return None
    per_channel = rdims == tuple(d for d in range(nd) if d != 1)
    if (per_channel and call.batch_stats) or (not call.batch_stats and call.running is not None):
        return "batch_norm"
    if call.batch_stats and nd >= 3 and rdims == tuple(range(2, nd)):
        return "instance_norm"
    return None


def choose(call: Call | None, x: Tensor, mask: Tensor | None = None) -> tuple[str, Layout | None]:
    """The path of this call in the mode in force: ``("cpp:<family>", layout)``, ``("native:<op>", None)``,
    ``("triton:rows", None)`` or ``("reference", None)`` (also for ``call=None``: a layer that allows no fast
    path).  Mode ``triton`` takes the triton kernels where :func:`triton_applies`, else the ``auto`` choice."""
    m = mode()
    if m == "reference" or call is None:
        return "reference", None
    if m == "triton":
        if triton_applies(call, x, mask):
            return "triton:rows", None
        m = "auto"
    if m in ("auto", "cpp") and _cpp_ready(x):
        lay = layout(call, x, mask)
        if lay is not None:
            return "cpp:" + lay[0], lay
    if m in ("auto", "native") and _native_ok(x, m):
        name = native_name(call, x, mask)
        if name is not None:
            return "native:" + name, None
    return "reference", None


def implementation(layer, x: Tensor, mask: Tensor | None = None) -> str:
    """The implementation ``layer(x, mask=mask)`` would use now: ``"cpp:..."``, ``"native:..."``, ``"triton:rows"``
    or ``"reference"``.

    ``layer`` is a normlab normalization layer: it describes its call (``layer.kernel_call``, which
    validates the input as its forward does) and this says which path that call takes.
    """
    describe = getattr(layer, "kernel_call", None)
    if describe is None:
        raise TypeError(f"implementation() takes a normlab normalization layer, got {type(layer).__name__}")
    call, x, mask = describe(x, mask)
    return choose(call, x, mask)[0]

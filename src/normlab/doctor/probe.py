"""What a module computes: is it a normalizer, and over which elements does it pool its statistics?

A module is treated as a normalizer by measurement, not by its class name:
on a random input of the shape it saw, one row of its Jacobian gives the
elements that share the statistics of one output element (the pooled set,
as claim C04's experiment reads it), and two more calls tell whether the
output is invariant to scaling the input (every normalizer is) and to
shifting it (those that re-center: LayerNorm yes, RMSNorm no).  Class
knowledge (torch.nn and normlab layers) only fills in what a probe cannot
see: eps, which parameter is gamma, a module that was never called.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Probe", "probe_module", "class_kind", "is_sync_batchnorm", "is_elementwise_class", "is_weighted_class",
           "eps_of", "gamma_of", "effective_gamma", "owns_matrices", "CONTAINERS"]

#: container classes: never a normalizer themselves
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict)

_WEIGHTED = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag,
             nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase, nn.Transformer, nn.TransformerEncoderLayer,
             nn.TransformerDecoderLayer)

_ELEMENTWISE = (nn.Identity, nn.modules.dropout._DropoutNd, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
                nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
                nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.PReLU, nn.RReLU,
                nn.Hardshrink, nn.Softshrink)

#: attribute names under which norm implementations keep eps
_EPS_ATTRS = ("eps", "variance_epsilon", "epsilon", "norm_eps", "layer_norm_eps", "rms_norm_eps")
#: parameter names under which norm implementations keep gamma
_GAMMA_NAMES = ("weight", "gamma", "scale", "g")


def _own_forward(m: nn.Module, base: type) -> bool:
    """Whether ``m``'s class keeps ``base``'s forward (a subclass that overrides it may pool other axes)."""
    return getattr(type(m), "forward", None) is getattr(base, "forward", None)


def class_kind(m: nn.Module) -> str | None:
    """The normalizer family a known class computes, or None for classes normlab does not know.

    For torch's classes only when the forward is torch's own (torchvision's
    ``LayerNorm2d`` subclasses ``nn.LayerNorm`` but permutes, so its axes are
    left to the probe).
    """
    from ..layers import (BatchNorm, GroupNorm, InstanceNorm, LayerNorm, LayerNorm2d, Norm, RMSNorm,
                          ScaleNorm)

    if isinstance(m, BatchNorm):
        return "batch"
    if isinstance(m, InstanceNorm):
        return "instance"
    if isinstance(m, GroupNorm):
        return "group"
    if isinstance(m, LayerNorm2d):
        return "layer (channels-first)"
    if isinstance(m, RMSNorm):
        return "rms"
    if isinstance(m, LayerNorm):
        return "layer"
    if isinstance(m, ScaleNorm):
        return "rms"
    if isinstance(m, Norm):
        batch = m.keep_dims is not None and 0 not in m.keep_dims or m.dims is not None and 0 in m.dims
        return "batch" if batch else ("layer" if m.center else "rms")
    torch_kinds: list[tuple[type, str]] = [
        (nn.modules.batchnorm._BatchNorm, "batch"), (nn.modules.instancenorm._InstanceNorm, "instance"),
        (nn.GroupNorm, "group"), (nn.LayerNorm, "layer"),
    ]
    if hasattr(nn, "RMSNorm"):
        torch_kinds.append((nn.RMSNorm, "rms"))
    for cls, kind in torch_kinds:
        if isinstance(m, cls):
            base = next(b for b in type(m).__mro__ if b.__module__.startswith("torch.nn") and "forward" in vars(b))
            return kind if _own_forward(m, base) else "norm"
    return None


def is_sync_batchnorm(m: nn.Module) -> bool:
    from ..layers import SyncBatchNorm

    return isinstance(m, (nn.SyncBatchNorm, SyncBatchNorm))


def is_elementwise_class(m: nn.Module) -> bool:
    """torch modules that act on each element on its own (activations, dropout, identity)."""
    from ..layers import DyT

    return isinstance(m, _ELEMENTWISE + (DyT,))


def is_weighted_class(m: nn.Module) -> bool:
    """Layers with weight matrices (linear, conv, embedding, attention, recurrent): never normalizers."""
    return isinstance(m, _WEIGHTED) or type(m).__name__ in ("Conv1D",)  # Hugging Face GPT-2's linear


def owns_matrices(m: nn.Module) -> bool:
    """Whether a module holds matrix-shaped parameters anywhere below it (a block, not a norm)."""
    return any(p.ndim >= 2 and sum(s > 1 for s in p.shape) >= 2 for p in m.parameters())


def eps_of(m: nn.Module) -> tuple[Any, str | None]:
    """``(eps, attribute name)``: the module's eps, ``(None, name)`` where None means the dtype's epsilon,
    ``(None, None)`` if it has none that normlab can read."""
    for attr in _EPS_ATTRS:
        if hasattr(m, attr):
            value = getattr(m, attr)
            if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
                return value, attr
            if isinstance(value, Tensor) and value.numel() == 1:
                return float(value), attr
    return None, None


def gamma_of(m: nn.Module) -> tuple[str, nn.Parameter] | None:
    """The parameter that scales the normalized output (gamma), by the names implementations use."""
    params = dict(m.named_parameters(recurse=False))
    for name in _GAMMA_NAMES:
        p = params.get(name)
        if isinstance(p, Tensor) and p.is_floating_point():
            return name, p
    return None


def _zero_centered(m: nn.Module) -> bool:
    return bool(getattr(m, "zero_centered_gamma", False))


def effective_gamma(m: nn.Module) -> Tensor | None:
    """gamma as the layer multiplies by it (``1 + weight`` for zero-centered gamma), or None."""
    found = gamma_of(m)
    if found is None:
        return None
    w = found[1].detach()
    return w + 1 if _zero_centered(m) else w


@dataclass
class Probe:
    """What one module computes on inputs of ``shape`` (see :func:`probe_module`)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    training: bool
    dead: bool = False  # the output does not depend on the input at all
    elementwise: bool = False  # each output element depends on its own input element only
    moves: bool = False  # each output element is one input element, from elsewhere (a permute / transpose)
    normalizer: bool = False  # pools a set of elements and is invariant to scaling them
    pooled: tuple[int, ...] = ()  # dims fully pooled into one statistic
    grouped: dict[int, int] = field(default_factory=dict)  # dim -> elements per group, where partly pooled
    center: bool = False  # invariant to a shift of the input (re-centers)
    eval_pooled: tuple[int, ...] | None = None  # pooled dims in eval mode (batch norms only)
    zeros_nonfinite: bool = False  # an all-zero input gives NaN/inf (eps 0 or too small for the dtype)
    zeros_dtype: torch.dtype | None = None  # the dtype that all-zero input was in (the module's own)
    error: str | None = None

    @property
    def batch_coupled(self) -> bool:
        """Pools over dim 0, the batch: a sample's output depends on the other samples (BatchNorm)."""
        return self.normalizer and 0 in self.pooled

    def describe(self) -> str:
        dims = sorted(set(self.pooled) | set(self.grouped))
        parts = [f"dim {d}" + (f" (groups of {self.grouped[d]})" if d in self.grouped else "") for d in dims]
        return f"pools {', '.join(parts)} of {tuple(self.shape)}" + ("" if self.center else ", no re-centering")


def _float_arg(t: Any, dtype: torch.dtype) -> Any:
    if isinstance(t, Tensor) and t.is_floating_point():
        return t.to(dtype)
    return t


def _caller(m: nn.Module, args: tuple, kwargs: dict, x_key: int | str, dtype: torch.dtype):
    args = tuple(_float_arg(a, dtype) for a in args)
    kwargs = {k: _float_arg(v, dtype) for k, v in kwargs.items()}

    def call(x: Tensor) -> Any:
        a, kw = list(args), dict(kwargs)
        if isinstance(x_key, int):
            a += [None] * (x_key + 1 - len(a))
            a[x_key] = x
        else:
            kw[x_key] = x
        return m(*a, **kw)

    return call


def _has_other_tensors(args: tuple, kwargs: dict, x_key: int | str) -> bool:
    items = [a for i, a in enumerate(args) if i != x_key] + [v for k, v in kwargs.items() if k != x_key]
    return any(isinstance(t, Tensor) for t in items)


def _pooled_box(mask: Tensor, at: tuple[int, ...]) -> tuple[tuple[int, ...], dict[int, int]] | None:
    """(fully pooled dims, {partly pooled dim: count}) if the nonzero set is a box around ``at``, else None."""
    nz = mask.nonzero()
    if nz.numel() == 0:
        return None
    pooled, grouped = [], {}
    box = 1
    for d, size in enumerate(mask.shape):
        idx = torch.unique(nz[:, d])
        n = idx.numel()
        box *= n
        if n > 1 and int(idx[-1] - idx[0]) + 1 != n:  # not contiguous: not a group of neighbours
            return None
        if not int(idx[0]) <= at[d] <= int(idx[-1]):
            return None
        if n == size and size > 1:
            pooled.append(d)
        elif n > 1:
            grouped[d] = n
    if box != int(mask.sum()):
        return None
    return tuple(pooled), grouped


def _close(a: Any, b: Any, rel: float) -> bool:
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(((a - b).abs().max() <= rel * (scale + 1e-30)).item()) if a.numel() else True


def probe_module(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, *, args: tuple = (),
                 kwargs: dict | None = None, x_key: int | str = 0, training: bool = True,
                 device: torch.device | None = None, seed: int = 0) -> Probe:
    """Measure what ``module`` computes on a random input of ``shape`` (the module itself is not touched).

    A deep copy runs in float64 (float32 if it refuses), in training mode by
    default, so that a BatchNorm shows its batch statistics.  ``args`` and
    ``kwargs`` are the other arguments of the recorded call, with the input
    at ``x_key``.  With no other tensor arguments the batch is resized to 2..8
    samples (a batch of one would hide BatchNorm's pooling over the batch).
    """
    kwargs = kwargs or {}
    shape = tuple(shape)
    if not _has_other_tensors(args, kwargs, x_key) and len(shape) >= 2:
        shape = (min(max(shape[0], 2), 8),) + shape[1:]
    result = Probe(shape=shape, dtype=dtype, training=training)
    work = None
    for cdt in (torch.float64, torch.float32):
        try:
            work = copy.deepcopy(module).to(cdt)
            result = _probe(work, shape, cdt, args, kwargs, x_key, training, device, seed)
            break
        except Exception as e:  # noqa: BLE001 -- a module that cannot run here is simply not a normalizer
            result = Probe(shape=shape, dtype=dtype, training=training, error=f"{type(e).__name__}: {e}")
    if result.normalizer and work is not None:
        result.zeros_nonfinite = _zeros_nonfinite(module, shape, dtype, args, kwargs, x_key, training, device)
        result.zeros_dtype = dtype
    return result


def _probe(m: nn.Module, shape, cdt, args, kwargs, x_key, training, device, seed) -> Probe:
    m.train(training)
    call = _caller(m, args, kwargs, x_key, cdt)
    g = torch.Generator().manual_seed(seed)
    x = (4 * torch.randn(shape, generator=g, dtype=cdt) + 2.0).to(device)  # variance 16: eps hardly matters
    noise = torch.randn(shape, generator=g, dtype=cdt).to(device)
    out = Probe(shape=shape, dtype=cdt, training=training)
    with torch.no_grad():
        y0 = call(x)
        if not isinstance(y0, Tensor) or y0.shape != x.shape:
            out.error = "output is not one tensor of the input's shape"
            return out
        y1 = call(x + 0.5 * noise)
    if _close(y1, y0, 1e-12):
        out.dead = True
        return out
    at = tuple(min(i + 1, s - 1) for i, s in enumerate(shape))  # distinct coordinates: a permute moves it
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = call(xg)
        if not y.requires_grad:
            out.error = "output has no gradient to its input"
            return out
        (grad,) = torch.autograd.grad(y[at], xg, allow_unused=True)
    if grad is None:
        out.dead = True
        return out
    mask = grad != 0
    if int(mask.sum()) <= 1:
        out.elementwise = bool(mask[at]) or int(mask.sum()) == 0
        out.moves = not out.elementwise
        return out
    box = _pooled_box(mask, at)
    if box is None:
        return out
    pooled, grouped = box
    with torch.no_grad():  # loose enough for a module that computes in bf16 inside
        scale_inv = _close(call(3.0 * x), y0, 3e-2)
        shift_inv = _close(call(x + 12.0), y0, 3e-2)
    out.pooled, out.grouped, out.center = pooled, grouped, shift_inv
    out.normalizer = scale_inv
    if out.normalizer and 0 in pooled and training:
        ev = copy.deepcopy(m).eval()
        ecall = _caller(ev, args, kwargs, x_key, cdt)
        xe = x.clone().requires_grad_(True)
        with torch.enable_grad():
            ye = ecall(xe)
            if ye.requires_grad:
                (ge,) = torch.autograd.grad(ye[at], xe, allow_unused=True)
                eb = _pooled_box(ge != 0, at) if ge is not None else None
                out.eval_pooled = eb[0] if eb else ()
            else:
                out.eval_pooled = ()
    return out


def _zeros_nonfinite(module, shape, dtype, args, kwargs, x_key, training, device) -> bool:
    """Whether an all-zero input (the constant rows eps exists for, C29) gives NaN/inf in the module's dtype."""
    try:
        m = copy.deepcopy(module).train(training)
        call = _caller(m, args, kwargs, x_key, dtype)
        with torch.no_grad():
            y = call(torch.zeros(shape, dtype=dtype, device=device))
        return isinstance(y, Tensor) and not bool(torch.isfinite(y).all())
    except Exception:  # noqa: BLE001
        return False


def finite_fraction(t: Tensor) -> float:
    return float(torch.isfinite(t).float().mean()) if t.numel() else 1.0


def rms(t: Tensor) -> float:
    v = float(t.detach().double().square().mean().sqrt()) if t.numel() else 0.0
    return v if math.isfinite(v) else math.inf

r"""Swap ``torch.nn`` normalization layers for their normlab twins, in place, keeping every tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .layernorm import LayerNorm
from .norm import Norm
from .rmsnorm import RMSNorm

__all__ = ["convert", "BATCHNORM_TYPES", "CONVERTIBLE_TYPES"]


def _tensor_kwargs(m: nn.Module) -> dict:
    for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


def _has_bias(m: nn.Module) -> bool:
    return getattr(m, "bias", None) is not None


def _batchnorm(cls):
    return lambda m: cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                         **_tensor_kwargs(m), bias=_has_bias(m))


def _instancenorm(cls):
    return lambda m: cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                         **_tensor_kwargs(m), bias=_has_bias(m))


def _syncbatchnorm(m):
    from .sync import SyncBatchNorm

    return SyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, m.process_group,
                         **_tensor_kwargs(m), bias=_has_bias(m))


#: exact torch.nn type -> builder of the normlab twin (subclasses are left alone: they may change forward)
_BUILDERS: dict[type, Callable[[nn.Module], Norm]] = {
    nn.BatchNorm1d: _batchnorm(BatchNorm1d),
    nn.BatchNorm2d: _batchnorm(BatchNorm2d),
    nn.BatchNorm3d: _batchnorm(BatchNorm3d),
    nn.SyncBatchNorm: _syncbatchnorm,
    nn.InstanceNorm1d: _instancenorm(InstanceNorm1d),
    nn.InstanceNorm2d: _instancenorm(InstanceNorm2d),
    nn.InstanceNorm3d: _instancenorm(InstanceNorm3d),
    nn.LayerNorm: lambda m: LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, _has_bias(m),
                                      **_tensor_kwargs(m)),
    nn.GroupNorm: lambda m: GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine, **_tensor_kwargs(m),
                                      bias=_has_bias(m)),
    nn.RMSNorm: lambda m: RMSNorm(m.normalized_shape, m.eps, m.elementwise_affine, **_tensor_kwargs(m)),
}

CONVERTIBLE_TYPES: tuple[type, ...] = tuple(_BUILDERS)
BATCHNORM_TYPES: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _swap(old: nn.Module, new: Norm) -> Norm:
    """Give ``new`` the very parameter and buffer objects of ``old``, and its train/eval state."""
    for name in ("weight", "bias"):
        p = getattr(old, name, None)
        if (p is None) != (getattr(new, name) is None):
            raise ValueError(f"cannot convert {type(old).__name__}: {name} is "
                             f"{'missing' if p is None else 'present'} but the twin expects otherwise")
        if p is not None:
            setattr(new, name, p)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if name in new._buffers:
            new._buffers[name] = getattr(old, name, None)
    if getattr(old, "frozen", False):
        new.frozen = True
    return new.train(old.training)


def _replace(module: nn.Module, fn: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Apply ``fn`` (a replacement or None) to ``module`` and every descendant, in place."""
    new = fn(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        replaced = _replace(child, fn)
        if replaced is not child:
            setattr(module, name, replaced)
    return module


def convert(module: nn.Module, *, types: Iterable[type] | None = None) -> nn.Module:
    """Replace every ``torch.nn`` normalization layer in ``module`` by its normlab twin.

    Converted: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, ``InstanceNorm1d/2d/3d``,
    ``LayerNorm``, ``GroupNorm``, ``RMSNorm``.  Only these exact types are
    replaced: a subclass (timm's ``BatchNormAct2d``, a channels-first
    ``LayerNorm2d`` built on ``nn.LayerNorm``) may change ``forward`` and is
    left alone.  The twin takes over the *same* parameter and buffer objects
    (so an optimizer built before the conversion still works), the device,
    dtype, ``requires_grad`` and train/eval state; the converted model's
    outputs equal the original's.

    Args:
        module: any ``nn.Module``; changed in place.
        types: only convert these torch types (default: all of the above).

    Returns:
        The module, or its replacement if ``module`` itself is a norm layer.

    Example::

        >>> import torch
        >>> import normlab
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        >>> net = normlab.convert(net)
        >>> type(net[1]).__name__
        'BatchNorm2d'
        >>> isinstance(net[1], normlab.BatchNorm)
        True
    """
    wanted = set(CONVERTIBLE_TYPES if types is None else types)
    unknown = wanted - set(CONVERTIBLE_TYPES)
    if unknown:
        names = ", ".join(sorted(t.__name__ for t in unknown))
        raise TypeError(f"convert cannot convert {names}; it converts "
                        f"{', '.join(t.__name__ for t in CONVERTIBLE_TYPES)}")

    def to_twin(m: nn.Module) -> nn.Module | None:
        if type(m) not in wanted:  # a lazy layer becomes its torch type at its first forward
            return None
        return _swap(m, _BUILDERS[type(m)](m))

    return _replace(module, to_twin)

"""Module surgery shared by the layers that replace others in place (``SyncBatchNorm.convert_sync_batchnorm``)
and by :mod:`normlab.tools`: hand a replacement the very tensors of the layer it replaces."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["TORCH_BATCHNORM_TYPES", "tensor_kwargs", "take_tensors", "replace_modules"]

#: torch.nn's BatchNorm layers (exact types: a subclass may change forward)
TORCH_BATCHNORM_TYPES: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def tensor_kwargs(m: nn.Module) -> dict:
    """``{"device", "dtype"}`` of ``m``'s first floating-point parameter or buffer (empty if it has none)."""
    for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


def take_tensors(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give the norm layer ``new`` the very weight/bias and running-statistics objects of ``old``, its freeze and
    its train/eval state; a weight or bias present in one and missing in the other is an error."""
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


def replace_modules(module: nn.Module, fn: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Apply ``fn`` (a replacement or None) to ``module`` and every descendant, in place; a replaced module's
    children are not visited."""
    new = fn(module)
    if new is not None:
        return new
    for name, child in module.named_children():
        replaced = replace_modules(child, fn)
        if replaced is not child:
            setattr(module, name, replaced)
    return module

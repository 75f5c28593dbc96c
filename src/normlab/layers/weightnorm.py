r"""Weight normalization (Salimans & Kingma 2016) as a ``torch.nn.utils.parametrize`` parametrization."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ._script import NoTorchScript

__all__ = ["WeightNorm", "weight_norm", "remove_weight_norm"]


def _norm_except(v: Tensor, dim: int) -> Tensor:
    dims = [d for d in range(v.ndim) if d != dim]
    return torch.linalg.vector_norm(v.float(), dim=dims, keepdim=True).to(v.dtype)


class WeightNorm(NoTorchScript, nn.Module):
    r"""``w = g * v / ||v||``, the norm over every dim but ``dim`` (each output unit has its own length g).

    Decouples a weight vector's direction (``v``) from its length (``g``),
    a reparametrization of the weights instead of a normalization of the
    activations: no batch statistics, identical in train and eval.
    """

    def __init__(self, dim: int = 0) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, g: Tensor, v: Tensor) -> Tensor:
        return v * (g / _norm_except(v, self.dim).clamp_min(torch.finfo(v.dtype).tiny))

    def right_inverse(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return _norm_except(w, self.dim), w

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def weight_norm(module: nn.Module, name: str = "weight", dim: int = 0) -> nn.Module:
    """Reparametrize ``module.<name>`` as ``g * v / ||v||``; returns the module.

    The original weight becomes ``parametrizations.<name>.original0`` (g) and
    ``original1`` (v), as torch's own ``weight_norm`` parametrization names
    them, and the module's output is unchanged at the moment of the call.

    Example::

        >>> import torch
        >>> from normlab.layers import weight_norm
        >>> conv = weight_norm(torch.nn.Conv1d(3, 8, 5))
        >>> sorted(n for n, _ in conv.named_parameters())
        ['bias', 'parametrizations.weight.original0', 'parametrizations.weight.original1']
    """
    w = getattr(module, name, None)
    if not isinstance(w, Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor attribute {name!r} to reparametrize")
    if not -w.ndim <= dim < w.ndim:
        raise ValueError(f"dim={dim} is out of range for {name} of shape {tuple(w.shape)}")
    parametrize.register_parametrization(module, name, WeightNorm(dim % w.ndim), unsafe=True)
    return module


def remove_weight_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Fold the parametrization back into a plain weight."""
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return module

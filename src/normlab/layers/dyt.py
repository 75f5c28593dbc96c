r"""Dynamic Tanh (Zhu et al. 2025): a normalization-free stand-in for LayerNorm."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._script import NoTorchScript

__all__ = ["DyT"]


class DyT(NoTorchScript, nn.Module):
    r"""``y = weight * tanh(alpha * x) + bias``, elementwise, with a learnable scalar ``alpha``.

    No statistics are computed: the squashing of tanh replaces the division by
    the standard deviation (Zhu et al. 2025, "Transformers without
    Normalization", who initialise ``alpha`` at 0.5 for most models).

    Args:
        normalized_shape: size of the trailing feature dim (the affine parameters' shape).
        alpha0: initial ``alpha`` (default 0.5).
        bias: learn the shift.

    Shape:
        - Input ``(*, D)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import DyT
        >>> y = DyT(64)(torch.randn(2, 10, 64))
    """

    def __init__(self, normalized_shape: int, alpha0: float = 0.5, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.normalized_shape = (normalized_shape,)
        self.alpha0 = alpha0
        self.alpha = nn.Parameter(torch.empty((), **factory_kwargs))
        self.weight = nn.Parameter(torch.empty(normalized_shape, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(normalized_shape, **factory_kwargs)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.alpha, self.alpha0)
        nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != self.normalized_shape:
            raise ValueError(f"DyT expects a last dim of size {self.normalized_shape[0]}, "
                             f"got an input of shape {tuple(x.shape)}")
        y = torch.tanh(self.alpha * x) * self.weight
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha0={self.alpha0}, bias={self.bias is not None}"

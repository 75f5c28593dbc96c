r"""ScaleNorm (Nguyen & Salazar 2019): one learned scale over the L2-normalized vector."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import functional as NF
from ._script import NoTorchScript

__all__ = ["ScaleNorm"]


class ScaleNorm(NoTorchScript, nn.Module):
    r"""``y = g * x / max(||x||_2, eps)`` over the last dim, with a single learnable scalar ``g``.

    Equivalent to RMSNorm with one shared gain: ``||x||_2 = sqrt(D) * rms(x)``,
    so ``g`` starts at ``sqrt(D)`` to give unit-RMS outputs.  The norm is taken
    in float32 for half-precision inputs.

    Args:
        dim: D, the size of the last dim.
        eps: lower bound on the norm (default 1e-5).

    Shape:
        - Input ``(*, D)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import ScaleNorm
        >>> y = ScaleNorm(64)(torch.randn(2, 10, 64))
    """

    def __init__(self, dim: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.g = nn.Parameter(torch.empty((), device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.g, math.sqrt(self.dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"ScaleNorm expects a last dim of size {self.dim}, got an input of shape {tuple(x.shape)}")
        xc = x.to(NF.compute_dtype(x.dtype))
        norm = torch.linalg.vector_norm(xc, dim=-1, keepdim=True).clamp_min(self.eps)
        return (xc / norm * self.g).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"

r"""RMSNorm, a preset of :class:`~normlab.Norm` without re-centering."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .norm import Norm, _as_shape

__all__ = ["RMSNorm"]


class RMSNorm(Norm):
    r"""Root-mean-square normalization (Zhang & Sennrich 2019) over the trailing dims.

    .. math::

        y = \gamma \cdot \frac{x}{\sqrt{\overline{x^2} + \epsilon}}

    LayerNorm without subtracting the mean and without a bias; on rows of
    mean zero the two agree.  Constructor and state dict as ``torch.nn.RMSNorm``.

    Args:
        normalized_shape: the trailing shape to normalize over.
        eps: added to the mean square.  Default ``None``: the machine epsilon
            of the dtype the statistics are computed in, which is float32's
            (1.19e-7) for float32, bf16 and fp16 inputs and float64's for
            float64 -- this is what ``torch.nn.RMSNorm`` does (bf16's own
            epsilon, 7.8e-3, would swamp rows of small magnitude).
        elementwise_affine: learn ``weight`` (1).
        zero_centered_gamma: store gamma as an offset from 1 (Gemma's
            ``1 + weight``); ``weight`` starts at 0.  State dicts convert as
            for :class:`LayerNorm`'s ``zero_centered_gamma``.

    Shape:
        - Input: ``(*, *normalized_shape)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab import RMSNorm
        >>> x = torch.randn(2, 10, 64)
        >>> torch.allclose(RMSNorm(64)(x), torch.nn.RMSNorm(64)(x), atol=1e-5)
        True
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, device=None, dtype=None, *,
                 zero_centered_gamma: bool = False) -> None:
        shape = _as_shape(normalized_shape, "normalized_shape", "RMSNorm")
        super().__init__(shape, dims=tuple(range(-len(shape), 0)), center=False, eps=eps,
                         affine=elementwise_affine, bias=False, zero_centered_gamma=zero_centered_gamma,
                         device=device, dtype=dtype)
        self.normalized_shape = shape
        self.elementwise_affine = elementwise_affine

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        return super().forward(x)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"zero_centered_gamma={self.zero_centered_gamma}")

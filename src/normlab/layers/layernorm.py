r"""LayerNorm (transformer and CNN style) and channels-first LayerNorm2d, presets of :class:`~normlab.Norm`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .norm import Norm, _as_shape

__all__ = ["LayerNorm", "LayerNorm2d"]


class LayerNorm(Norm):
    r"""Layer normalization (Ba et al. 2016) over the trailing ``normalized_shape`` dims.

    .. math::

        y = \gamma \cdot \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} + \beta

    with the mean and biased variance over the last ``len(normalized_shape)``
    dims, separately for every leading index.  ``normalized_shape=D`` on a
    (B, T, D) input is the transformer LayerNorm (per token, affine over D);
    ``normalized_shape=(C, H, W)`` on (N, C, H, W) is the original CNN
    LayerNorm (per sample, affine over C, H, W).  Same name, different
    normalizers.  Constructor, attributes and state dict as ``torch.nn.LayerNorm``.

    Args:
        normalized_shape: the trailing shape to normalize over.
        eps: added to the variance (default 1e-5).
        elementwise_affine: learn ``weight`` (1) and ``bias`` (0) of ``normalized_shape``.
        bias: learn the shift (torch >= 2.1's ``bias=``).
        zero_centered_gamma: store gamma as an offset from 1 (``weight`` starts
            at 0; scale = 1 + weight).  The state dict's metadata records it, and
            loading converts between conventions: a ``torch.nn.LayerNorm`` state
            dict loads as ``weight = gamma - 1``; one without metadata (a plain
            dict) loads as it is, with a warning (see ``Norm._convert_gamma``).

    Identical in train and eval mode; no batch coupling, so a token's output
    does not depend on the batch, its padding or what it is packed with.

    Shape:
        - Input: ``(*, *normalized_shape)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab import LayerNorm
        >>> y = LayerNorm(64)(torch.randn(2, 10, 64))                 # transformer style
        >>> y = LayerNorm((8, 5, 5))(torch.randn(4, 8, 5, 5))         # CNN style
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device=None, dtype=None, *,
                 zero_centered_gamma: bool = False) -> None:
        shape = _as_shape(normalized_shape, "normalized_shape", "LayerNorm")
        super().__init__(shape, dims=tuple(range(-len(shape), 0)), eps=eps, affine=elementwise_affine,
                         bias=bias, zero_centered_gamma=zero_centered_gamma, device=device, dtype=dtype)
        self.normalized_shape = shape
        self.elementwise_affine = elementwise_affine

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        return super().forward(x)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}, zero_centered_gamma={self.zero_centered_gamma}")


class LayerNorm2d(Norm):
    r"""Channels-first LayerNorm: normalize over C at every position of an (N, C, *) tensor.

    .. math::

        y_{n,:,h,w} = \gamma \cdot \frac{x_{n,:,h,w} - \mathrm{E}_C[x_{n,:,h,w}]}{\sqrt{\mathrm{Var}_C[x_{n,:,h,w}] + \epsilon}} + \beta

    This is the transformer LayerNorm applied to each pixel's channel vector
    (ConvNeXt's ``channels_first`` LayerNorm), without permuting to
    channels-last and back.  torch has no such layer (pytorch#71465).

    Args:
        num_channels: C.
        eps: default 1e-6 (ConvNeXt's).
        affine: learn per-channel ``weight`` (1) and ``bias`` (0).
        bias: with ``affine``, learn the shift.

    Shape:
        - Input: ``(N, C, *)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab import LayerNorm2d
        >>> x = torch.randn(2, 16, 7, 7)
        >>> ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (16,), eps=1e-6).permute(0, 3, 1, 2)
        >>> torch.allclose(LayerNorm2d(16)(x), ref, atol=1e-5)
        True
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        num_channels = _as_shape(num_channels, "num_channels", "LayerNorm2d")[0]
        super().__init__(num_channels, dims=(1,), param_dims=(1,), eps=eps, affine=affine, bias=bias,
                         min_ndim=2, device=device, dtype=dtype)
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"

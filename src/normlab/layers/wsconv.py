r"""Weight Standardization (Qiao et al. 2019): convolutions whose filters are standardized before use."""

from __future__ import annotations

from torch import Tensor, nn

from .. import functional as NF
from ._script import NoTorchScript

__all__ = ["WSConv1d", "WSConv2d", "WSConv3d", "standardize_weight"]


def standardize_weight(weight: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Each output filter of a conv weight ``(C_out, C_in / groups, *kernel)`` to zero mean and unit variance.

    ``W_hat[o] = (W[o] - mean(W[o])) / sqrt(var(W[o]) + eps)`` over (in, \*kernel), the biased
    variance: :func:`normlab.functional.normalize` over every dim but the first (the one
    formula, applied to weights instead of activations), differentiable.
    """
    return NF.normalize(weight, dims=tuple(range(1, weight.ndim)), eps=eps)


class _Standardized:
    """The forward of a weight-standardized conv: standardize the weight, then convolve with it."""

    weight: Tensor
    bias: Tensor | None
    eps: float

    def standardized_weight(self) -> Tensor:
        """The filters the convolution uses: each output filter standardized over (in, *kernel)."""
        return standardize_weight(self.weight, self.eps)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)  # type: ignore[attr-defined]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eps={self.eps}"  # type: ignore[misc]


_DOC = r"""``nn.Conv{d}d`` with Weight Standardization (Qiao et al. 2019): each filter standardized before the conv.

    .. math::

        \hat W_o = \frac{{W_o - \mathrm{{E}}[W_o]}}{{\sqrt{{\mathrm{{Var}}[W_o] + \epsilon}}}}, \qquad
        y = \hat W \star x + b

    with the mean and biased variance of each output filter ``o`` over its
    (in, \*kernel) weights.  Standardizing the weights smooths the loss
    landscape the way BatchNorm's standardizing of activations does, with
    no batch dependence; GroupNorm + WS is the small-batch recipe of
    Big Transfer (BiT, Kolesnikov et al. 2020).  Constructor, state dict
    (``weight`` is the raw, learned tensor) and shapes as ``nn.Conv{d}d``, plus
    ``eps`` (default 1e-6, timm's ``StdConv2d``'s), keyword-only.
    :meth:`standardized_weight` returns the filters actually used (e.g. to
    export a plain conv for inference: :func:`normlab.to_torch` with
    ``inference=True`` does).

    Example::

        >>> import torch
        >>> from normlab.layers import WSConv{d}d
        >>> conv = WSConv{d}d(3, 8, 3, padding=1)
        >>> w = conv.standardized_weight().detach()
        >>> float(w.flatten(1).mean(1).abs().max()) < 1e-6
        True

    Paper: S. Qiao, H. Wang, C. Liu, W. Shen, A. Yuille, "Micro-Batch Training
    with Batch-Channel Normalization and Weight Standardization", arXiv
    1903.10520, 2019.
"""


class WSConv1d(NoTorchScript, _Standardized, nn.Conv1d):
    __doc__ = _DOC.format(d=1)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 eps: float = 1e-6) -> None:
        _check_eps(eps)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.eps = eps


class WSConv2d(NoTorchScript, _Standardized, nn.Conv2d):
    __doc__ = _DOC.format(d=2)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 eps: float = 1e-6) -> None:
        _check_eps(eps)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.eps = eps


class WSConv3d(NoTorchScript, _Standardized, nn.Conv3d):
    __doc__ = _DOC.format(d=3)

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", device=None, dtype=None, *,
                 eps: float = 1e-6) -> None:
        _check_eps(eps)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.eps = eps


def _check_eps(eps: float) -> None:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"weight standardization: eps must be a number >= 0, got {eps!r}")

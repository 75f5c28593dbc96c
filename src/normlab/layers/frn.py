r"""Filter Response Normalization and its Thresholded Linear Unit (Singh & Krishnan 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as NF
from ._script import NoTorchScript
from .norm import Norm, _as_shape

__all__ = ["FilterResponseNorm", "TLU"]


class FilterResponseNorm(Norm):
    r"""Filter Response Normalization (FRN) with its TLU: per sample and channel, no centering, no batch.

    .. math::

        \nu^2_{n,c} = \mathrm{E}_{*}[x_{n,c}^2], \qquad
        y = \gamma_c \frac{x}{\sqrt{\nu^2_{n,c} + \epsilon}} + \beta_c, \qquad
        z = \max(y, \tau_c)

    The mean square is taken over the spatial/time dims of each sample's
    channel (InstanceNorm's axes, RMSNorm's statistic): a preset of
    :class:`~normlab.Norm` with ``center=False``.  The Thresholded Linear
    Unit ``max(y, tau)`` with a learned per-channel ``tau`` (initialised to
    0, i.e. a ReLU) is FRN's activation: the layer replaces BatchNorm + ReLU.
    Nothing depends on the batch: the same output in training and eval, for
    a sample alone or in any batch.

    ``eps``: with few spatial positions (1x1 activations, where ``nu^2`` is
    ``x^2`` itself) a fixed small eps makes the layer nearly ``sign(x)``;
    ``learnable_eps=True`` adds a learned per-channel ``|learned_eps|`` to
    it (``eps + |learned_eps|``, ``learned_eps`` initialised to ``eps`` so
    that it has a gradient), as the paper suggests for that case.

    Args:
        num_features: C, the channels (dim 1).
        eps: added to the mean square (default 1e-6, the paper's); >= 0.
        learnable_eps: also learn a per-channel eps (see above).
        affine: learn ``weight`` (gamma, 1) and ``bias`` (beta, 0).
        tlu: apply the TLU ``max(y, tau)`` (default True); False gives FRN alone
            (for a position not followed by an activation).
        bias: with ``affine``, learn the shift.

    Shape:
        - Input: ``(N, C, *)``; ``(N, C)`` is treated as one position per channel.
        - mask (optional): the input's shape without C, bool; masked positions
          are left out of the mean square.
        - Output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import FilterResponseNorm
        >>> frn = FilterResponseNorm(16)
        >>> x = torch.randn(4, 16, 8, 8)
        >>> y = frn(x)
        >>> bool((y >= 0).all())                         # tau starts at 0: a ReLU
        True
        >>> torch.allclose(frn(x[:1]), y[:1])             # no batch dependence
        True

    Paper: S. Singh, S. Krishnan, "Filter Response Normalization Layer:
    Eliminating Batch Dependence in the Training of Deep Neural Networks",
    CVPR 2020 (arXiv 1911.09737, 2019).
    """

    _fused_add = False  # its forward computes more than the fused add + norm kernel does

    _shape_arg = "num_features"

    def __init__(self, num_features: int, eps: float = 1e-6, learnable_eps: bool = False, affine: bool = True,
                 tlu: bool = True, device=None, dtype=None, *, bias: bool = True) -> None:
        num_features = _as_shape(num_features, "num_features", "FilterResponseNorm")[0]
        super().__init__(num_features, keep_dims=(0, 1), param_dims=(1,), center=False, eps=eps, affine=affine,
                         bias=bias, min_ndim=2, device=device, dtype=dtype)
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.learnable_eps = learnable_eps
        self.tlu = tlu
        self.learned_eps = nn.Parameter(torch.empty(num_features, **factory_kwargs)) if learnable_eps else None
        self.tau = nn.Parameter(torch.empty(num_features, **factory_kwargs)) if tlu else None
        self._reset_extra()

    def _reset_extra(self) -> None:
        if getattr(self, "learned_eps", None) is not None:
            nn.init.constant_(self.learned_eps, self.eps if self.eps else 1e-6)
        if getattr(self, "tau", None) is not None:
            nn.init.zeros_(self.tau)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self._reset_extra()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if isinstance(x, Tensor) and x.ndim == 2:  # (N, C): one position per channel
            return self.forward(x.unsqueeze(-1), None if mask is None else mask.unsqueeze(-1)).squeeze(-1)
        if self.learned_eps is None:
            y = super().forward(x, mask)
        else:
            rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
            _, ms = NF.moments(x, rdims, center=False, mask=mask)
            ms = ms + self._param_view(self.learned_eps, x, pdims).abs().to(ms.dtype)
            y = NF.normalize_with(x, None, ms, weight, bias, eps=eps)
        if self.tau is None:
            return y
        return torch.maximum(y, self._param_view(self.tau, y, (1,)).to(y.dtype))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, learnable_eps={self.learnable_eps}, affine={self.affine}, "
                f"bias={self.bias is not None}, tlu={self.tlu}")


class TLU(NoTorchScript, nn.Module):
    r"""Thresholded Linear Unit ``z = max(x, tau_c)`` with a learned per-channel threshold (initialised to 0).

    FRN's activation on its own (Singh & Krishnan 2019): a ReLU whose floor is
    learned, so that FRN's un-centered outputs need not be cut at 0.

    Shape:
        - Input: ``(N, C, *)``; output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import TLU
        >>> TLU(3)(torch.tensor([[-1.0, 0.5, 2.0]])).tolist()
        [[0.0, 0.5, 2.0]]
    """

    def __init__(self, num_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.num_features = _as_shape(num_features, "num_features", "TLU")[0]
        self.tau = nn.Parameter(torch.empty(self.num_features, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.tau)

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[1] != self.num_features:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"TLU expects an input (N, {self.num_features}, *) with the channels at dim 1, got {got}")
        return torch.maximum(x, self.tau.view(1, -1, *([1] * (x.ndim - 2))).to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.num_features}"

r"""InstanceNorm, a preset of :class:`~normlab.Norm`."""

from __future__ import annotations

from torch import Tensor

from .norm import Norm

__all__ = ["InstanceNorm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class InstanceNorm(Norm):
    r"""Instance normalization (Ulyanov et al. 2016): each channel of each sample on its own.

    .. math::

        y_{n,c} = \gamma_c \cdot \frac{x_{n,c} - \mathrm{E}_{*}[x_{n,c}]}{\sqrt{\mathrm{Var}_{*}[x_{n,c}] + \epsilon}} + \beta_c

    Statistics are taken over the spatial/time dims only.  Defaults as
    ``torch.nn.InstanceNorm2d``: no affine, no running statistics.  With
    ``track_running_stats`` the batch average of the per-instance mean and
    unbiased variance is folded into the running statistics, which eval mode
    then uses, as torch does; like torch, ``num_batches_tracked`` is not
    advanced.  One deliberate difference: with ``momentum=None`` torch passes
    momentum 0 and its running statistics never move, normlab keeps the
    cumulative average that ``None`` means for BatchNorm (and counts batches
    in ``num_batches_tracked`` to do so).

    Args:
        num_features: C.
        eps: added to the variance (default 1e-5).
        momentum: running-statistics factor (default 0.1; ``None``: cumulative).
        affine: learnable per-channel ``weight``/``bias`` (default False).
        track_running_stats: default False.
        bias: with ``affine``, learn the shift.
        spatial_dims: if given (the torch 1d/2d/3d classes set 1/2/3), an
            input with ``spatial_dims + 1`` dims is taken as one unbatched
            sample (C, *spatial), as torch accepts.

    Shape:
        - Input: ``(N, C, *spatial)`` with at least one spatial dim.
        - mask (in ``forward``): the input's shape without C, bool.
        - Output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab import InstanceNorm
        >>> y = InstanceNorm(8)(torch.randn(2, 8, 16, 16))
    """

    _min_count_training = 2
    _shape_arg = "num_features"
    _counts_batches = False

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None, dtype=None, *,
                 bias: bool = True, spatial_dims: int | None = None) -> None:
        super().__init__(num_features, keep_dims=(0, 1), param_dims=(1,), eps=eps, affine=affine, bias=bias,
                         momentum=momentum, track_running_stats=track_running_stats, min_ndim=3,
                         device=device, dtype=dtype)
        self.num_features = num_features
        self.spatial_dims = spatial_dims

    def _min_count(self) -> int:
        # torch refuses one spatial element whenever instance statistics are used, not only in training
        return 2

    def _unbatched(self, x) -> bool:
        return self.spatial_dims is not None and isinstance(x, Tensor) and x.ndim == self.spatial_dims + 1

    def _as_batched(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self._unbatched(x):
            return x.unsqueeze(0), None if mask is None else mask.unsqueeze(0)
        return x, mask

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if self._unbatched(x):
            return super().forward(*self._as_batched(x, mask)).squeeze(0)
        return super().forward(x, mask)

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
             f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")
        return s + (", frozen=True" if self.frozen else "")


class InstanceNorm1d(InstanceNorm):
    """:class:`InstanceNorm` for (N, C, L) or unbatched (C, L), as ``torch.nn.InstanceNorm1d``."""

    _ndims, _ndims_hint = (2, 3), " (N, C, L) or (C, L)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         spatial_dims=1)


class InstanceNorm2d(InstanceNorm):
    """:class:`InstanceNorm` for (N, C, H, W) or unbatched (C, H, W), as ``torch.nn.InstanceNorm2d``."""

    _ndims, _ndims_hint = (3, 4), " (N, C, H, W) or (C, H, W)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         spatial_dims=2)


class InstanceNorm3d(InstanceNorm):
    """:class:`InstanceNorm` for (N, C, D, H, W) or unbatched (C, D, H, W), as ``torch.nn.InstanceNorm3d``."""

    _ndims, _ndims_hint = (4, 5), " (N, C, D, H, W) or (C, D, H, W)"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         spatial_dims=3)

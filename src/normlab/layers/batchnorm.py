r"""BatchNorm for inputs of any rank, as a preset of :class:`~normlab.Norm`."""

from __future__ import annotations

from torch import nn

from .norm import Norm

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class BatchNorm(Norm):
    r"""Batch normalization (Ioffe & Szegedy 2015) over every dim but the channel dim.

    .. math::

        y = \gamma_c \cdot \frac{x - \mathrm{E}_{N,*}[x]}{\sqrt{\mathrm{Var}_{N,*}[x] + \epsilon}} + \beta_c

    In training the mean and biased variance come from the batch (over N and
    every spatial/time dim, per channel) and are folded into
    ``running_mean`` and the *unbiased* ``running_var``; in eval mode the
    running statistics are used.  With ``track_running_stats=False`` batch
    statistics are used in both modes.  Constructor, defaults, attributes and
    state-dict keys are those of ``torch.nn.BatchNorm1d/2d/3d``, so
    checkpoints load both ways.

    Args:
        num_features: C, the size of the channel dim.
        eps: added to the variance (default 1e-5).
        momentum: running-statistics factor, ``running = (1 - momentum) *
            running + momentum * batch`` (default 0.1; ``None`` = cumulative
            average).  Not an optimizer momentum.
        affine: learnable per-channel ``weight`` (1) and ``bias`` (0).
        track_running_stats: keep running statistics for eval mode.
        bias: with ``affine``, whether to learn the shift (torch's ``bias=``).
        channel_dim: where the channels are: 1 for (N, C, *), -1 for
            (B, T, D) sequences.

    Beyond torch:
        - ``forward(x, mask=None)``: a bool mask of the input's shape without
          the channel dim (True = real element) keeps padding out of the
          statistics and the running averages.  Padded positions are still
          normalized (with the real elements' statistics), so they are finite.
        - :meth:`freeze`: eval statistics and no gamma/beta gradient that
          survive a later ``.train()``.
        - Non-finite batch statistics (NaN/inf in the input) propagate to the
          output of that channel for this batch, as in torch, but never enter
          the running statistics: those channels keep their old values and a
          ``RuntimeWarning`` names them (torch silently stores the NaN).  The
          guard is a ``torch.where`` on the device; the warning, and the
          error for a mask that leaves a channel without two real values in
          training, need the values on the host, so they are given in eager
          mode on CPU only.  On CUDA, under ``torch.compile`` and on meta
          tensors the forward never syncs with the host, and such a channel
          simply keeps its running statistics.

    Pitfalls: in training, one value per channel (batch size 1 of an (N, C)
    input, or of (N, C, 1, 1)) is an error, not a silent all-beta output.

    Shape:
        - Input: ``(N, C, *)`` (``channel_dim=1``) or ``(*, C)`` (``channel_dim=-1``).
        - mask: the input's shape without the channel dim, bool.
        - Output: same shape and dtype as the input.

    Example::

        >>> import torch
        >>> from normlab import BatchNorm
        >>> bn = BatchNorm(16)
        >>> y = bn(torch.randn(8, 16, 5, 5))                  # like nn.BatchNorm2d(16)
        >>> seq = BatchNorm(32, channel_dim=-1)
        >>> x, mask = torch.randn(4, 10, 32), torch.ones(4, 10, dtype=torch.bool)
        >>> mask[0, 6:] = False                                  # padding
        >>> y = seq(x, mask=mask)
    """

    _min_count_training = 2
    _shape_arg = "num_features"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True, channel_dim: int = 1) -> None:
        super().__init__(num_features, keep_dims=(channel_dim,), param_dims=(channel_dim,), eps=eps,
                         affine=affine, bias=bias, momentum=momentum,
                         track_running_stats=track_running_stats, min_ndim=2, device=device, dtype=dtype)
        self.num_features = num_features
        self.channel_dim = channel_dim

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
             f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}, "
             f"channel_dim={self.channel_dim}")
        return s + (", frozen=True" if self.frozen else "")


class BatchNorm1d(BatchNorm):
    """:class:`BatchNorm` that, like ``torch.nn.BatchNorm1d``, accepts only (N, C) or (N, C, L)."""

    _ndims, _ndims_hint = (2, 3), " (N, C) or (N, C, L)"


class BatchNorm2d(BatchNorm):
    """:class:`BatchNorm` that, like ``torch.nn.BatchNorm2d``, accepts only (N, C, H, W)."""

    _ndims, _ndims_hint = (4,), " (N, C, H, W)"


class BatchNorm3d(BatchNorm):
    """:class:`BatchNorm` that, like ``torch.nn.BatchNorm3d``, accepts only (N, C, D, H, W)."""

    _ndims, _ndims_hint = (5,), " (N, C, D, H, W)"

r"""Batch Renormalization (Ioffe 2017): BatchNorm whose training output is corrected towards its eval output."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from .batchnorm import BatchNorm

__all__ = ["BatchRenorm"]


class BatchRenorm(BatchNorm):
    r"""Batch Renormalization (Ioffe 2017): BatchNorm with a clipped, gradient-free correction ``r``, ``d``.

    In training, with the batch statistics :math:`\mu_B, \sigma_B` and the
    running ones :math:`\mu, \sigma` (``sigma = sqrt(running_var + eps)``,
    ``sigma_B = sqrt(batch_var + eps)``):

    .. math::

        r = \mathrm{clip}_{[1/r_{max},\, r_{max}]}\Big(\frac{\sigma_B}{\sigma}\Big), \qquad
        d = \mathrm{clip}_{[-d_{max},\, d_{max}]}\Big(\frac{\mu_B - \mu}{\sigma}\Big), \qquad
        y = \gamma \Big(\frac{x - \mu_B}{\sigma_B}\, r + d\Big) + \beta

    ``r`` and ``d`` are treated as constants (no gradient flows through
    them); the gradient flows through :math:`\mu_B, \sigma_B` as in
    BatchNorm.  Unclipped, ``(x - mu_B) / sigma_B * r + d = (x - mu) /
    sigma``: the training output is the eval output, so the network learns
    the function it will be evaluated with, even when the batch is small
    or not i.i.d.  ``r`` and ``d`` use the running statistics as they were
    *before* this batch; the running statistics are then updated as
    BatchNorm's (biased batch variance in the normalization, unbiased in
    ``running_var``, ``momentum`` as BatchNorm's).  In eval mode (and when
    frozen) the layer is exactly :class:`BatchNorm`: same state-dict keys,
    same output.

    Schedule: the clipping limits start at ``rmax = 1``, ``dmax = 0`` (where
    the layer is exactly BatchNorm: the running statistics are still
    unreliable) and relax linearly to the targets over ``warmup_steps``
    training steps, counted by ``num_batches_tracked`` (so the schedule is
    part of the state dict and resumes with it):

    .. math::

        f = \min(1, t / \mathrm{warmup\_steps}), \quad r_{max}(t) = 1 + (r_{max} - 1) f, \quad
        d_{max}(t) = d_{max} f

    ``warmup_steps=0`` applies the targets from the first step.  Ioffe held
    (1, 0) for the first part of training and then relaxed the limits to
    (3, 5); Keras exposes the same limits as ``renorm_clipping`` (fixed
    values that a user schedules).  A ramp over roughly the first fifth of
    training is a reasonable start; :meth:`current_limits` reads the limits
    in force.  Keras also keeps a second pair of moving averages for ``r``
    and ``d`` (``renorm_momentum``, 0.99 by default, i.e. torch's 0.01);
    here one pair serves both ``r, d`` and eval, so with small batches a
    smaller ``momentum`` (0.01) smooths ``r`` and ``d`` the same way.

    Args:
        num_features: C, the size of the channel dim.
        eps, momentum, affine, bias, channel_dim, device, dtype: as :class:`BatchNorm`.
        rmax: the final bound of ``r``, >= 1 (default 3).
        dmax: the final bound of ``|d|``, >= 0 (default 5).
        warmup_steps: training steps over which the limits relax from (1, 0)
            to (rmax, dmax) (default 5000; 0: no ramp).

    With ``rmax=1, dmax=0`` the layer is BatchNorm in training too (forward
    and backward; tested).

    Shape:
        - Input: ``(N, C, *)`` (``channel_dim=1``) or ``(*, C)`` (``channel_dim=-1``).
        - mask (optional): the input's shape without the channel dim, bool, as BatchNorm's.
        - Output: same shape and dtype as the input.

    Example::

        >>> import torch
        >>> from normlab.layers import BatchRenorm
        >>> brn = BatchRenorm(16, rmax=3.0, dmax=5.0, warmup_steps=1000)
        >>> y = brn(torch.randn(4, 16, 8, 8))
        >>> brn.current_limits()                 # one step taken: barely relaxed
        (1.002, 0.005)
        >>> brn.eval()(torch.randn(2, 16, 8, 8)).shape   # eval: exactly BatchNorm
        torch.Size([2, 16, 8, 8])

    Paper: S. Ioffe, "Batch Renormalization: Towards Reducing Minibatch
    Dependence in Batch-Normalized Models", NeurIPS 2017.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None, *,
                 rmax: float = 3.0, dmax: float = 5.0, warmup_steps: int = 5000, bias: bool = True,
                 channel_dim: int = 1) -> None:
        if not track_running_stats:
            raise ValueError("BatchRenorm needs running statistics (track_running_stats=True): r and d compare "
                             "the batch statistics with them; without them use BatchNorm")
        if not isinstance(rmax, (int, float)) or isinstance(rmax, bool) or not rmax >= 1:
            raise ValueError(f"BatchRenorm: rmax must be a number >= 1 (r is clipped to [1/rmax, rmax]), got {rmax!r}")
        if not isinstance(dmax, (int, float)) or isinstance(dmax, bool) or not dmax >= 0:
            raise ValueError(f"BatchRenorm: dmax must be a number >= 0 (d is clipped to [-dmax, dmax]), got {dmax!r}")
        try:
            steps = operator.index(warmup_steps) if not isinstance(warmup_steps, bool) else -1
        except TypeError:
            steps = -1
        if steps < 0:
            raise ValueError(f"BatchRenorm: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias,
                         channel_dim=channel_dim)
        self.rmax = float(rmax)
        self.dmax = float(dmax)
        self.warmup_steps = steps

    def _limits(self) -> tuple[Tensor | float, Tensor | float]:
        """(rmax, dmax) in force at this step: 0-dim tensors on the buffers' device during the ramp (no host sync)."""
        if not self.warmup_steps:
            return self.rmax, self.dmax
        frac = (self.num_batches_tracked.to(torch.float32) / self.warmup_steps).clamp(max=1.0)
        return 1 + (self.rmax - 1) * frac, self.dmax * frac

    def current_limits(self) -> tuple[float, float]:
        """The (rmax, dmax) the next training step clips r and d to (reads the step count on the host)."""
        r, d = self._limits()
        return round(float(r), 6), round(float(d), 6)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not self._use_batch_stats():  # eval or frozen: BatchNorm with running statistics
            return super().forward(x, mask)
        rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
        if x.numel() == 0:
            return super().forward(x, mask)
        shift, corr, var, count = self._batch_moments(x, rdims, mask)
        self._check_count(count, x)
        cdtype = shift.dtype
        rstd = torch.rsqrt(var + eps)  # 1 / sigma_B, differentiable
        with torch.no_grad():  # r and d are constants for autograd, from the statistics before this batch
            inv_sigma = torch.rsqrt(self._param_view(self.running_var, x, pdims).to(cdtype) + eps)
            rmax, dmax = self._limits()
            r = torch.clamp(inv_sigma / rstd, min=1 / rmax, max=rmax)
            d = torch.clamp(((shift + corr) - self._param_view(self.running_mean, x, pdims).to(cdtype)) * inv_sigma,
                            min=-dmax, max=dmax)
        if self._updates_running_stats():
            self._update_running_stats(shift + corr, var, count, rdims, pdims)
        # ((x - mu_B) / sigma_B * r + d) * gamma + beta, centred in two steps as normlab.functional does
        scale, offset = rstd * r, d
        if weight is not None:
            scale, offset = scale * weight.to(cdtype), offset * weight.to(cdtype)
        if bias is not None:
            offset = offset + bias.to(cdtype)
        return (((x.to(cdtype) - shift) - corr) * scale + offset).to(x.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rmax={self.rmax:g}, dmax={self.dmax:g}, warmup_steps={self.warmup_steps}"

r"""Ghost BatchNorm (Hoffer et al. 2017): BatchNorm whose training statistics come from chunks of the batch."""

from __future__ import annotations

import operator

import torch
from torch import Tensor

from .. import functional as NF
from .batchnorm import BatchNorm

__all__ = ["GhostBatchNorm"]


class GhostBatchNorm(BatchNorm):
    r"""BatchNorm over "ghost" batches: in training, each chunk of ``virtual_batch_size`` samples is
    normalized with its own statistics.

    .. math::

        y_{i} = \gamma_c \cdot \frac{x_{i} - \mathrm{E}_{g(i),*}[x]}{\sqrt{\mathrm{Var}_{g(i),*}[x] + \epsilon}}
        + \beta_c

    where :math:`g(i)` is the chunk of sample i: samples ``0..k-1``, ``k..2k-1``,
    ... along the batch dim (dim 0); a last, smaller chunk takes the rest.
    The per-chunk mean and biased variance are taken per channel over the
    chunk's samples and every other non-channel dim, exactly as BatchNorm
    on that chunk alone.  This is what a data-parallel BatchNorm on
    processes of ``k`` samples each computes, in one process, and it keeps
    BatchNorm's noise (its regularization) fixed when the batch grows
    (Hoffer et al. 2017).  With ``k >= N`` there is one chunk and the layer
    is BatchNorm (tested, running statistics included).

    Running statistics (the choice made here): **one update per training
    step**, from the chunks' pooled statistics, with the layer's
    ``momentum``: the count-weighted mean of the chunk means (= the batch
    mean) and the count-weighted mean of the chunks' *unbiased* variances
    (the within-chunk variance the normalization used, bias-corrected).
    Keras's ``virtual_batch_size`` also updates once, from the chunks'
    average; the alternative, one update per chunk at ``momentum``, would
    make the EMA's horizon shrink as the batch grows.  ``num_batches_tracked``
    counts steps.  Eval mode (and frozen) is exactly :class:`BatchNorm`.

    Args:
        num_features: C, the size of the channel dim.
        virtual_batch_size: k, the samples per ghost batch (>= 1).
        eps, momentum, affine, track_running_stats, bias, channel_dim, device, dtype: as
            :class:`BatchNorm` (``channel_dim`` must not be the batch dim 0).

    Pitfalls: as in BatchNorm, each chunk must give every channel at least
    two values in training (``k = 1`` on an (N, C) input is an error).

    Shape:
        - Input: ``(N, C, *)`` (``channel_dim=1``) or ``(N, *, C)`` (``channel_dim=-1``); chunks along N.
        - mask (optional): the input's shape without the channel dim, bool.
        - Output: same shape and dtype as the input.

    Example::

        >>> import torch
        >>> from normlab.layers import BatchNorm, GhostBatchNorm
        >>> gbn = GhostBatchNorm(16, virtual_batch_size=4)
        >>> x = torch.randn(32, 16, 8, 8)
        >>> y = gbn(x)                                   # 8 ghost batches of 4
        >>> torch.allclose(y[:4], BatchNorm(16)(x[:4]), atol=1e-5)
        True

    Paper: E. Hoffer, I. Hubara, D. Soudry, "Train longer, generalize better:
    closing the generalization gap in large batch training of neural
    networks", NeurIPS 2017.
    """

    def __init__(self, num_features: int, virtual_batch_size: int = 32, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, track_running_stats: bool = True,
                 device=None, dtype=None, *, bias: bool = True, channel_dim: int = 1) -> None:
        try:
            k = operator.index(virtual_batch_size) if not isinstance(virtual_batch_size, bool) else 0
        except TypeError:
            k = 0
        if k < 1:
            raise ValueError(f"GhostBatchNorm: virtual_batch_size must be an int >= 1 (samples per ghost batch), "
                             f"got {virtual_batch_size!r}")
        if channel_dim == 0:
            raise ValueError("GhostBatchNorm: channel_dim=0 is the batch dim the ghost batches split; "
                             "use channel_dim=1 (N, C, *) or -1 (N, *, C)")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         channel_dim=channel_dim)
        self.virtual_batch_size = k

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if not self._use_batch_stats() or not isinstance(x, Tensor) or x.ndim < 2 \
                or x.shape[0] <= self.virtual_batch_size or x.numel() == 0:
            return super().forward(x, mask)  # one chunk (or running statistics): BatchNorm itself
        rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
        if 0 in pdims:
            raise ValueError(f"GhostBatchNorm: the channel dim resolves to the batch dim 0 of a {x.ndim}-D input "
                             f"of shape {tuple(x.shape)}; ghost batches split dim 0")
        if mask is not None:
            mask = mask.expand(tuple(1 if d in pdims else s for d, s in enumerate(x.shape)))
        n, k = x.shape[0], self.virtual_batch_size
        full = n // k * k
        cdims = tuple(d + 1 for d in rdims)  # in the (chunks, k, ...) view: the chunk's samples, every other dim
        outs, pooled = [], []
        for lo, hi, size in ((0, full, k), (full, n, n - full)):
            if hi == lo:
                continue
            xs = x[lo:hi].reshape((hi - lo) // size, size, *x.shape[1:])
            ms = None if mask is None else mask[lo:hi].reshape((hi - lo) // size, size, *mask.shape[1:])
            shift, corr, var, count = NF._stats(xs, cdims, True, ms)
            self._check_count(count, x)
            outs.append(NF.normalize_with(xs, shift, var, weight, bias, eps=eps, corr=corr).reshape(hi - lo,
                                                                                                   *x.shape[1:]))
            pooled.append((shift + corr, var, count))
        if self._updates_running_stats():
            self._update_from_chunks(pooled, pdims[0] + 1)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _update_from_chunks(self, pooled: list[tuple[Tensor, Tensor, Tensor | int]], cdim: int) -> None:
        """One running-statistics update from the chunks' count-weighted means and unbiased variances.

        ``pooled`` holds each part's per-chunk ``(mean, var, count)`` in the (chunks, k, ...) view,
        whose channel dim is ``cdim``.
        """
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self._batch_weight()
            sums = []
            enough = []
            for mean, var, count in pooled:
                c = torch.as_tensor(count, dtype=var.dtype, device=var.device).expand(var.shape)
                unbiased = var * (c / (c - 1).clamp_min(1))
                dims = tuple(d for d in range(var.ndim) if d != cdim)
                sums.append(torch.stack([t.sum(dims) for t in (c, c * mean, c * unbiased)]))  # (3, C)
                enough.append((c >= self._min_count()).movedim(cdim, -1).reshape(-1, self.shape[0]).all(0))
            w, m, v = torch.stack(sums).sum(0)
            total = w.clamp_min(1)
            bmean = (m / total).to(self.running_mean.dtype)
            bvar = (v / total).to(self.running_var.dtype)
            finite = torch.isfinite(bmean) & torch.isfinite(bvar)
            valid = finite & torch.stack(enough).all(0)
            self._fold_running(bmean, bvar, factor, valid, finite)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"

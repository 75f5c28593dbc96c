"""Batch Renorm (and BatchNorm) on P processes of b samples each, simulated in one forward (C16, C35).

:class:`ChunkedBatchRenorm` normalizes each chunk of ``b`` samples along the batch dim with that chunk's own
statistics and corrects it by r and d against the running statistics, exactly as
:class:`~normlab.layers.BatchRenorm` does on a process that holds that chunk.  The running statistics are
those of the first process: one update a step from the first chunk's statistics, which every chunk then uses, as
DistributedDataParallel does by default (it broadcasts rank 0's buffers before each forward); the ramp of the
limits counts steps.  With ``rmax = 1, dmax = 0`` (r = 1, d = 0) it is BatchNorm on each process, rank 0's
running statistics included: what per-process BatchNorm evaluates with (an estimate from b samples a step, noisier
than one pooled over the processes).  Running the model on each chunk in turn (32 / b forwards a step) computes
the same normalization at 32 / b times the cost."""

from __future__ import annotations

import torch
from torch import Tensor

from ...layers import BatchRenorm


class ChunkedBatchRenorm(BatchRenorm):
    """BatchRenorm whose training statistics (and r, d) are per chunk of ``chunk`` samples, its running statistics
    the first chunk's (rank 0's); input ``(N, C, *)``."""

    def __init__(self, num_features: int, chunk: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        if chunk < 1:
            raise ValueError(f"ChunkedBatchRenorm: chunk must be >= 1 sample, got {chunk}")
        self.chunk = chunk

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None or not self._use_batch_stats() or self.channel_dim != 1:
            if mask is not None or self.channel_dim != 1:
                raise ValueError("ChunkedBatchRenorm takes (N, C, *) inputs without a mask")
            return super().forward(x)
        n, b = x.shape[0], self.chunk
        if n % b:
            raise ValueError(f"ChunkedBatchRenorm: the batch ({n}) must be a multiple of the chunk ({b})")
        g = x.reshape(n // b, b, *x.shape[1:])  # (G, b, C, *)
        dims = (1, *range(3, g.ndim))
        shape = (1, 1, g.shape[2]) + (1,) * (g.ndim - 3)
        mu = g.mean(dim=dims, keepdim=True)  # (G, 1, C, 1...)
        var = g.var(dim=dims, unbiased=False, keepdim=True)
        rstd = torch.rsqrt(var + self.eps)
        with torch.no_grad():  # r and d: constants for autograd, from the statistics before this step
            inv_sigma = torch.rsqrt(self.running_var.view(shape) + self.eps)
            rmax, dmax = self._limits()
            r = torch.clamp(inv_sigma / rstd, min=1 / rmax, max=rmax)
            d = torch.clamp((mu - self.running_mean.view(shape)) * inv_sigma, min=-dmax, max=dmax)
            count = g[0].numel() // g.shape[2]  # values per channel in one chunk
            m = self.momentum if self.momentum is not None else 1 / (float(self.num_batches_tracked) + 1)
            self.running_mean.mul_(1 - m).add_(mu[0].flatten(), alpha=m)  # rank 0's chunk
            self.running_var.mul_(1 - m).add_(var[0].flatten() * count / max(count - 1, 1), alpha=m)
            self.num_batches_tracked.add_(1)
        y = (g - mu) * (rstd * r) + d
        if self.weight is not None:
            y = y * self.weight.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y.reshape(x.shape)


def chunk_renorms(net, chunk: int):
    """Replace every BatchRenorm of ``net`` by a :class:`ChunkedBatchRenorm` of ``chunk`` with the same state."""
    for name, m in list(net.named_modules()):
        if type(m) is BatchRenorm:
            new = ChunkedBatchRenorm(m.num_features, chunk, eps=m.eps, momentum=m.momentum, rmax=m.rmax,
                                     dmax=m.dmax, warmup_steps=m.warmup_steps)
            new.load_state_dict(m.state_dict())
            parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
            setattr(parent, name.rpartition(".")[2], new)
    return net

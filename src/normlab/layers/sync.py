r"""SyncBatchNorm: BatchNorm whose statistics span every process of a ``torch.distributed`` group."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import functional as NF
from ._swap import TORCH_BATCHNORM_TYPES, replace_modules, take_tensors
from .batchnorm import BatchNorm

__all__ = ["SyncBatchNorm", "all_reduce_sum"]


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over a process group; the gradient is summed over the group too.

    If every rank computes ``y = sum_r x_r`` then ``dL/dx_r = sum_i dL/dy_i``,
    so the backward is the same all-reduce.  This is what lets autograd carry
    SyncBatchNorm's backward reductions across processes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, group) -> Tensor:
        ctx.group = group
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM, group=group)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None


def all_reduce_sum(x: Tensor, group=None) -> Tensor:
    """Differentiable sum of ``x`` over the processes of ``group`` (default: the world)."""
    return _AllReduceSum.apply(x, group)


class SyncBatchNorm(BatchNorm):
    r"""BatchNorm over the global batch of all processes in a ``torch.distributed`` group.

    In training, the statistics are those of the concatenation of every
    process's batch: each process contributes its element count, sum and
    (second pass) centred sums, so uneven batch sizes, a process with an
    empty batch and masks all give exactly the global statistics.  The
    reductions are differentiable all-reduces, so the input gradient also
    sees the whole global batch.  Works on CPU with the ``gloo`` backend
    (``torch.nn.SyncBatchNorm`` refuses CPU tensors) and on CUDA with
    ``nccl``.  Two all-reduces forward, two backward, each of 2*C values.

    ``weight``/``bias`` gradients are the local contributions (as in
    torch): their sum over processes, which DDP's gradient all-reduce forms,
    is the gradient of the summed loss.

    Outside training, with a world of one process, or without an
    initialized process group, it is exactly :class:`BatchNorm`.

    Args:
        num_features, eps, momentum, affine, track_running_stats, bias, channel_dim: as :class:`BatchNorm`.
        process_group: the group to synchronize over (default: the world).

    Shape:
        - Input: ``(N, C, *)`` (or ``(*, C)`` with ``channel_dim=-1``); N may
          differ between processes, or be 0 on some.
        - Output: same shape and dtype.

    Example (run under ``torchrun --nproc-per-node 2``)::

        import torch, torch.distributed as dist
        from normlab import SyncBatchNorm
        dist.init_process_group("gloo")
        bn = SyncBatchNorm(16)
        y = bn(torch.randn(4, 16, 8, 8))    # statistics over 2 x 4 samples
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, *, bias: bool = True, channel_dim: int = 1) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype,
                         bias=bias, channel_dim=channel_dim)
        self.process_group = process_group

    def _sync_group(self):
        """The group to reduce over, or None when there is nothing to synchronize."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def _fast_paths_allowed(self) -> bool:
        return self._sync_group() is None  # across processes the statistics need the all-reduces below

    def _batch_moments(self, x: Tensor, rdims: tuple[int, ...], mask: Tensor | None):
        group = self._sync_group()
        if group is None:
            return super()._batch_moments(x, rdims, mask)
        xc = x.to(NF.compute_dtype(x.dtype))
        if mask is None:
            keep = None
            count = xc.new_full([1 if d in rdims else s for d, s in enumerate(x.shape)],
                                float(NF.numel_over(x.shape, rdims)))
        else:
            keep = mask.expand(x.shape)
            count = keep.sum(rdims, keepdim=True, dtype=xc.dtype)
            xc = xc.masked_fill(~keep, 0)
        # pass 1: global count and sum -> global mean
        total = all_reduce_sum(torch.stack([count, xc.sum(rdims, keepdim=True)]), group)
        n = total[0].detach()
        mean = total[1] / n.clamp_min(1)
        # pass 2: global centred sums -> corrected two-pass variance
        d = xc - mean
        if keep is not None:
            d = d.masked_fill(~keep, 0)
        sums = all_reduce_sum(torch.stack([d.sum(rdims, keepdim=True), d.square().sum(rdims, keepdim=True)]), group)
        c = sums[0] / n.clamp_min(1)
        var = (sums[1] / n.clamp_min(1) - c.square()).clamp_min(0)
        return mean, c, var, n

    def extra_repr(self) -> str:
        return super().extra_repr() + (", process_group=custom" if self.process_group is not None else "")

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every BatchNorm (torch's or normlab's) in ``module`` by a :class:`SyncBatchNorm`.

        Parameters and buffers are shared with the replaced layer (not
        copied), train/eval state and freezing are kept.  Returns the module
        (a new one if ``module`` itself was a BatchNorm).

        Example::

            >>> import torch
            >>> from normlab import SyncBatchNorm
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
            >>> net = SyncBatchNorm.convert_sync_batchnorm(net)
            >>> type(net[1]).__name__
            'SyncBatchNorm'
        """
        def to_sync(m: nn.Module) -> nn.Module | None:
            torch_bn = type(m) in TORCH_BATCHNORM_TYPES
            if not (torch_bn or isinstance(m, BatchNorm)) or isinstance(m, SyncBatchNorm):
                return None
            group = m.process_group if type(m) is nn.SyncBatchNorm else process_group  # torch's keeps its group
            new = cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, group,
                      device="meta", bias=m.bias is not None, channel_dim=1 if torch_bn else m.channel_dim)
            return take_tensors(m, new)

        return replace_modules(module, to_sync)


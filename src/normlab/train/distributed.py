"""Data-parallel training: :func:`normlab.train.train` under ``torchrun`` (or any initialized process group).

Each process draws the same global batch (the data order is seeded by the
run's seed, identical on every rank) and trains on its contiguous shard of
it; :class:`~torch.nn.parallel.DistributedDataParallel` averages the
gradients, so with equal shards a step is the step of one process on the
global batch, BatchNorm aside: per-process BatchNorm sees only its shard
(claim C16), and ``TrainConfig(sync_batchnorm=True)`` converts every
BatchNorm to :class:`normlab.SyncBatchNorm` (exact global statistics).  The
logged loss is the mean over ranks (so every rank stops at the same step
when a run diverges); rank 0 writes the record.

Usage (one machine, 2 processes on CPU)::

    torchrun --nproc_per_node 2 my_train.py     # my_train.py: init_distributed(); train(model, task, cfg, ...)
"""

from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["init_distributed", "world", "ShardedTask", "prepare_model", "mean_over_ranks"]


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT); ``(rank, world)``.

    Backend: nccl when CUDA is available, else gloo.  A process started without
    torchrun (no WORLD_SIZE) stays alone: ``(0, 1)``.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size()


def world(enabled: bool | None) -> tuple[int, int]:
    """``(rank, world_size)`` of the data-parallel group train() uses; ``(0, 1)`` when it trains alone.

    ``enabled=None``: data-parallel exactly when a process group of more than one process is initialized.
    """
    active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if enabled and not active:
        raise RuntimeError("TrainConfig(distributed=True) needs an initialized process group of 2+ processes: "
                           "launch with torchrun and call normlab.train.init_distributed() first")
    if enabled is False or not active:
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def _shard(x, rank: int, world_size: int):
    if isinstance(x, Tensor):
        n = x.shape[0]
        if n % world_size:
            raise ValueError(f"data-parallel training needs a global batch divisible by the {world_size} "
                             f"processes, got a batch of {n}")
        k = n // world_size
        return x[rank * k:(rank + 1) * k]
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(_shard(v, rank, world_size) for v in x)
    if hasattr(x, "_fields"):  # a named tuple
        return type(x)(*(_shard(v, rank, world_size) for v in x))
    if hasattr(x, "__dataclass_fields__"):
        return replace(x, **{k: _shard(getattr(x, k), rank, world_size) for k in x.__dataclass_fields__})
    return x


class ShardedTask:
    """A task whose training batches are this rank's contiguous shard of the global batch (eval unchanged)."""

    def __init__(self, task, rank: int, world_size: int):
        self.task, self.rank, self.world_size = task, rank, world_size

    def train_batch(self, gen: torch.Generator):
        return _shard(self.task.train_batch(gen), self.rank, self.world_size)

    def loss(self, model: nn.Module, batch) -> Tensor:
        return self.task.loss(model, batch)

    def evaluate(self, model: nn.Module, n_batches: int = 10) -> dict:
        return self.task.evaluate(model, n_batches)

    def describe(self) -> dict:
        return {**self.task.describe(), "data_parallel": {"world_size": self.world_size}}


def prepare_model(model: nn.Module, sync_batchnorm: bool) -> tuple[nn.Module, nn.Module]:
    """``(model to optimize and evaluate, DDP wrapper to train with)``; BatchNorm -> SyncBatchNorm on request."""
    from torch.nn.parallel import DistributedDataParallel

    from ..layers import SyncBatchNorm

    if sync_batchnorm:
        model = SyncBatchNorm.convert_sync_batchnorm(model)
    device = next(model.parameters()).device
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, ddp


def mean_over_ranks(value: float) -> float:
    """The mean of a float over the ranks (every rank gets it)."""
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()

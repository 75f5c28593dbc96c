"""What a layer asks the kernels to compute: a plain description of one call, no module in it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

__all__ = ["Call", "Running"]


class Running(NamedTuple):
    """A layer's running statistics, as the kernels read them (given statistics) or fold a batch's into them.

    The fold is ``running = lerp(running, batch, factor)`` with the unbiased batch variance, where
    ``factor`` is ``momentum``, or ``1 / batches`` when ``momentum`` is None; ``batches`` is counted up
    first when ``count_batch``; a feature whose batch statistics are non-finite or come from fewer than
    ``min_count`` values keeps its running values.
    """

    mean: Tensor
    var: Tensor
    batches: Tensor
    momentum: float | None
    min_count: int
    count_batch: bool


@dataclass(frozen=True)
class Call:
    """One normalization call: ``normalize(x)`` over ``rdims`` with the affine along ``pdims``.

    ``rdims``/``pdims`` are the reduced and the parameter dims of the input (non-negative, resolved
    on it); ``center`` subtracts the mean (False: RMSNorm); ``affine`` says a weight or a bias is
    applied; ``groups`` cuts dim ``group_dim`` into that many groups (GroupNorm); ``batch_stats``
    normalizes with the batch's statistics, else with ``running``'s (given statistics);
    ``update`` folds the batch statistics into ``running``.
    """

    rdims: tuple[int, ...]
    pdims: tuple[int, ...]
    center: bool = True
    affine: bool = False
    groups: int | None = None
    group_dim: int = 1
    batch_stats: bool = True
    running: Running | None = None
    update: bool = False

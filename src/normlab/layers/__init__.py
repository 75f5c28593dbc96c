"""normlab's normalization modules: the general :class:`Norm` and its named presets."""

from .batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, freeze_batchnorm
from .conversion import convert
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .layernorm import LayerNorm, LayerNorm2d
from .norm import Norm
from .rmsnorm import RMSNorm
from .sync import SyncBatchNorm

__all__ = [
    "Norm", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LayerNorm2d", "RMSNorm", "GroupNorm", "SyncBatchNorm",
    "convert", "freeze_batchnorm",
]

"""normlab's normalization modules: the general :class:`Norm` and its named presets.

The whole-model tools (``convert``, ``to_torch``, ``fold_batchnorm``, ...) live in :mod:`normlab.tools`."""

from .batchnorm import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d
from .dyt import DyT
from .evonorm import EvoNormB0, EvoNormS0
from .frn import TLU, FilterResponseNorm
from .ghost import GhostBatchNorm
from .groupnorm import GroupNorm
from .instancenorm import InstanceNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .layernorm import LayerNorm, LayerNorm2d
from .norm import Norm
from .renorm import BatchRenorm
from .rmsnorm import RMSNorm
from .scalenorm import ScaleNorm
from .sync import SyncBatchNorm
from .weightnorm import WeightNorm, remove_weight_norm, weight_norm
from .wsconv import WSConv1d, WSConv2d, WSConv3d, standardize_weight

__all__ = [
    "Norm", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm", "InstanceNorm1d",
    "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LayerNorm2d", "RMSNorm", "GroupNorm", "SyncBatchNorm",
    "DyT", "ScaleNorm", "WeightNorm", "weight_norm", "remove_weight_norm",
    "BatchRenorm", "GhostBatchNorm", "FilterResponseNorm", "TLU", "EvoNormB0", "EvoNormS0", "WSConv1d", "WSConv2d",
    "WSConv3d", "standardize_weight",
]

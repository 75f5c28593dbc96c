"""normlab: normalization layers for PyTorch as one family.

Every normalizer computes ``y = gamma * (x - mean) / sqrt(var + eps) + beta``
and differs only in the dims it reduces over, the dims its affine parameters
cover, and whether it re-centers.  :mod:`normlab.functional` holds the one
formula, :class:`normlab.Norm` the general module, and the named layers
(:class:`BatchNorm`, :class:`LayerNorm`, :class:`RMSNorm`, ...) are presets.
"""

from . import functional, kernels
from .kernels import use_reference
from .layers.norm import add_norm
from .layers import (
    TLU,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    BatchRenorm,
    DyT,
    EvoNormB0,
    EvoNormS0,
    FilterResponseNorm,
    GhostBatchNorm,
    GroupNorm,
    InstanceNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    LayerNorm2d,
    Norm,
    RMSNorm,
    ScaleNorm,
    SyncBatchNorm,
    WSConv1d,
    WSConv2d,
    WSConv3d,
    weight_norm,
)
from .tools import (
    ConversionReport,
    FoldEntry,
    convert,
    fold_batchnorm,
    freeze_batchnorm,
    recompute_batchnorm_stats,
    to_torch,
)
from .doctor import Diagnosis, Finding, doctor
from .train.param_groups import param_groups

__version__ = "0.1.0"

__all__ = [
    "functional", "Norm", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm", "LayerNorm2d", "RMSNorm", "GroupNorm",
    "SyncBatchNorm", "convert", "freeze_batchnorm", "DyT", "ScaleNorm", "weight_norm", "kernels", "add_norm",
    "use_reference", "doctor", "Diagnosis", "Finding", "param_groups", "BatchRenorm", "GhostBatchNorm",
    "FilterResponseNorm", "TLU", "EvoNormB0", "EvoNormS0", "WSConv1d", "WSConv2d", "WSConv3d",
    "recompute_batchnorm_stats", "fold_batchnorm", "FoldEntry", "to_torch", "ConversionReport", "__version__",
]

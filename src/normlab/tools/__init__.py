"""Whole-model tools: swap a model's normalization layers for normlab's and back, fold, freeze and recompute
BatchNorm.  They sit above :mod:`normlab.layers` (they import every layer; no layer imports them)."""

from .conversion import ConversionReport, Converted, Left, convert, freeze_batchnorm, to_torch
from .folding import FoldEntry, fold_batchnorm
from .precise import recompute_batchnorm_stats

__all__ = ["convert", "to_torch", "ConversionReport", "Converted", "Left", "fold_batchnorm", "FoldEntry",
           "freeze_batchnorm", "recompute_batchnorm_stats"]

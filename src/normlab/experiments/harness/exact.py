"""The deterministic checks of C04-C06 and C08: one run per seed on fresh random inputs, the CNN tensor's shape."""

from __future__ import annotations

from ..spec import PerMode


SHAPE = (4, 6, 3, 3)  # N, C, H, W of the CNN tensor

EXACT_SEEDS = PerMode({"quick": 2, "full": 3})  # deterministic checks on fresh random inputs: seeds must agree


def exact_grid(mode):
    return [("exact", {})]

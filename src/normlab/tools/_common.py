"""What the tools share: which modules count as normlab layers."""

from __future__ import annotations

from torch import nn

__all__ = ["is_normlab_layer"]


def is_normlab_layer(m: nn.Module) -> bool:
    """A normlab layer, or a twin :func:`normlab.convert` built (models made of torch and normlab layers, e.g.
    normlab.models.ConvNet, are not)."""
    mod = type(m).__module__
    return mod.startswith("normlab.layers") or mod == "normlab.tools.twins"

"""A ConvNet whose stem conv is a plain conv even where the norm standardizes the others' weights (GN+WS).

Weight Standardization makes each filter zero-mean over its fan-in.  A stem filter of 3 weights (1 input
channel, kernel 3) standardized that way can only take differences of neighbouring samples: it is high-pass,
blind to the signal's level.  BiT's stem filter has 7x7x3 = 147 weights; Qiao et al. standardize the convs that
follow a normalizer.  Claims that compare GN+WS against BatchNorm use this net (C35)."""

from __future__ import annotations

from .cnn import build_net


def plain_stem_net(model: dict):
    """``build_net(model)`` with the stem's conv replaced by an ordinary conv holding the same initial weights."""
    import torch
    from torch import nn

    net = build_net(model)
    old = net.stem.conv
    if type(old) in (nn.Conv1d, nn.Conv2d):
        return net
    conv = (nn.Conv1d, nn.Conv2d)[net.cfg.dim - 1]
    new = conv(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
               bias=old.bias is not None)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    net.stem.conv = new
    return net


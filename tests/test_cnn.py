"""The ConvNet: every norm, architecture and dropout placement builds, runs and exposes its norms."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import normlab as nl
from normlab.models import CONV_NORMS, ConvNet, ConvNetConfig

COMBOS = list(itertools.product(CONV_NORMS, ["resnet", "plain", "vgg"], [(1, 40), (2, 8)]))


@pytest.mark.parametrize("norm,arch,dim_size", COMBOS, ids=[f"{n}-{a}-{d[0]}d" for n, a, d in COMBOS])
def test_builds_runs_and_trains_a_step(norm, arch, dim_size):
    dim, size = dim_size
    torch.manual_seed(0)
    net = ConvNet(ConvNetConfig(dim=dim, input_size=size, norm=norm, arch=arch, widths=(8, 16)))
    x = torch.randn(6, 1, *(size,) * dim)
    out = net(x)
    assert out.shape == (6, 10)
    nn.functional.cross_entropy(out, torch.arange(6)).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    norms = net.norm_layers()
    if norm in ("none", "weightnorm"):
        assert norms == {}
    else:
        assert "stem.norm" in norms and len(norms) >= 3
    if norm == "weightnorm":
        assert hasattr(net.stem.conv, "parametrizations")


def test_norm_axes_per_name():
    cfg = ConvNetConfig(dim=2, input_size=8, widths=(8,))
    for name, cls in [("batchnorm", nl.BatchNorm), ("groupnorm", nl.GroupNorm), ("layernorm", nl.LayerNorm),
                      ("layernorm2d", nl.LayerNorm2d), ("instancenorm", nl.InstanceNorm)]:
        cfg.norm = name
        assert isinstance(ConvNet(cfg).stem.norm, cls), name
    cfg.norm = "layernorm"
    assert ConvNet(cfg).stem.norm.normalized_shape == (8, 8, 8)  # (C, H, W)


def test_dropout_placement():
    before = ConvNet(ConvNetConfig(dropout=0.5, dropout_place="before_norm"))
    after = ConvNet(ConvNetConfig(dropout=0.5, dropout_place="after_norm"))
    assert isinstance(before.stem.drop_before, nn.Dropout) and isinstance(before.stem.drop_after, nn.Identity)
    assert isinstance(after.stem.drop_after, nn.Dropout) and isinstance(after.stem.drop_before, nn.Identity)
    with pytest.raises(ValueError, match="dropout_place must be"):
        ConvNet(ConvNetConfig(dropout_place="middle"))


def test_gamma_zero_init_kills_the_signal_through_the_norm():
    net = ConvNet(ConvNetConfig(arch="plain", gamma_init=0.0, widths=(8, 16)))
    assert all((m.weight == 0).all() for m in net.norm_layers().values())
    out = net(torch.randn(4, 1, 40))
    torch.testing.assert_close(out, out[:1].expand_as(out))  # every input gives the same output


def test_bad_config_and_input_are_named():
    with pytest.raises(ValueError, match="unknown norm 'batch'"):
        ConvNet(ConvNetConfig(norm="batch"))
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 1, 40\), got \(2, 1, 41\)"):
        ConvNet(ConvNetConfig())(torch.randn(2, 1, 41))
    with pytest.raises(ValueError, match="too small"):
        ConvNet(ConvNetConfig(input_size=2, widths=(4, 8, 16)))

"""normlab.convert keeps models' outputs; freezing BatchNorm survives .train()."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import normlab as nl
from normlab.tools.conversion import CONVERTIBLE_TYPES


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.GroupNorm(2, 8))
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 6 * 6, 16), nn.BatchNorm1d(16), nn.LayerNorm(16),
                                  nn.RMSNorm(16), nn.Linear(16, 4))

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(h + self.block(h))
        return self.head(self.inorm(h))


class TinyTransformer(nn.Module):
    def __init__(self, d=16):
        super().__init__()
        self.emb = nn.Embedding(20, d)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True,
                                                               norm_first=nf) for nf in (True, False))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 20)

    def forward(self, idx):
        h = self.emb(idx)
        for layer in self.layers:
            h = layer(h)
        return self.out(self.norm(h))


def _outputs_equal(model, x, train):
    ref = copy.deepcopy(model).train(train)
    conv = nl.convert(copy.deepcopy(model).train(train))
    assert not any(type(m) in CONVERTIBLE_TYPES for m in conv.modules())
    torch.testing.assert_close(conv(x), ref(x), rtol=1e-12, atol=1e-12)
    return conv, ref


@pytest.mark.parametrize("train", [True, False])
def test_convert_resnet_like_keeps_outputs_and_running_stats(train):
    model = TinyResNet().double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    conv, ref = _outputs_equal(model, x, train)
    for (n, a), (_, b) in zip(conv.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, msg=n)
    assert [n for n, _ in conv.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert conv.state_dict().keys() == ref.state_dict().keys()


@pytest.mark.parametrize("train", [True, False])
def test_convert_transformer_keeps_outputs(train):
    model = TinyTransformer().double()
    _outputs_equal(model, torch.randint(0, 20, (3, 7)), train)


def test_convert_shares_tensors_and_keeps_state():
    bn = nn.BatchNorm2d(4).eval()
    bn.weight.requires_grad_(False)
    net = nn.Sequential(nn.Conv2d(1, 4, 1), bn)
    w, rm = bn.weight, bn.running_mean
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net = nl.convert(net)
    assert isinstance(net[1], nl.BatchNorm2d) and not net[1].training
    assert net[1].weight is w and net[1].running_mean is rm and not net[1].weight.requires_grad
    assert any(p is net[1].bias for g in opt.param_groups for p in g["params"])


def test_convert_root_and_subclasses_and_types():
    assert isinstance(nl.convert(nn.LayerNorm(3)), nl.LayerNorm)

    class Custom(nn.BatchNorm2d):  # may change forward: left alone
        pass

    net = nn.Sequential(Custom(3), nn.LayerNorm(3))
    nl.convert(net, types=[nn.LayerNorm])
    assert type(net[0]) is Custom and isinstance(net[1], nl.LayerNorm)
    with pytest.raises(TypeError, match="convert cannot convert Linear"):
        nl.convert(net, types=[nn.Linear])
    lazy = nn.LazyBatchNorm1d()
    assert nl.convert(lazy) is lazy  # not materialized yet: left alone
    lazy(torch.randn(4, 3))  # its first forward makes it an nn.BatchNorm1d
    assert isinstance(nl.convert(lazy), nl.BatchNorm1d)


def test_freeze_survives_train_and_blocks_gradients():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    net[1].running_mean.uniform_(-1, 1)
    net = nl.freeze_batchnorm(net)
    bn = net[1]
    before = (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
    net.train()
    assert net.training and not bn.training and bn.frozen
    x = torch.randn(5, 3, 6, 6)
    y = net(x)
    y.sum().backward()
    assert bn.weight.grad is None and bn.bias.grad is None
    assert net[0].weight.grad is not None
    for a, b in zip(before, (bn.running_mean, bn.running_var, bn.num_batches_tracked)):
        assert torch.equal(a, b)
    ref = nn.functional.batch_norm(net[0](x), bn.running_mean, bn.running_var, bn.weight, bn.bias, False)
    torch.testing.assert_close(y, torch.relu(ref))
    bn.weight.requires_grad_(True)  # someone re-enables it: still no gradient while frozen
    net(x).sum().backward()
    assert bn.weight.grad is None
    assert "frozen=True" in repr(bn)
    bn.unfreeze()
    net.train()
    assert bn.training and bn.weight.requires_grad
    net(x)
    assert bn.num_batches_tracked == before[2] + 1


def test_freeze_needs_running_stats():
    with pytest.raises(ValueError, match="without running statistics"):
        nl.BatchNorm(3, track_running_stats=False).freeze()


def test_convert_sync_batchnorm():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nl.BatchNorm(4, channel_dim=1)))
    net[2][0].freeze()
    w = net[1].weight
    net = nl.SyncBatchNorm.convert_sync_batchnorm(net)
    assert isinstance(net[1], nl.SyncBatchNorm) and net[1].weight is w
    assert isinstance(net[2][0], nl.SyncBatchNorm) and net[2][0].frozen
    assert net[1].running_mean.device.type == "cpu"
    x = torch.randn(4, 3, 5, 5)
    net(x)  # no process group: plain BatchNorm


def test_extra_repr_lists_every_flag():
    r = repr(nl.BatchNorm(4, momentum=None, affine=False, channel_dim=-1))
    for flag in ("4", "eps=1e-05", "momentum=None", "affine=False", "bias=False", "track_running_stats=True",
                 "channel_dim=-1"):
        assert flag in r
    assert "bias=False" in repr(nl.LayerNorm(4, bias=False))
    assert "zero_centered_gamma=True" in repr(nl.RMSNorm(4, zero_centered_gamma=True))


def test_zero_centered_gamma_scales_by_one_plus_weight():
    x = torch.randn(3, 8)
    z = nl.RMSNorm(8, zero_centered_gamma=True)
    assert torch.equal(z.weight, torch.zeros(8))
    torch.testing.assert_close(z(x), nl.RMSNorm(8)(x))
    with torch.no_grad():
        z.weight.fill_(0.5)
    torch.testing.assert_close(z(x), 1.5 * nl.RMSNorm(8)(x))

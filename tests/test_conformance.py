"""Each normlab preset against its torch.nn twin: forward, backward, running stats, train/eval, state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import normlab as nl
from conftest import check_twins

DTYPES = [torch.float64, torch.float32]


def _pair(ours_cls, theirs_cls, *args, dtype, **kwargs):
    return ours_cls(*args, dtype=dtype, **kwargs), theirs_cls(*args, dtype=dtype, **kwargs)


BN_SHAPES = [
    (nl.BatchNorm1d, nn.BatchNorm1d, (7, 5)),
    (nl.BatchNorm1d, nn.BatchNorm1d, (4, 5, 9)),
    (nl.BatchNorm2d, nn.BatchNorm2d, (3, 6, 5, 7)),
    (nl.BatchNorm3d, nn.BatchNorm3d, (2, 3, 4, 3, 5)),
    (nl.BatchNorm, nn.BatchNorm2d, (2, 4, 1, 3)),
    (nl.BatchNorm, nn.BatchNorm1d, (2, 3)),
]
BN_FLAGS = [
    dict(),
    dict(momentum=None),
    dict(momentum=0.5, eps=1e-3),
    dict(affine=False),
    dict(track_running_stats=False),
    dict(bias=False),
    dict(affine=False, track_running_stats=False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", BN_FLAGS, ids=str)
@pytest.mark.parametrize("ours_cls,theirs_cls,shape", BN_SHAPES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm(ours_cls, theirs_cls, shape, flags, dtype, train):
    ours, theirs = _pair(ours_cls, theirs_cls, shape[1], dtype=dtype, **flags)
    if theirs.running_mean is not None:  # non-trivial running stats, so eval mode is tested too
        theirs.running_mean.uniform_(-1, 1)
        theirs.running_var.uniform_(0.5, 2)
    if theirs.weight is not None:
        nn.init.uniform_(theirs.weight, 0.5, 1.5)
    if theirs.bias is not None:
        nn.init.uniform_(theirs.bias, -0.5, 0.5)
    x = torch.randn(shape, dtype=dtype) * 3 + 1
    check_twins(ours, theirs, x, train=train)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_channel_last_equals_permuted_batchnorm1d(dtype):
    x = torch.randn(4, 9, 6, dtype=dtype)
    ours = nl.BatchNorm(6, channel_dim=-1, dtype=dtype)
    theirs = nn.BatchNorm1d(6, dtype=dtype)
    for _ in range(3):
        y = ours(x)
        ref = theirs(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(ours.running_var, theirs.running_var)


IN_CASES = [
    (nl.InstanceNorm1d, nn.InstanceNorm1d, (3, 4, 9)),
    (nl.InstanceNorm1d, nn.InstanceNorm1d, (4, 9)),  # unbatched
    (nl.InstanceNorm2d, nn.InstanceNorm2d, (2, 3, 5, 4)),
    (nl.InstanceNorm2d, nn.InstanceNorm2d, (3, 5, 4)),  # unbatched
    (nl.InstanceNorm3d, nn.InstanceNorm3d, (2, 3, 4, 3, 2)),
]
IN_FLAGS = [dict(), dict(affine=True), dict(track_running_stats=True), dict(affine=True, track_running_stats=True,
                                                                            momentum=0.3), dict(affine=True, bias=False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", IN_FLAGS, ids=str)
@pytest.mark.parametrize("ours_cls,theirs_cls,shape", IN_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("train", [True, False])
def test_instancenorm(ours_cls, theirs_cls, shape, flags, dtype, train):
    num_features = shape[1] if len(shape) == {nl.InstanceNorm1d: 3, nl.InstanceNorm2d: 4}.get(ours_cls, 5) else shape[0]
    ours, theirs = _pair(ours_cls, theirs_cls, num_features, dtype=dtype, **flags)
    if theirs.weight is not None:
        nn.init.uniform_(theirs.weight, 0.5, 1.5)
    x = torch.randn(shape, dtype=dtype) * 2 - 1
    check_twins(ours, theirs, x, train=train)


LN_CASES = [((4, 7, 16), 16), ((3, 5), (5,)), ((2, 6, 5, 5), (6, 5, 5)), ((2, 6, 5, 5), (5, 5)), ((8,), 8),
            ((2, 3, 1), 1)]
LN_FLAGS = [dict(), dict(elementwise_affine=False), dict(bias=False), dict(eps=1e-2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", LN_FLAGS, ids=str)
@pytest.mark.parametrize("shape,normalized_shape", LN_CASES, ids=str)
def test_layernorm(shape, normalized_shape, flags, dtype):
    ours, theirs = _pair(nl.LayerNorm, nn.LayerNorm, normalized_shape, dtype=dtype, **flags)
    if theirs.weight is not None:
        nn.init.uniform_(theirs.weight, 0.5, 1.5)
    if theirs.bias is not None:
        nn.init.uniform_(theirs.bias, -0.5, 0.5)
    x = torch.randn(shape, dtype=dtype) * 2 + 3
    check_twins(ours, theirs, x)


RMS_FLAGS = [dict(), dict(eps=1e-6), dict(elementwise_affine=False), dict(eps=0.5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", RMS_FLAGS, ids=str)
@pytest.mark.parametrize("shape,normalized_shape", LN_CASES, ids=str)
def test_rmsnorm(shape, normalized_shape, flags, dtype):
    ours, theirs = _pair(nl.RMSNorm, nn.RMSNorm, normalized_shape, dtype=dtype, **flags)
    if theirs.weight is not None:
        nn.init.uniform_(theirs.weight, 0.5, 1.5)
    x = torch.randn(shape, dtype=dtype) * 2 + 1
    check_twins(ours, theirs, x)


GN_CASES = [(2, 8, (3, 8, 5, 4)), (1, 6, (2, 6, 3)), (6, 6, (2, 6, 3, 3)), (3, 6, (4, 6)), (4, 8, (2, 8, 2, 3, 2)),
            (2, 4, (1, 4, 5))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("flags", [dict(), dict(affine=False), dict(bias=False), dict(eps=1e-3)], ids=str)
@pytest.mark.parametrize("groups,channels,shape", GN_CASES, ids=str)
def test_groupnorm(groups, channels, shape, flags, dtype):
    ours, theirs = _pair(nl.GroupNorm, nn.GroupNorm, groups, channels, dtype=dtype, **flags)
    if theirs.weight is not None:
        nn.init.uniform_(theirs.weight, 0.5, 1.5)
    if theirs.bias is not None:
        nn.init.uniform_(theirs.bias, -0.5, 0.5)
    x = torch.randn(shape, dtype=dtype) * 2 + 1
    check_twins(ours, theirs, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm2d_is_channels_last_layernorm(dtype):
    x = torch.randn(2, 6, 4, 5, dtype=dtype, requires_grad=True)
    ours = nl.LayerNorm2d(6, dtype=dtype)
    nn.init.uniform_(ours.weight, 0.5, 1.5)
    nn.init.uniform_(ours.bias, -0.5, 0.5)
    y = ours(x)
    x2 = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.layer_norm(x2.permute(0, 2, 3, 1), (6,), ours.weight, ours.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)


@pytest.mark.parametrize("ours_cls,theirs_cls,args", [
    (nl.BatchNorm2d, nn.BatchNorm2d, (4,)),
    (nl.InstanceNorm1d, nn.InstanceNorm1d, (4,)),
    (nl.LayerNorm, nn.LayerNorm, ((4, 3),)),
    (nl.RMSNorm, nn.RMSNorm, (4,)),
    (nl.GroupNorm, nn.GroupNorm, (2, 4)),
    (nl.SyncBatchNorm, nn.SyncBatchNorm, (4,)),
])
def test_state_dict_moves_both_ways(ours_cls, theirs_cls, args):
    kwargs = dict(affine=True, track_running_stats=True) if theirs_cls is nn.InstanceNorm1d else {}
    theirs, ours = theirs_cls(*args, **kwargs), ours_cls(*args, **kwargs)
    for t in theirs.state_dict().values():
        if t.is_floating_point():
            t.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())  # strict: identical keys
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in ours.state_dict().items():
        torch.testing.assert_close(v, theirs.state_dict()[k], rtol=0, atol=0)
    fresh = theirs_cls(*args, **kwargs)
    fresh.load_state_dict(ours.state_dict())
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(v, ours.state_dict()[k], rtol=0, atol=0)


def test_old_checkpoint_without_num_batches_tracked_loads():
    sd = nn.BatchNorm2d(3).state_dict()
    del sd["num_batches_tracked"]
    sd._metadata = {"": {"version": 1}}
    bn = nl.BatchNorm2d(3)
    bn.load_state_dict(sd)
    assert bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("ours_cls,theirs_cls,args", [
    (nl.BatchNorm2d, nn.BatchNorm2d, (4,)), (nl.LayerNorm, nn.LayerNorm, (4,)), (nl.RMSNorm, nn.RMSNorm, (4,)),
    (nl.GroupNorm, nn.GroupNorm, (2, 4)), (nl.InstanceNorm2d, nn.InstanceNorm2d, (4,)),
])
def test_constructor_defaults_and_attributes_match_torch(ours_cls, theirs_cls, args):
    ours, theirs = ours_cls(*args), theirs_cls(*args)
    for attr in ("num_features", "eps", "momentum", "affine", "track_running_stats", "normalized_shape",
                 "elementwise_affine", "num_groups", "num_channels"):
        if hasattr(theirs, attr):  # torch's RMSNorm has no bias attribute; normlab's is None
            assert getattr(ours, attr) == getattr(theirs, attr), attr
    for name in ("weight", "bias"):
        a, b = getattr(ours, name), getattr(theirs, name, None)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)


def test_dtype_and_device_kwargs():
    for cls, args in [(nl.BatchNorm, (3,)), (nl.LayerNorm, (3,)), (nl.GroupNorm, (1, 3)), (nl.RMSNorm, (3,))]:
        m = cls(*args, dtype=torch.float64, device="cpu")
        assert m.weight.dtype == torch.float64
    bn = nl.BatchNorm(3, dtype=torch.float16)
    assert bn.running_mean.dtype == torch.float16 and bn.num_batches_tracked.dtype == torch.long

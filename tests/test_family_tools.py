"""recompute_batchnorm_stats, fold_batchnorm, to_torch, convert's timm counterparts and the ConvNet's new norms."""

from __future__ import annotations

import copy
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from normlab.layers import (BatchNorm, BatchNorm1d, BatchNorm2d, BatchRenorm, EvoNormB0, EvoNormS0,
                            FilterResponseNorm, GhostBatchNorm, GroupNorm, InstanceNorm, InstanceNorm2d, LayerNorm,
                            LayerNorm2d, RMSNorm, SyncBatchNorm, WSConv1d, WSConv2d, weight_norm)
from normlab.tools import convert, fold_batchnorm, freeze_batchnorm, recompute_batchnorm_stats, to_torch
from normlab.models import CONV_NORMS, ConvNet, ConvNetConfig

F64 = dict(rtol=1e-12, atol=1e-12)


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_var", None) is not None:
                c = m.running_var.numel()
                m.running_var.copy_(torch.rand(c, generator=g, dtype=m.running_var.dtype) * 2 + 0.1)
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(torch.randn(c, generator=g, dtype=m.running_mean.dtype))
            for name in ("weight", "bias"):
                p = getattr(m, name, None)
                if isinstance(p, nn.Parameter) and p.ndim == 1 and not isinstance(m, (nn.Linear, nn.Conv2d)):
                    p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if name == "weight" else 0))
    return model


# ---------------------------------------------------------------------------------------- recompute (precise BN)
def _population(h: torch.Tensor, cdim: int = 1):
    flat = h.movedim(cdim, -1).reshape(-1, h.shape[cdim]).double()
    return flat.mean(0), flat.var(0, unbiased=True)


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, BatchNorm2d, BatchRenorm, GhostBatchNorm])
def test_recompute_gives_the_exact_population_statistics(bn_cls):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), bn_cls(6), nn.ReLU(), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4)).double()
    batches = [torch.randn(n, 3, 8, 8, dtype=torch.float64) * 2 + 1 for n in (5, 9, 3)]  # unequal: count-weighted
    net.eval()
    before = copy.deepcopy(net)  # Batch Renorm's r, d in the pass use the statistics from before it
    recompute_batchnorm_stats(net, batches)
    h1 = torch.cat([net[0](x) for x in batches])
    mean, var = _population(h1)
    torch.testing.assert_close(net[1].running_mean, mean, **F64)
    torch.testing.assert_close(net[1].running_var, var, **F64)
    # the second BN sees what the first passes on in training mode (batch statistics of each batch)
    with torch.no_grad():
        ref = before
        ref[1].train()
        ref[1].momentum = 0.0
        h2 = torch.cat([ref[3](ref[2](ref[1](ref[0](x)))) for x in batches])
    mean2, var2 = _population(h2)
    torch.testing.assert_close(net[4].running_mean, mean2, **F64)
    torch.testing.assert_close(net[4].running_var, var2, **F64)


def test_recompute_leaves_flags_momentum_and_counts_as_they_were():
    net = nn.Sequential(nn.Linear(4, 8), BatchNorm1d(8, momentum=None), nn.Dropout(0.5), nn.BatchNorm1d(8))
    net.train()
    net[3].eval()  # mixed flags
    for _ in range(3):
        net[1](torch.randn(6, 8))
    flags = [m.training for m in net.modules()]
    counts = (int(net[1].num_batches_tracked), int(net[3].num_batches_tracked))
    out = recompute_batchnorm_stats(net, (torch.randn(10, 4) for _ in range(4)), num_batches=2)
    assert out is net
    assert [m.training for m in net.modules()] == flags
    assert net[1].momentum is None and net[3].momentum == 0.1
    assert (int(net[1].num_batches_tracked), int(net[3].num_batches_tracked)) == counts


def test_recompute_honours_masks_and_feeds_every_batch_kind():
    class Seq(nn.Module):  # passes the mask to a channel-last BatchNorm, as normlab's GPT does
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 5)
            self.bn = BatchNorm(5, channel_dim=-1)

        def forward(self, x, mask=None):
            return self.bn(self.proj(x), mask=mask)

    torch.manual_seed(0)
    net = Seq().double().eval()
    xs = [torch.randn(4, 7, 3, dtype=torch.float64) for _ in range(3)]
    masks = [torch.rand(4, 7) > 0.3 for _ in range(3)]
    batches = [SimpleNamespace(x=x, mask=m, doc_ids=None) for x, m in zip(xs, masks)]
    recompute_batchnorm_stats(net, batches)
    with torch.no_grad():
        real = torch.cat([net.proj(x)[m] for x, m in zip(xs, masks)])  # (n, 5): padding left out
    torch.testing.assert_close(net.bn.running_mean, real.mean(0), **F64)
    torch.testing.assert_close(net.bn.running_var, real.var(0, unbiased=True), **F64)
    # tuples (input, target) and dicts of keyword arguments
    flat = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    data = [torch.randn(6, 3, dtype=torch.float64) for _ in range(2)]
    recompute_batchnorm_stats(flat, [(x, torch.zeros(6)) for x in data])
    a = flat[1].running_var.clone()
    recompute_batchnorm_stats(flat, [{"input": x} for x in data])
    torch.testing.assert_close(flat[1].running_var, a, **F64)
    with torch.no_grad():
        torch.testing.assert_close(a, _population(torch.cat([flat[0](x) for x in data]))[1], **F64)


def test_recompute_skips_frozen_and_untracked_layers_and_refuses_nothing_to_do():
    net = nn.Sequential(nn.Conv1d(2, 3, 1), BatchNorm(3), nn.Conv1d(3, 3, 1), BatchNorm(3, track_running_stats=False))
    freeze_batchnorm(net)
    before = net[1].running_var.clone()
    recompute_batchnorm_stats(net, [torch.randn(4, 2, 5)])
    assert torch.equal(net[1].running_var, before)  # frozen on purpose
    live = nn.Sequential(nn.Conv1d(2, 3, 1), BatchNorm(3))
    with pytest.raises(ValueError, match=r"no batch was given \(the iterable was empty\)"):
        recompute_batchnorm_stats(live, [])
    with pytest.raises(ValueError, match=r"num_batches must be an int >= 1 \(or None for all\), got 0"):
        recompute_batchnorm_stats(live, [torch.randn(2, 2, 3)], num_batches=0)
    with pytest.raises(TypeError, match=r"cannot feed a batch of type int"):
        recompute_batchnorm_stats(live, [3])


def test_recompute_keeps_a_channel_without_finite_values_and_warns():
    net = nn.Sequential(BatchNorm1d(3))
    x = torch.randn(8, 3)
    x[2, 1] = float("nan")
    before = net[0].running_var.clone()
    with pytest.warns(RuntimeWarning, match=r"kept their old running statistics: 0 \(channels \[1\]\)"):
        recompute_batchnorm_stats(net, [x])
    assert net[0].running_var[1] == before[1] and net[0].running_var[0] != before[0]


# ------------------------------------------------------------------------------------------------ folding
def _conv_bn(dtype):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 36, 10), nn.BatchNorm1d(10))
    return _randomize_bn(net).to(dtype).eval()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, dict(rtol=1e-12, atol=1e-12)),
                                       (torch.float32, dict(rtol=1e-5, atol=1e-5))])
def test_fold_is_exact_to_float_rounding(dtype, tol):
    net = _conv_bn(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    folded, report = fold_batchnorm(net, x, report=True)
    assert [(e.norm, e.folded, e.into) for e in report] == [("1", True, "0"), ("4", True, "3"), ("7", True, "6")]
    assert [type(m).__name__ for m in folded] == ["Conv2d", "Identity", "ReLU", "Conv2d", "Identity", "Flatten",
                                                  "Linear", "Identity"]
    assert folded[0].bias is not None and net[0].bias is None  # a bias appears; the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), **tol)


@pytest.mark.parametrize("dim,size", [(1, 40), (2, 8)])
def test_fold_folds_every_batchnorm_of_the_resnet_convnet(dim, size):
    torch.manual_seed(0)
    net = _randomize_bn(ConvNet(ConvNetConfig(dim=dim, input_size=size, arch="resnet", widths=(8, 16)))).double()
    net.eval()
    x = torch.randn(3, 1, *(size,) * dim, dtype=torch.float64)
    folded, report = fold_batchnorm(net, x, report=True)
    assert report and all(e.folded for e in report), [e for e in report if not e.folded]
    assert folded.norm_layers() == {} and len(net.norm_layers()) == len(report)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), **F64)


def test_fold_leaves_what_does_not_directly_follow_a_conv_and_says_why():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h  # the conv's output is used twice

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), BatchNorm2d(4), Skip(), WSConv2d(4, 4, 1), BatchNorm2d(4),
                        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False), nn.Conv2d(4, 4, 1),
                        BatchNorm2d(4))
    net.eval()
    net[9].train()
    _, report = fold_batchnorm(net, report=True)
    why = {e.norm: e.reason for e in report}
    assert not any(e.folded for e in report)
    assert why["2"] == "follows MaxPool2d '1', not a conv or linear layer"
    assert why["3.bn"].startswith("the output of '3.conv' is also used elsewhere (2 users)")
    assert why["5"].startswith("follows WSConv2d '4', a subclass of Conv2d")
    assert why["7"].startswith("has no running statistics")
    assert why["9"].startswith("in training mode")


def test_fold_reports_untraceable_parents_reused_modules_and_checks_outputs():
    class Checks(nn.Module):  # fx cannot trace a value-dependent branch
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 1)
            self.bn = nn.BatchNorm1d(3)
            self.inner = nn.Sequential(nn.Conv1d(3, 3, 1), nn.BatchNorm1d(3))

        def forward(self, x):
            if x.sum() > 1e9:
                return x
            return self.inner(self.bn(self.conv(x)))

    net = _randomize_bn(Checks()).eval()
    x = torch.randn(2, 2, 5)
    folded, report = fold_batchnorm(net, x, report=True)
    entries = {e.norm: e for e in report}
    assert entries["inner.1"].folded  # traced inside the child
    assert not entries["bn"].folded and "could not trace" in entries["bn"].reason
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x))
    conv, bn = nn.Conv1d(3, 3, 1), nn.BatchNorm1d(3)
    twice = nn.Sequential(conv, bn, conv, nn.BatchNorm1d(3)).eval()
    _, report = fold_batchnorm(twice, report=True)
    assert [e.folded for e in report] == [False, False]
    assert "is called 2 times" in report[0].reason
    # the fold is in place when asked, and a single module is refused by type
    net2 = _conv_bn(torch.float32)
    folded2 = fold_batchnorm(net2, inplace=True)
    assert folded2 is net2 and isinstance(net2[1], nn.Identity)
    with pytest.raises(TypeError, match=r"expects an nn.Module \(the model to fold\), got Tensor"):
        fold_batchnorm(torch.zeros(1))


def test_fold_into_a_linear_before_a_channel_last_batchnorm():
    net = _randomize_bn(nn.Sequential(nn.Linear(6, 5), BatchNorm(5, channel_dim=-1))).double().eval()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    folded, report = fold_batchnorm(net, x, report=True)
    assert report[0].folded
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), **F64)
    lin4d = nn.Sequential(nn.Linear(6, 6), nn.BatchNorm2d(6)).eval()
    assert "not the Linear's features" in fold_batchnorm(lin4d, report=True)[1][0].reason


# ---------------------------------------------------------------------------------------------- to torch
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNorm2d(8), nn.ReLU())
        self.gn = GroupNorm(2, 8)
        self.inorm = InstanceNorm2d(8, affine=True)
        self.bn_any = BatchNorm(8)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), BatchNorm1d(16), LayerNorm(16),
                                  RMSNorm(16), LayerNorm(16, zero_centered_gamma=True), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.bn_any(self.inorm(self.gn(self.stem(x)))))


@pytest.mark.parametrize("train", [True, False])
def test_to_torch_gives_torch_layers_with_the_same_outputs(train):
    torch.manual_seed(0)
    net = _randomize_bn(TinyNet()).double()
    with torch.no_grad():
        net.head[5].weight.add_(0.3)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    ref = copy.deepcopy(net).train(train)
    out = to_torch(net.train(train), example_inputs=x)
    assert not [n for n, m in out.named_modules() if type(m).__module__.startswith("normlab")]
    assert type(out.bn_any) is nn.BatchNorm2d and type(out.head[5]) is nn.LayerNorm
    torch.testing.assert_close(out(x), ref(x), **F64)
    for (n, a), (_, b) in zip(out.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, msg=n)
    assert out.state_dict().keys() == ref.state_dict().keys()
    torch.testing.assert_close(out.head[5].weight, ref.head[5].weight + 1)  # plain gamma


@pytest.mark.parametrize("dim,size", [(1, 40), (2, 8)])
def test_to_torch_converts_the_convnet_without_example_inputs(dim, size):
    import warnings

    net = _randomize_bn(ConvNet(ConvNetConfig(dim=dim, input_size=size, arch="resnet", widths=(8, 16)))).eval()
    x = torch.randn(3, 1, *(size,) * dim)
    ref = net(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is left
        out = to_torch(net)
    bn_types = {type(m) for m in out.modules() if "BatchNorm" in type(m).__name__}
    assert bn_types == {(nn.BatchNorm1d, nn.BatchNorm2d)[dim - 1]}
    torch.testing.assert_close(out(x), ref)


def test_to_torch_round_trips_with_convert_and_shares_tensors():
    torch_net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.Flatten(),
                              nn.LayerNorm(16), nn.RMSNorm(16))
    nl_net = convert(copy.deepcopy(torch_net))
    w = nl_net[1].weight
    back = to_torch(nl_net)
    assert [type(m) for m in back] == [type(m) for m in torch_net]
    assert back[1].weight is w
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(back(x), torch_net(x))


def test_to_torch_lists_what_it_leaves_and_why():
    net = nn.Sequential(BatchNorm(3), nn.Conv2d(3, 4, 1), BatchNorm(4), LayerNorm2d(4), FilterResponseNorm(4),
                        EvoNormS0(4, groups=2), BatchRenorm(4), GhostBatchNorm(4, virtual_batch_size=2),
                        BatchNorm(4, channel_dim=-1), WSConv2d(4, 4, 1))
    with pytest.warns(UserWarning, match=r"to_torch left 8 normlab layer\(s\) in place") as w:
        out = to_torch(net)
    msg = str(w[0].message)
    assert type(out[2]) is nn.BatchNorm2d  # rank-generic, but fed by a Conv2d in the traced forward
    for expected in ("0 (BatchNorm): the input rank is unknown", "3 (LayerNorm2d): channels-first LayerNorm",
                     "4 (FilterResponseNorm): Filter Response Normalization has no torch.nn equivalent",
                     "6 (BatchRenorm): BatchRenorm trains differently", "7 (GhostBatchNorm): GhostBatchNorm trains",
                     "8 (BatchNorm): channel_dim=-1", "9 (WSConv2d): weight standardization has no torch.nn layer"):
        assert expected in msg, expected
    assert isinstance(out[4], FilterResponseNorm)
    with pytest.raises(ValueError, match=r"to_torch left 1 normlab layer\(s\) in place: \(the module\) "
                                         r"\(FilterResponseNorm\)"):
        to_torch(FilterResponseNorm(4), strict=True)


def test_to_torch_for_inference_converts_what_is_exact_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(WSConv2d(3, 4, 3), BatchRenorm(4, warmup_steps=0), nn.ReLU(), nn.Conv2d(4, 4, 1),
                        GhostBatchNorm(4, virtual_batch_size=2), nn.Identity(), BatchNorm2d(4))
    weight_norm(net[3])
    for _ in range(3):
        net(torch.randn(6, 3, 6, 6))
    freeze_batchnorm(net[6:])
    net.eval()
    x = torch.randn(2, 3, 6, 6)
    ref = net(x)
    out = to_torch(copy.deepcopy(net), example_inputs=x, inference=True, strict=True)
    assert [type(m) for m in out[:3]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in out[4:]] == [nn.BatchNorm2d, nn.Identity, nn.BatchNorm2d]
    # weight norm: torch's own parametrization over the same g and v (exact in training too)
    assert type(out[3].parametrizations.weight[0]).__module__.startswith("torch.")
    assert not [n for n, m in out.named_modules() if type(m).__module__.startswith("normlab")]
    torch.testing.assert_close(out(x), ref, rtol=1e-5, atol=1e-5)
    with pytest.warns(UserWarning, match=r"frozen \(torch's BatchNorm does not stay frozen"):
        to_torch(copy.deepcopy(net), example_inputs=x)


def test_to_torch_refuses_masked_use_and_bias_free_affine():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.gn = GroupNorm(2, 4)
            self.bn = BatchNorm1d(4, bias=False)

        def forward(self, x):
            return self.bn(self.gn(x, mask=torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)))

    with pytest.warns(UserWarning) as w:
        to_torch(Masked(), example_inputs=torch.randn(2, 4, 5))
    msg = str(w[0].message)
    assert "gn (GroupNorm): called with a mask" in msg and "bn (BatchNorm1d): affine without bias" in msg
    inorm = InstanceNorm(4, track_running_stats=True, momentum=None)
    with pytest.warns(UserWarning, match="momentum=None with running statistics"):
        to_torch(nn.Sequential(inorm), example_inputs=torch.randn(2, 4, 5))


def test_to_torch_sync_batchnorm_keeps_its_process_group():
    sbn = SyncBatchNorm(4, process_group=None)
    out = to_torch(nn.Sequential(sbn))
    assert type(out[0]) is nn.SyncBatchNorm and out[0].weight is sbn.weight


# ------------------------------------------------------------------------------------------ convert from timm
def _timm_layers():
    try:
        import timm.layers as tl  # noqa: F401
    except Exception:  # timm is optional (and needs torchvision)
        pytest.skip("timm is not installed")
    return sys.modules["timm.layers"]


def test_convert_recognises_timm_layers_by_name():
    tl = _timm_layers()
    torch.manual_seed(0)
    net = nn.Sequential(tl.StdConv2d(3, 8, 3, padding=1), tl.EvoNorm2dB0(8), tl.EvoNorm2dS0(8, groups=4),
                        tl.FilterResponseNormTlu2d(8), tl.EvoNorm2dS0(8, groups=2, apply_act=False))
    for m in net.modules():
        for p in m.parameters(recurse=False):
            if p.ndim == 1:
                with torch.no_grad():
                    p.add_(torch.randn_like(p) * 0.3)
    ref = copy.deepcopy(net)
    out = convert(net)
    assert [type(m) for m in out] == [WSConv2d, EvoNormB0, EvoNormS0, FilterResponseNorm, tl.EvoNorm2dS0]
    x = torch.randn(4, 3, 6, 6)
    for train in (True, False):  # training mode updates B0's running variance as timm's does
        torch.testing.assert_close(out.train(train)(x), ref.train(train)(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1].running_var, ref[1].running_var)
    assert convert(nn.Sequential(tl.EvoNorm2dB0(4)), types=(tl.EvoNorm2dB0,))[0].__class__ is EvoNormB0


def test_convert_types_names_what_it_converts():
    with pytest.raises(TypeError, match=r"convert cannot convert Conv2d; it converts BatchNorm1d, .* and timm's "
                                        r"EvoNorm2dB0, EvoNorm2dS0, FilterResponseNormTlu2d, StdConv2d"):
        convert(nn.Sequential(), types=(nn.Conv2d,))


# ------------------------------------------------------------------------------------------- ConvNet names
NEW = {"batchrenorm": BatchRenorm, "ghostbn": GhostBatchNorm, "frn": FilterResponseNorm, "evonorm_b0": EvoNormB0,
       "evonorm_s0": EvoNormS0, "gn+ws": GroupNorm}


@pytest.mark.parametrize("name", sorted(NEW))
def test_convnet_takes_the_new_norms_by_name(name):
    assert name in CONV_NORMS
    for dim, size in ((1, 40), (2, 8)):
        net = ConvNet(ConvNetConfig(dim=dim, input_size=size, arch="resnet", norm=name, widths=(8, 16),
                                    virtual_batch_size=2))
        assert isinstance(net.stem.norm, NEW[name])
        block = net.features[0]
        if name in ("frn", "evonorm_b0", "evonorm_s0"):  # a normalization-activation layer replaces norm + ReLU
            assert isinstance(net.stem.act, nn.Identity)
            last = block.unit2.norm  # no activation after it: built without its nonlinearity
            assert getattr(last, "tau", getattr(last, "v", "missing")) is None
        else:
            assert isinstance(net.stem.act, nn.ReLU)
        conv = (WSConv1d, WSConv2d)[dim - 1] if name == "gn+ws" else (nn.Conv1d, nn.Conv2d)[dim - 1]
        assert type(net.stem.conv) is conv
        out = net(torch.randn(4, 1, *(size,) * dim))
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_convnet_config_passes_the_new_settings():
    net = ConvNet(ConvNetConfig(norm="batchrenorm", renorm_rmax=2.0, renorm_dmax=1.0, renorm_warmup_steps=10,
                                norm_momentum=0.01))
    assert (net.stem.norm.rmax, net.stem.norm.dmax, net.stem.norm.warmup_steps, net.stem.norm.momentum) == \
        (2.0, 1.0, 10, 0.01)
    assert ConvNet(ConvNetConfig(norm="ghostbn", virtual_batch_size=4)).stem.norm.virtual_batch_size == 4
    with pytest.raises(ValueError, match="renorm_rmax"):
        ConvNetConfig(norm="batchrenorm", renorm_rmax=0.5)
    with pytest.raises(ValueError, match="norm_momentum"):
        ConvNetConfig(norm_momentum=1.5)

"""Issue 16, hardening for real users: each test pins one row of the issue's table.

Silent wrong numbers, host syncs in the forward, state-dict conventions, strict constructors and
configs, TorchScript.  (Interrupts: test_interrupts.py; the CLI: test_cli_strict.py.)
"""

from __future__ import annotations

import pytest
import torch

import normlab as nl
from normlab.models import GPT, ConvNetConfig, GPTConfig
from normlab.train import TrainConfig
from normlab import functional as NF


# ------------------------------------------------- dims: empty, overlapping, non-int
def test_empty_dims_are_refused_not_silently_wrong():
    x = torch.randn(3, 4) * 100 + 7
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        nl.Norm(4, dims=())
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        NF.normalize(x, dims=())
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        NF.moments(x, dims=())
    with pytest.raises(ValueError, match=r"at least one dim to reduce over, got dims=\(\)"):
        NF._stats(x, (), True, None)


def test_keep_dims_that_keep_everything_are_refused():
    with pytest.raises(ValueError, match=r"keep_dims=\(0, 1\) keeps every dim of a 2-D input"):
        nl.Norm(4, keep_dims=(0, 1), param_dims=(1,))(torch.randn(3, 4))
    nl.Norm(4, keep_dims=(0, 1), param_dims=(1,))(torch.randn(3, 4, 5))  # a 3-D input has a dim left


def test_overlapping_dims_and_param_dims_with_running_stats_are_named():
    with pytest.raises(ValueError, match=r"dims=\(0, 1\) and param_dims=\(1,\) overlap at dim\(s\) \[1\]"):
        nl.Norm(4, dims=(0, 1), param_dims=(1,), track_running_stats=True)
    bn = nl.Norm(4, dims=(0, -1), param_dims=(1,), track_running_stats=True)  # overlap only once resolved
    with pytest.raises(ValueError, match=r"reduced dims \(0, 1\) and param_dims \(1,\) overlap"):
        bn(torch.randn(3, 4))
    nl.Norm(4, dims=-1)(torch.randn(3, 4))  # without running statistics overlap is LayerNorm: allowed


def test_dims_must_be_ints_named_once():
    with pytest.raises(TypeError, match=r"dims must be ints, got 1.0 in dims=\(1.0,\)"):
        nl.Norm(4, dims=(1.0,))
    with pytest.raises(ValueError, match=r"keep_dims=\(1, 1\) names the same dim twice"):
        nl.Norm(4, keep_dims=(1, 1), param_dims=(1,))
    with pytest.raises(ValueError, match=r"out of range"):
        NF.normalize(torch.randn(3, 4), dims=(2,))


# ------------------------------------------------- no host syncs in the forward
def _masked_batch():
    x = torch.randn(4, 10, 8)
    mask = torch.ones(4, 10, dtype=torch.bool)
    mask[1, 5:] = False
    return x, mask


def test_masked_batchnorm_compiles_with_fullgraph_and_matches_eager():
    torch._dynamo.reset()
    x, mask = _masked_batch()
    eager, compiled = nl.BatchNorm(8, channel_dim=-1), nl.BatchNorm(8, channel_dim=-1)
    y_eager = eager(x, mask=mask)
    y = torch.compile(compiled, fullgraph=True)(x, mask=mask)
    torch.testing.assert_close(y, y_eager)
    torch.testing.assert_close(compiled.running_mean, eager.running_mean)
    torch.testing.assert_close(compiled.running_var, eager.running_var)


def test_compiled_running_stats_keep_the_non_finite_and_empty_guards():
    torch._dynamo.reset()
    bn = nl.BatchNorm(8, channel_dim=-1, momentum=None)
    step = torch.compile(bn, fullgraph=True)
    x, mask = _masked_batch()
    step(x, mask=mask)
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    x = x + 1.0
    x[0, 0, 3] = float("nan")  # channel 3 of this batch is non-finite
    step(x, mask=mask)
    assert torch.equal(bn.running_mean[3], before_mean[3]) and torch.equal(bn.running_var[3], before_var[3])
    assert not torch.equal(bn.running_mean[2], before_mean[2])  # the others moved
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
    # a mask that selects nothing: eager CPU raises; compiled, the running statistics stay put
    before_mean, before_var = bn.running_mean.clone(), bn.running_var.clone()
    step(torch.randn(4, 10, 8), mask=torch.zeros(4, 10, dtype=torch.bool))
    assert torch.equal(bn.running_mean, before_mean) and torch.equal(bn.running_var, before_var)
    with pytest.raises(ValueError, match="the mask selects no element"):
        bn(torch.randn(4, 10, 8), mask=torch.zeros(4, 10, dtype=torch.bool))


def test_eager_cpu_still_warns_about_non_finite_statistics():
    bn = nl.BatchNorm(4)
    x = torch.randn(8, 4)
    x[0, 1] = float("inf")
    with pytest.warns(RuntimeWarning, match=r"non-finite batch statistics .* feature index \[1\]"):
        bn(x)
    assert torch.isfinite(bn.running_var).all()


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_training_forward_on_meta(momentum):
    bn = nl.BatchNorm(8, channel_dim=-1, momentum=momentum, device="meta")
    x, mask = torch.randn(4, 10, 8, device="meta"), torch.ones(4, 10, dtype=torch.bool, device="meta")
    assert bn(x, mask=mask).shape == (4, 10, 8)
    assert bn(x).device.type == "meta"
    gn = nl.GroupNorm(2, 8, device="meta")
    assert gn(torch.randn(2, 8, 5, device="meta"), mask=torch.ones(2, 5, dtype=torch.bool, device="meta")).shape \
        == (2, 8, 5)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
def test_cuda_training_step_has_no_host_sync():
    bn = nl.BatchNorm(8, channel_dim=-1, momentum=None).cuda()
    x, mask = (t.cuda() for t in _masked_batch())
    x.requires_grad_(True)
    torch.cuda.set_sync_debug_mode("error")  # any synchronizing call in the step raises
    try:
        bn(x, mask=mask).square().sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(bn.running_var).all()


# ------------------------------------------------- state dicts: zero-centered gamma, frozen
@pytest.mark.parametrize("ours,theirs", [(lambda: nl.LayerNorm(6, zero_centered_gamma=True), lambda: torch.nn.LayerNorm(6)),
                                         (lambda: nl.RMSNorm(6, zero_centered_gamma=True), lambda: torch.nn.RMSNorm(6))])
def test_torch_state_dict_into_zero_centered_layer_is_converted(ours, theirs):
    torch_layer, layer = theirs(), ours()
    with torch.no_grad():
        torch_layer.weight.uniform_(0.5, 1.5)
    layer.load_state_dict(torch_layer.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(layer(x), torch_layer(x))  # not scaled by 1 + gamma
    # and back: normlab's zero-centered state dict into a plain normlab layer, then into torch's
    plain = type(layer)(6)
    plain.load_state_dict(layer.state_dict())
    torch.testing.assert_close(plain(x), torch_layer(x))
    back = theirs()
    back.load_state_dict(plain.state_dict())
    torch.testing.assert_close(back(x), torch_layer(x))
    # zero-centered to zero-centered: unchanged
    same = ours()
    same.load_state_dict(layer.state_dict())
    torch.testing.assert_close(same.weight, layer.weight)


def test_state_dict_without_metadata_into_zero_centered_layer_warns():
    layer = nl.LayerNorm(6, zero_centered_gamma=True)
    plain_dict = dict(torch.nn.LayerNorm(6).state_dict())  # a plain dict has no _metadata
    with pytest.warns(UserWarning, match=r"does not say how 'weight' is stored; it is loaded as an offset from 1"):
        layer.load_state_dict(plain_dict)


def test_frozen_round_trips_through_the_state_dict():
    src = nl.BatchNorm(4)
    src(torch.randn(8, 4))
    src.freeze()
    dst = nl.BatchNorm(4)
    dst.load_state_dict(src.state_dict())
    assert dst.frozen and not dst.training and not dst.weight.requires_grad
    dst.train()
    assert not dst.training  # the freeze survives .train() as on the original
    # loading never unfreezes, and torch's BatchNorm still takes the state dict
    again = nl.BatchNorm(4).freeze()
    again.load_state_dict(nl.BatchNorm(4).state_dict())
    assert again.frozen
    torch.nn.BatchNorm1d(4).load_state_dict(src.state_dict())


# ------------------------------------------------- TorchScript: a clear normlab error
@pytest.mark.parametrize("make", [lambda: nl.LayerNorm(64), lambda: nl.BatchNorm(8), lambda: nl.GroupNorm(2, 8),
                                  lambda: nl.RMSNorm(8), lambda: nl.InstanceNorm2d(8), lambda: nl.DyT(8),
                                  lambda: nl.ScaleNorm(8),
                                  lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), nl.LayerNorm(8))],
                         ids=["LayerNorm", "BatchNorm", "GroupNorm", "RMSNorm", "InstanceNorm2d", "DyT", "ScaleNorm",
                              "nested"])
def test_torchscript_raises_a_normlab_error_naming_the_alternatives(make):
    with pytest.raises(RuntimeError, match=r"normlab's \w+ does not support TorchScript \(torch.jit.script\): "
                                           r"use torch.compile\(model\)"):
        torch.jit.script(make())


def test_torch_jit_trace_still_works():
    layer = nl.LayerNorm(8)
    x = torch.randn(3, 8)
    torch.testing.assert_close(torch.jit.trace(layer, x)(x), layer(x))


# ------------------------------------------------- constructors take integer sizes only
@pytest.mark.parametrize("make,message", [
    (lambda: nl.BatchNorm("16"), r"BatchNorm: num_features must be an int, got '16' \(str\)"),
    (lambda: nl.BatchNorm(16.0), r"BatchNorm: num_features must be an int, got 16.0 \(float\)"),
    (lambda: nl.GroupNorm(4.0, 16), r"GroupNorm: num_groups must be an int, got 4.0 \(float\)"),
    (lambda: nl.GroupNorm(4, "16"), r"GroupNorm: num_channels must be an int, got '16' \(str\)"),
    (lambda: nl.LayerNorm((8, 2.0)), r"LayerNorm: every entry of normalized_shape must be an int, got 2.0"),
    (lambda: nl.RMSNorm("8"), r"RMSNorm: normalized_shape must be an int, got '8' \(str\)"),
    (lambda: nl.InstanceNorm2d(2.5), r"InstanceNorm2d: num_features must be an int, got 2.5"),
    (lambda: nl.LayerNorm2d(True), r"LayerNorm2d: num_channels must be an int, got True \(bool\)"),
    (lambda: nl.Norm(4, dims=-1, num_groups=2.0), r"Norm: num_groups must be an int, got 2.0"),
])
def test_non_integer_sizes_are_refused_by_name(make, message):
    with pytest.raises(TypeError, match=message):
        make()


def test_integer_like_sizes_are_accepted():
    import numpy as np

    assert nl.BatchNorm(np.int64(4)).shape == (4,)
    assert nl.LayerNorm(torch.Size([3, 4])).shape == (3, 4)
    with pytest.raises(ValueError, match=r"BatchNorm: num_features must be >= 1, got 0"):
        nl.BatchNorm(0)


def test_instancenorm_presets_have_real_signatures():
    import inspect

    for cls in (nl.InstanceNorm1d, nl.InstanceNorm2d, nl.InstanceNorm3d):
        params = inspect.signature(cls).parameters
        assert list(params)[:5] == ["num_features", "eps", "momentum", "affine", "track_running_stats"]
        assert "spatial_dims" not in params and not any(p.kind == p.VAR_POSITIONAL for p in params.values())
    layer = nl.InstanceNorm2d(4, 1e-3, 0.2, True, True)
    assert (layer.eps, layer.momentum, layer.affine, layer.track_running_stats, layer.spatial_dims) == \
        (1e-3, 0.2, True, True, 2)


# ------------------------------------------------- strict configs; the GPT names its limits
@pytest.mark.parametrize("make,message", [
    (lambda: GPTConfig(n_head=0), r"GPTConfig.n_head must be an int >= 1, got 0 \(int\)"),
    (lambda: GPTConfig(d_model="32"), r"GPTConfig.d_model must be an int >= 1, got '32' \(str\)"),
    (lambda: GPTConfig(n_layer=-1), r"GPTConfig.n_layer must be an int >= 1, got -1"),
    (lambda: GPTConfig(dropout=1.5), r"GPTConfig.dropout must be a number in \[0, 1\), got 1.5"),
    (lambda: GPTConfig(norm=None), r"GPTConfig: unknown norm None \(NoneType\); choose one of layernorm"),
    (lambda: GPTConfig(tie_weights="yes"), r"GPTConfig.tie_weights must be True or False, got 'yes'"),
    (lambda: ConvNetConfig(widths=()), r"ConvNetConfig.widths must be a non-empty tuple of ints >= 1"),
    (lambda: ConvNetConfig(num_classes=1), r"ConvNetConfig.num_classes must be an int >= 2, got 1"),
    (lambda: ConvNetConfig(dim=3), r"ConvNetConfig.dim must be an int in \[1, 2\], got 3"),
    (lambda: TrainConfig(steps=0), r"TrainConfig.steps must be an int >= 1, got 0"),
    (lambda: TrainConfig(lr="1e-3"), r"TrainConfig.lr must be a number > 0, got '1e-3' \(str\)"),
    (lambda: TrainConfig(log_every=0), r"TrainConfig.log_every must be an int >= 1, got 0"),
    (lambda: TrainConfig(betas=(0.9,)), r"TrainConfig.betas must be two numbers in \[0, 1\)"),
])
def test_configs_validate_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_gpt_names_the_vocab_size_and_the_target_shape():
    model = GPT(GPTConfig(n_layer=1, d_model=16, n_head=2, block_size=8, vocab_size=10))
    idx = torch.randint(0, 10, (2, 8))
    with pytest.raises(ValueError, match=r"token id 10 is outside the vocabulary: ids must be in \[0, vocab_size=10\)"):
        model(idx.clone().fill_(10))
    with pytest.raises(ValueError, match=r"token id -3 is outside the vocabulary"):
        model(idx.clone().fill_(-3))
    with pytest.raises(ValueError, match=r"targets must be a long tensor of idx's shape \(2, 8\) \(-1 = ignore\), got torch.int64 "
                                         r"of shape \(2, 7\)"):
        model(idx, idx[:, :7])
    _, loss = model(idx, idx)
    assert torch.isfinite(loss)


# ------------------------------------------------- typing and packaging
def test_the_package_is_marked_typed():
    from importlib.resources import files

    assert files("normlab").joinpath("py.typed").is_file()

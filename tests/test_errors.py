"""Bad input gets an error that names what was expected and what was received."""

from __future__ import annotations

import pytest
import torch

import normlab as nl


def test_groupnorm_indivisible_suggests_valid_counts():
    with pytest.raises(ValueError, match=r"got 30 channels, 4 groups \(valid group counts: 1, 2, 3, 5, 6, 10, 15, 30\)"):
        nl.GroupNorm(4, 30)


def test_wrong_rank_is_named():
    with pytest.raises(ValueError, match=r"BatchNorm2d expects a 4-D input \(N, C, H, W\), got a 3-D input of shape \(2, 3, 4\)"):
        nl.BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"at least 2 dims, got a 1-D input of shape \(3,\)"):
        nl.BatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match=r"at least 3 dims, got a 2-D input"):
        nl.InstanceNorm(3)(torch.randn(2, 3))


def test_channel_mismatch_is_named():
    with pytest.raises(ValueError, match=r"expects size \(3,\) at dim\(s\) 1 .*got an input of shape \(2, 4, 5\)"):
        nl.BatchNorm(3)(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"expects size \(8,\) at dim\(s\) 2 .*got an input of shape \(2, 5, 7\)"):
        nl.LayerNorm(8)(torch.randn(2, 5, 7))
    with pytest.raises(ValueError, match=r"GroupNorm expects size \(6,\)"):
        nl.GroupNorm(2, 6)(torch.randn(2, 4, 5))


def test_batch_of_one_in_training_is_an_error_not_nan():
    bn = nl.BatchNorm(3)
    with pytest.raises(ValueError, match=r"more than 1 value per statistic when training, got input of shape \(1, 3\)"):
        bn(torch.randn(1, 3))
    with pytest.raises(ValueError, match="batch size 1"):
        bn(torch.randn(1, 3, 1, 1))
    bn.eval()
    assert torch.isfinite(bn(torch.randn(1, 3))).all()  # eval mode uses running statistics: fine
    bn.train()
    assert torch.isfinite(bn(torch.randn(1, 3, 5))).all()  # one sample, 5 positions: 5 values per channel


def test_instancenorm_one_spatial_element_is_refused_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per statistic"):
        nl.InstanceNorm(3)(torch.randn(2, 3, 1))


def test_negative_eps_and_bad_momentum():
    with pytest.raises(ValueError, match="eps must be >= 0.*got -1"):
        nl.LayerNorm(4, eps=-1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        nl.BatchNorm(4, eps=float("nan"))
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\].*got 1.5"):
        nl.BatchNorm(4, momentum=1.5)


def test_mask_errors():
    bn = nl.BatchNorm(4, channel_dim=-1)
    x = torch.randn(2, 5, 4)
    with pytest.raises(TypeError, match="mask must be a bool tensor.*torch.int64"):
        bn(x, mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must have the input's shape without the feature dim\(s\), \(2, 5\).*got mask of shape \(2, 6\)"):
        bn(x, mask=torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="the mask selects no element"):
        bn(x, mask=torch.zeros(2, 5, dtype=torch.bool))
    one = torch.zeros(2, 5, dtype=torch.bool)
    one[0, 0] = True
    with pytest.raises(ValueError, match="more than 1 value per statistic"):
        bn(x, mask=one)
    gn = nl.GroupNorm(2, 4)
    m = torch.ones(2, 7, dtype=torch.bool)
    m[1] = False
    with pytest.raises(ValueError, match="the mask selects no element"):
        gn(torch.randn(2, 4, 7), mask=m)


def test_non_tensor_and_integer_inputs():
    with pytest.raises(TypeError, match="expects a torch.Tensor, got list"):
        nl.LayerNorm(3)([1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="floating-point input, got dtype torch.int64"):
        nl.LayerNorm(3)(torch.arange(6).reshape(2, 3))


def test_general_norm_constructor_errors():
    with pytest.raises(ValueError, match="exactly one of dims .* or keep_dims"):
        nl.Norm(4)
    with pytest.raises(ValueError, match="exactly one of dims"):
        nl.Norm(4, dims=-1, keep_dims=0)
    with pytest.raises(ValueError, match="param_dims=.* one dim per entry of shape"):
        nl.Norm((3, 4), dims=-1, param_dims=(1,))
    with pytest.raises(ValueError, match="running statistics are only supported with center=True"):
        nl.Norm(4, dims=0, param_dims=1, center=False, track_running_stats=True)
    with pytest.raises(ValueError, match="need the feature shape"):
        nl.Norm(None, dims=-1)
    with pytest.raises(ValueError, match="out of range"):
        nl.Norm(4, dims=5)(torch.randn(2, 4))


def test_empty_batch_behaves_like_torch():
    ours, theirs = nl.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    x = torch.randn(0, 3, 4, 4)
    assert ours(x).shape == theirs(x).shape == (0, 3, 4, 4)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    assert ours.num_batches_tracked == theirs.num_batches_tracked == 1
    assert nl.LayerNorm(4)(torch.randn(0, 4)).shape == (0, 4)

"""normlab.functional against float64 one-liners, gradcheck, and its input checks."""

from __future__ import annotations

import pytest
import torch

from normlab import Norm
from normlab import functional as NF

AXES = [(0,), (-1,), (1,), (0, 2), (1, 2, 3), (0, 1, 2, 3), (0, 2, 3)]


def ref_normalize(x, dims, center=True, eps=1e-5, mask=None):
    """The formula written out in float64, masks as weights."""
    x = x.double()
    w = torch.ones_like(x) if mask is None else mask.expand_as(x).double()
    n = w.sum(dims, keepdim=True)
    mean = (w * x).sum(dims, keepdim=True) / n if center else torch.zeros_like(n)
    var = (w * (x - mean) ** 2).sum(dims, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps), mean, var


@pytest.mark.parametrize("dims", AXES, ids=str)
@pytest.mark.parametrize("center", [True, False])
def test_moments_and_normalize_match_float64_formula(dims, center):
    x = torch.randn(3, 4, 5, 6) * 2 + 0.5
    mean, var = NF.moments(x, dims, center=center)
    y_ref, mean_ref, var_ref = ref_normalize(x, dims, center)
    torch.testing.assert_close(var.double(), var_ref, rtol=1e-5, atol=1e-6)
    if center:
        torch.testing.assert_close(mean.double(), mean_ref, rtol=1e-5, atol=1e-6)
    else:
        assert mean is None
    torch.testing.assert_close(NF.normalize(x, dims, center=center).double(), y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dims", AXES, ids=str)
def test_masked_moments_match_weighted_formula(dims):
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    mask = torch.rand(3, 1, 5, 6) > 0.3
    y = NF.normalize(x, dims, mask=mask)
    y_ref, _, _ = ref_normalize(x, dims, mask=mask)
    seen = mask.expand_as(x).sum(dims, keepdim=True).expand_as(x) > 0  # statistics that saw an element
    assert seen.float().mean() > 0.5
    torch.testing.assert_close(y[seen], y_ref[seen], rtol=1e-12, atol=1e-12)
    assert torch.isfinite(y).all()  # masked positions, even of empty statistics, are defined


def test_count_is_returned():
    x = torch.randn(2, 3, 4)
    *_, n = NF.moments(x, (0, 2), return_count=True)
    assert n == 8
    mask = torch.tensor([[True, False, True, True]] * 2).unsqueeze(1)
    *_, n = NF.moments(x, (0, 2), mask=mask, return_count=True)
    assert n.flatten().tolist() == [6.0, 6.0, 6.0]


def test_group_split_equals_explicit_reshape():
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    y = NF.normalize(x, (1, 2), num_groups=3, group_dim=1)
    y_ref = ref_normalize(x.reshape(2, 3, 2, 5), (2, 3))[0].reshape(2, 6, 5)
    torch.testing.assert_close(y, y_ref)


def test_dtypes_out_equal_in_and_statistics_are_float32_or_better():
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64):
        x = torch.randn(4, 8).to(dtype)
        assert NF.normalize(x, -1).dtype == dtype
        mean, var = NF.moments(x, -1)
        assert mean.dtype == var.dtype == torch.promote_types(dtype, torch.float32)


def test_integer_input_is_refused_with_its_dtype():
    with pytest.raises(TypeError, match="floating-point.*torch.int64"):
        NF.normalize(torch.arange(6).reshape(2, 3), -1)


@pytest.mark.parametrize("dims,match", [((3,), r"out of range \[-2, 1\]"), ((0, -2), "same dim twice"),
                                        (("a",), "must be ints")])
def test_bad_dims_are_named(dims, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NF.moments(torch.randn(2, 3), dims)


def test_bad_mask_and_eps_are_named():
    x = torch.randn(2, 3, 4)
    with pytest.raises(TypeError, match="bool tensor.*torch.float32"):
        NF.normalize(x, -1, mask=torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match=r"mask of shape \(5,\) does not broadcast.*\(2, 3, 4\)"):
        NF.normalize(x, -1, mask=torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        NF.normalize(x, -1, eps=-1)
    with pytest.raises(ValueError, match="cannot split dim 1 of size 3 into 2 equal groups"):
        NF.normalize(x, (1, 2), num_groups=2)


GRAD_CASES = [
    dict(shape=4, dims=(-1,)),
    dict(shape=(3, 4), dims=(-2, -1)),
    dict(shape=3, keep_dims=(1,), param_dims=(1,)),  # BatchNorm axes
    dict(shape=3, keep_dims=(0, 1), param_dims=(1,)),  # InstanceNorm axes
    dict(shape=3, dims=(1,), param_dims=(1,)),  # channels-first LayerNorm
    dict(shape=4, dims=(-1,), center=False),  # RMSNorm
    dict(shape=6, keep_dims=(0,), param_dims=(1,), num_groups=2),  # GroupNorm
    dict(shape=6, keep_dims=(0,), param_dims=(1,), num_groups=3, center=False),
    dict(shape=4, dims=(-1,), zero_centered_gamma=True),
]


# a mask over positions only means something for norms that pool positions (keep_dims configs)
GRAD_PARAMS = [(c, False) for c in GRAD_CASES] + [(c, True) for c in GRAD_CASES if "keep_dims" in c]


@pytest.mark.parametrize("cfg,masked", GRAD_PARAMS, ids=str)
def test_gradcheck_general_norm(cfg, masked):
    torch.manual_seed(1)
    m = Norm(**cfg, dtype=torch.float64)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        if m.bias is not None:
            m.bias.uniform_(-0.5, 0.5)
    c = m.shape[0] if len(m.shape) == 1 else None
    x = torch.randn(2, 3 if c is None else c, 4, 4, dtype=torch.float64) if c and m.param_dims == (1,) \
        else torch.randn(2, 3, *m.shape, dtype=torch.float64)
    mask = None
    if masked:
        pdims = NF.resolve_dims(m.param_dims, x.ndim)
        mshape = [s for d, s in enumerate(x.shape) if d not in pdims]
        mask = torch.rand(mshape) > 0.3
        mask.view(-1)[:: max(1, mask.numel() // 4)] = True
        mask[..., 0] = True  # every instance keeps a real element
    x.requires_grad_(True)
    params = tuple(p for p in m.parameters())
    assert torch.autograd.gradcheck(lambda inp, *ps: m(inp, mask=mask) if mask is not None else m(inp),
                                    (x, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dims", [(0,), (1, 2), (0, 1, 2)], ids=str)
def test_gradcheck_functional_normalize_with_mask(dims):
    x = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 4, 5) > 0.4
    mask[:, :, 0] = True
    mask[0, :, :] = True
    w = torch.rand(1, 4, 1, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, 4, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: NF.normalize(a, dims, c, d, mask=mask), (x, w, b))

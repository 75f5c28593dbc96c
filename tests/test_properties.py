"""Property-based tests: random shapes and axis sets against float64 references and torch.nn."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import normlab as nl
from normlab import functional as NF

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
F64 = torch.float64


@st.composite
def shape_and_dims(draw):
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    dims = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    negate = draw(st.booleans())
    return shape, tuple(d - ndim if negate else d for d in dims)


@SETTINGS
@given(shape_and_dims(), st.booleans(), st.integers(0, 2**31 - 1))
def test_normalize_matches_float64_formula_on_any_axes(sd, center, seed):
    shape, dims = sd
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3 + 2
    y = NF.normalize(x, dims, center=center)
    mean = x.mean(dims, keepdim=True) if center else 0
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5), rtol=1e-10, atol=1e-10)
    assert y.shape == x.shape and y.dtype == x.dtype


@SETTINGS
@given(st.integers(2, 6), st.integers(1, 6), st.lists(st.integers(1, 4), max_size=3), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_batchnorm_matches_torch_any_rank(n, c, spatial, affine, seed):
    shape = (n, c, *spatial)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    ours = nl.BatchNorm(c, affine=affine, dtype=F64)
    theirs = nn.BatchNorm3d(c, affine=affine, dtype=F64)  # torch's batch_norm itself is rank-agnostic
    for _ in range(2):
        y = ours(x)
        ref = nn.functional.batch_norm(x, theirs.running_mean, theirs.running_var, theirs.weight, theirs.bias,
                                       True, 0.1, 1e-5)
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(ours.running_var, theirs.running_var)


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_layernorm_and_rmsnorm_match_torch_any_trailing_shape(shape, k, seed):
    k = min(k, len(shape))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) + 1
    ns = tuple(shape[-k:])
    torch.testing.assert_close(nl.LayerNorm(ns, dtype=F64)(x), nn.LayerNorm(ns, dtype=F64)(x))
    torch.testing.assert_close(nl.RMSNorm(ns, dtype=F64)(x), nn.RMSNorm(ns, dtype=F64)(x))


@SETTINGS
@given(st.integers(1, 4), st.sampled_from([1, 2, 3, 4, 6]), st.integers(1, 3), st.lists(st.integers(1, 4), max_size=2),
       st.integers(0, 2**31 - 1))
def test_groupnorm_matches_torch(n, groups, per_group, spatial, seed):
    c = groups * per_group
    x = torch.randn((n, c, *spatial), generator=torch.Generator().manual_seed(seed), dtype=F64)
    ours = nl.GroupNorm(groups, c, dtype=F64)(x)
    try:
        theirs = nn.GroupNorm(groups, c, dtype=F64)(x)
    except ValueError:
        # torch refuses when N * C/G * prod(spatial) == 1 (an inconsistent test: N=2, C=G=2 also has one
        # element per group and passes); normlab gives the defined degenerate answer, beta = 0
        assert per_group * torch.Size(spatial).numel() == 1
        torch.testing.assert_close(ours, torch.zeros_like(ours))
        return
    torch.testing.assert_close(ours, theirs)


@SETTINGS
@given(st.integers(2, 5), st.integers(1, 4), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_masked_batchnorm_equals_batchnorm_on_kept_rows(b, d, t, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, d, generator=g, dtype=F64)
    mask = torch.rand(b, t, generator=g) > 0.4
    mask[0, :2] = True  # at least two real tokens
    y = nl.BatchNorm(d, channel_dim=-1, dtype=F64)(x, mask=mask)
    torch.testing.assert_close(y[mask], nl.BatchNorm(d, channel_dim=-1, dtype=F64)(x[mask]))

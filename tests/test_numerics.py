"""Hostile numerics: large means, low precision, constant rows, NaN/inf."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import normlab as nl
from normlab import functional as NF

LOW = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("d", [64, 768])
def test_large_mean_small_spread_float32_no_worse_than_torch(d):
    x = (1e4 + 1e-2 * torch.randn(128, d)).float()
    ref = nn.functional.layer_norm(x.double(), (d,))
    err_torch = (nn.functional.layer_norm(x, (d,)).double() - ref).abs().max()
    err_ours = (nl.LayerNorm(d)(x).double() - ref).abs().max()
    assert err_ours <= err_torch
    assert err_ours < 1e-5  # normalized units: the corrected two-pass keeps float32 accuracy


@pytest.mark.parametrize("make", [lambda: nl.BatchNorm(8), lambda: nl.GroupNorm(2, 8),
                                  lambda: nl.InstanceNorm(8), lambda: nl.LayerNorm((8, 6))], ids=str)
def test_large_mean_for_every_pooling_pattern(make):
    x = (1e4 + 1e-2 * torch.randn(16, 8, 6)).float()
    m = make()
    ref = m.double()(x.double())
    assert (make()(x).double() - ref).abs().max() < 1e-4


def test_naive_one_pass_variance_fails_where_ours_holds():
    x = (1e4 + 1e-2 * torch.randn(64, 256)).float()
    naive = (x * x).mean(-1) - x.mean(-1) ** 2
    _, var = NF.moments(x, -1)
    true = x.double().var(-1, unbiased=False)
    assert (naive.double() - true).abs().max() > 1.0  # the textbook form loses every digit (can go negative)
    torch.testing.assert_close(var.squeeze(-1).double(), true, rtol=1e-3, atol=0)


def _ulp(ref: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Spacing of ``dtype`` at each value of ``ref`` (float64), floored at the smallest normal."""
    info = torch.finfo(dtype)
    mag = ref.abs().clamp_min(info.tiny)
    return torch.exp2(torch.floor(torch.log2(mag)) - (info.nmant if hasattr(info, "nmant") else 0))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("make", [lambda: nl.LayerNorm(256), lambda: nl.RMSNorm(256, eps=1e-6),
                                  lambda: nl.LayerNorm2d(256), lambda: nl.GroupNorm(4, 256)], ids=str)
def test_low_precision_in_low_precision_out_within_ulps(make, dtype):
    mantissa = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    layer = make()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
    x = (torch.randn(8, 256, 3) * 3 + 1).to(dtype)
    if isinstance(layer, (nl.LayerNorm, nl.RMSNorm)):
        x = x.transpose(1, 2).contiguous()
    y = layer(x)
    assert y.dtype == dtype
    ref = layer.double()(x.double())
    ulp = torch.exp2(torch.floor(torch.log2(ref.abs().clamp_min(2.0 ** -14))) - mantissa)
    err_in_ulps = ((y.double() - ref).abs() / ulp).max().item()
    assert err_in_ulps <= 2.0, err_in_ulps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *LOW])
@pytest.mark.parametrize("make", [lambda: nl.LayerNorm(16), lambda: nl.RMSNorm(16), lambda: nl.LayerNorm2d(16),
                                  lambda: nl.GroupNorm(4, 16), lambda: nl.InstanceNorm(16)], ids=str)
def test_constant_rows_give_finite_output(make, dtype):
    layer = make().to(dtype)
    x = torch.full((2, 16, 16), 3.25, dtype=dtype)
    y = layer(x)
    assert torch.isfinite(y).all()
    if not isinstance(layer, nl.RMSNorm):
        torch.testing.assert_close(y.float(), torch.zeros_like(y, dtype=torch.float32))  # beta = 0


def test_constant_channel_in_batchnorm_gives_finite_output_and_running_var_zero():
    bn = nl.BatchNorm(3, momentum=1.0)
    x = torch.randn(8, 3)
    x[:, 1] = 7.0
    y = bn(x)
    assert torch.isfinite(y).all()
    assert bn.running_var[1] == 0 and bn.running_mean[1] == 7.0


def test_nan_in_one_row_stays_in_that_row():
    x = torch.randn(4, 5, 8)
    x[1, 2, 3] = float("nan")
    y = nl.LayerNorm(8)(x)
    bad = ~torch.isfinite(y)
    assert bad[1, 2].all() and bad.sum() == 8


def test_nan_in_batchnorm_hits_its_channel_and_never_the_running_stats():
    bn = nl.BatchNorm(3, momentum=0.5)
    x = torch.randn(6, 3, 4)
    x[2, 1, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match=r"non-finite batch statistics.*\[1\].*left unchanged"):
        y = bn(x)
    assert not torch.isfinite(y[:, 1]).all() and torch.isfinite(y[:, [0, 2]]).all()
    assert torch.isfinite(bn.running_mean).all() and torch.isfinite(bn.running_var).all()
    assert bn.running_mean[1] == 0 and bn.running_var[1] == 1  # untouched
    assert bn.running_mean[0] != 0  # the healthy channels were updated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bn(torch.randn(6, 3, 4))  # a clean batch warns nothing


def test_eps_zero_on_constant_rows_divides_by_zero():
    y = nl.LayerNorm(4, eps=0.0)(torch.ones(2, 4))
    assert torch.isnan(y).all()  # 0/0: why eps exists (claim C29)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_rmsnorm_default_eps_is_compute_dtype_epsilon_as_torch():
    x = (torch.randn(4, 64) * 1e-2).to(torch.bfloat16)
    ours = nl.RMSNorm(64)(x).double()
    theirs = nn.RMSNorm(64)(x).double()
    assert (ours - theirs).abs().max() <= 2 ** -7 * ours.abs().max()


def test_c17_compiled_pair_compiles_even_past_dynamo_recompile_limit():
    import torch._dynamo.utils as dynamo_utils

    from normlab.experiments.claims import c17_rmsnorm_speed as c17

    for i in range(10):  # fill the code object that compiled modules share past its limit (8), as earlier runs can
        filler = torch.compile(torch.nn.LayerNorm(4 + i), backend="eager")
        filler(torch.randn(2, 4 + i))
    ln, _ = c17._pair("compiled torch", 8)
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    ln(torch.randn(3, 8))
    assert dynamo_utils.counters["stats"]["unique_graphs"] > before  # compiled, not silently run eagerly

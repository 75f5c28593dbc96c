"""The family's new layers against float64 references of their formulas, their published special cases, state
dicts, bad inputs and torch.compile: BatchRenorm, GhostBatchNorm, FilterResponseNorm (+ TLU), EvoNorm-B0/S0 and
weight-standardized convolutions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo as dynamo
import torch.nn.functional as F

from normlab.layers import (TLU, BatchNorm, BatchNorm2d, BatchRenorm, EvoNormB0, EvoNormS0, FilterResponseNorm,
                            GhostBatchNorm, WSConv1d, WSConv2d, WSConv3d, standardize_weight)

F64 = dict(rtol=1e-12, atol=1e-12)
F32 = dict(rtol=1e-5, atol=1e-5)


def _randomize(m, seed=0):
    """Non-trivial affine (and other) parameters, so the references test them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5 + (1.0 if p.ndim == 1 else 0.0))
    return m


def _grads(fn, x, params, seed=1):
    """Output and gradients w.r.t. x and params for a fixed random output gradient."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    grads = torch.autograd.grad(y, [x, *params], g, allow_unused=True)
    return y.detach(), grads


def _assert_same(a, b, tol):
    ya, ga = a
    yb, gb = b
    torch.testing.assert_close(ya, yb, **tol)
    for u, v in zip(ga, gb):
        if u is None or v is None:
            assert u is None and v is None
        else:
            torch.testing.assert_close(u, v, **tol)


def _compiles(make, x, train=True):
    dynamo.reset()
    eager, compiled = make().train(train), make().train(train)
    compiled.load_state_dict(eager.state_dict())
    assert dynamo.explain(copy.deepcopy(eager))(x).graph_break_count == 0
    fn = torch.compile(compiled, backend="eager", fullgraph=True)
    for _ in range(2):
        torch.testing.assert_close(fn(x), eager(x))
    for (n, a), (_, b) in zip(compiled.named_buffers(), eager.named_buffers()):
        torch.testing.assert_close(a, b, msg=n)


# ----------------------------------------------------------------------------------------------- BatchRenorm
def brn_reference(x, rm, rv, w, b, eps, rmax, dmax):
    """Ioffe 2017's training forward in plain torch ops (channels at dim 1); r and d without gradient."""
    dims = [d for d in range(x.ndim) if d != 1]
    view = [1, -1] + [1] * (x.ndim - 2)
    mu = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    sig_b = torch.sqrt(var + eps)
    sig = torch.sqrt(rv.view(view) + eps)
    r = (sig_b / sig).detach().clamp(1 / rmax, rmax)
    d = ((mu - rm.view(view)) / sig).detach().clamp(-dmax, dmax)
    return ((x - mu) / sig_b * r + d) * w.view(view) + b.view(view)


@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (6, 4), (5, 3, 7)])
@pytest.mark.parametrize("clipped", [False, True])
def test_batchrenorm_matches_its_float64_reference_forward_and_backward(shape, clipped):
    c = shape[1]
    m = _randomize(BatchRenorm(c, rmax=1.5 if clipped else 1e6, dmax=0.2 if clipped else 1e6, warmup_steps=0,
                               momentum=0.3).double())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        m.running_mean.copy_(torch.randn(c, generator=g, dtype=torch.float64))
        m.running_var.copy_(torch.rand(c, generator=g, dtype=torch.float64) * 3 + 0.05)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    rm, rv = m.running_mean.clone(), m.running_var.clone()
    ours = _grads(m, x, [m.weight, m.bias])
    ref = _grads(lambda t: brn_reference(t, rm, rv, m.weight, m.bias, m.eps, m.rmax, m.dmax), x, [m.weight, m.bias])
    _assert_same(ours, ref, F64)
    # running statistics: BatchNorm's update, from the statistics before the batch
    dims = [d for d in range(x.ndim) if d != 1]
    torch.testing.assert_close(m.running_mean, 0.7 * rm + 0.3 * x.mean(dims), **F64)
    torch.testing.assert_close(m.running_var, 0.7 * rv + 0.3 * x.var(dims, unbiased=True), **F64)


def test_batchrenorm_unclipped_training_output_is_the_eval_output():
    """(x - mu_B) / sigma_B * r + d = (x - mu) / sigma when nothing is clipped: training sees inference's function."""
    m = _randomize(BatchRenorm(4, rmax=1e6, dmax=1e6, warmup_steps=0, momentum=0.0).double())
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64))
        m.running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 4.0], dtype=torch.float64))
    x = torch.randn(10, 4, 3, dtype=torch.float64)
    train_out = m.train()(x)
    torch.testing.assert_close(train_out, m.eval()(x), **F64)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64), (torch.float32, F32)])
@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (6, 4)])
def test_batchrenorm_with_rmax_1_and_dmax_0_is_batchnorm_in_training(dtype, tol, shape):
    """The published special case: r = 1 and d = 0, so BatchNorm's forward, backward and running statistics."""
    brn = _randomize(BatchRenorm(shape[1], rmax=1.0, dmax=0.0, warmup_steps=0)).to(dtype)
    bn = BatchNorm(shape[1]).to(dtype)
    bn.load_state_dict(brn.state_dict())
    for step in range(3):  # several steps: the running statistics stay in step too
        x = torch.randn(shape, generator=torch.Generator().manual_seed(step), dtype=dtype) * 3 + 2
        _assert_same(_grads(brn, x, [brn.weight, brn.bias]), _grads(bn, x, [bn.weight, bn.bias]), tol)
        for k in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(brn, k), getattr(bn, k), **tol)


def test_batchrenorm_starts_as_batchnorm_then_relaxes_on_its_schedule():
    m = BatchRenorm(3, rmax=3.0, dmax=5.0, warmup_steps=10)
    assert m.current_limits() == (1.0, 0.0)  # (1, 0) at the first step: exactly BatchNorm
    bn = BatchNorm(3)
    x = torch.randn(4, 3, 6) * 2 + 1
    torch.testing.assert_close(m(x), bn(x), **F32)
    for _ in range(4):
        m(x)
    assert m.current_limits() == (pytest.approx(2.0), pytest.approx(2.5))  # 5 steps of 10: halfway
    for _ in range(20):
        m(x)
    assert m.current_limits() == (3.0, 5.0)  # relaxed to the targets, and no further
    assert BatchRenorm(3, warmup_steps=0).current_limits() == (3.0, 5.0)
    # the schedule position is num_batches_tracked: it travels with the state dict
    n = BatchRenorm(3, rmax=3.0, dmax=5.0, warmup_steps=10)
    n.load_state_dict({k: v for k, v in m.state_dict().items()})
    assert n.current_limits() == (3.0, 5.0)


def test_batchrenorm_eval_and_frozen_are_exactly_batchnorm():
    m = _randomize(BatchRenorm(5, warmup_steps=0))
    for _ in range(3):
        m(torch.randn(8, 5, 4, 4) * 2 + 1)
    bn = BatchNorm2d(5)
    bn.load_state_dict(m.state_dict())  # the same keys as BatchNorm's
    assert set(m.state_dict()) == set(bn.state_dict())
    x = torch.randn(3, 5, 4, 4)
    torch.testing.assert_close(m.eval()(x), bn.eval()(x), rtol=0, atol=0)
    m.train().freeze()
    before = m.running_mean.clone()
    torch.testing.assert_close(m(x), bn(x), rtol=0, atol=0)
    assert torch.equal(m.running_mean, before)


def test_batchrenorm_state_dict_round_trip():
    m = _randomize(BatchRenorm(4, rmax=2.0, dmax=1.0, warmup_steps=7))
    for _ in range(3):
        m(torch.randn(6, 4, 3))
    n = BatchRenorm(4, rmax=2.0, dmax=1.0, warmup_steps=7)
    n.load_state_dict(m.state_dict())
    x = torch.randn(6, 4, 3)
    torch.testing.assert_close(n(x), m(x), rtol=0, atol=0)  # same schedule step, same statistics
    torch.testing.assert_close(n.running_var, m.running_var, rtol=0, atol=0)


def test_batchrenorm_masked_statistics_are_those_of_the_real_elements():
    m = BatchRenorm(4, channel_dim=-1, rmax=2.0, dmax=1.0, warmup_steps=0).double()
    with torch.no_grad():
        m.running_var.fill_(2.0)
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    y = m(x, mask=mask)
    real = x[mask]  # (n, 4)
    ref = brn_reference(real, torch.zeros(4, dtype=torch.float64), torch.full((4,), 2.0, dtype=torch.float64),
                        torch.ones(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), m.eps, 2.0, 1.0)
    torch.testing.assert_close(y[mask], ref, **F64)
    assert torch.isfinite(y).all()


def test_batchrenorm_gradcheck_where_r_and_d_sit_on_their_clips():
    """r and d are stop-gradient: finite differences see them move with x unless both are clipped (then constant),
    so gradcheck applies there; elsewhere the reference test above checks the stop-gradient backward."""
    m = _randomize(BatchRenorm(3, rmax=1.3, dmax=0.1, warmup_steps=0, momentum=0.0).double())
    with torch.no_grad():
        m.running_var.fill_(0.01)  # sigma_B / sigma >> rmax
        m.running_mean.fill_(50.0)  # (mu_B - mu) / sigma << -dmax
    x = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))


@pytest.mark.parametrize("kwargs,match", [
    (dict(rmax=0.5), r"rmax must be a number >= 1 .*got 0.5"),
    (dict(dmax=-1.0), r"dmax must be a number >= 0 .*got -1.0"),
    (dict(warmup_steps=-3), r"warmup_steps must be an int >= 0, got -3"),
    (dict(warmup_steps=2.5), r"warmup_steps must be an int >= 0, got 2.5"),
    (dict(track_running_stats=False), r"BatchRenorm needs running statistics"),
])
def test_batchrenorm_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchRenorm(4, **kwargs)


def test_batchrenorm_bad_inputs_name_expected_and_got():
    m = BatchRenorm(4)
    with pytest.raises(ValueError, match=r"expects size \(4,\) at dim\(s\) 1 .*got an input of shape \(2, 5, 3\)"):
        m(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"more than 1 value per statistic when training, got input of shape \(1, 4\)"):
        m(torch.randn(1, 4))


def test_batchrenorm_compiles_without_graph_breaks():
    _compiles(lambda: BatchRenorm(4, warmup_steps=5), torch.randn(6, 4, 5, 5))


def test_batchrenorm_extra_repr_lists_its_flags():
    assert "rmax=3, dmax=5, warmup_steps=5000" in repr(BatchRenorm(4))


# -------------------------------------------------------------------------------------------- GhostBatchNorm
def ghost_reference(x, w, b, eps, k):
    """Each chunk of k samples through BatchNorm's training formula (channels at dim 1)."""
    outs = []
    view = [1, -1] + [1] * (x.ndim - 2)
    for chunk in x.split(k):
        dims = [d for d in range(x.ndim) if d != 1]
        mu = chunk.mean(dims, keepdim=True)
        var = chunk.var(dims, unbiased=False, keepdim=True)
        outs.append((chunk - mu) / torch.sqrt(var + eps) * w.view(view) + b.view(view))
    return torch.cat(outs)


@pytest.mark.parametrize("shape,k", [((12, 3, 4, 4), 4), ((10, 3, 5), 4), ((9, 2), 3), ((7, 3, 2), 2)])
def test_ghostbn_matches_its_float64_reference(shape, k):
    m = _randomize(GhostBatchNorm(shape[1], virtual_batch_size=k, momentum=0.2).double())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 3
    ours = _grads(m, x, [m.weight, m.bias])
    ref = _grads(lambda t: ghost_reference(t, m.weight, m.bias, m.eps, k), x, [m.weight, m.bias])
    _assert_same(ours, ref, F64)
    # one update per step from the chunks' count-weighted means and unbiased variances
    dims = [d for d in range(x.ndim) if d != 1]
    chunks = x.split(k)
    n = torch.tensor([float(c.numel() // shape[1]) for c in chunks], dtype=torch.float64)
    means = torch.stack([c.mean(dims) for c in chunks])
    unb = torch.stack([c.var(dims, unbiased=True) for c in chunks])
    pooled_mean = (n[:, None] * means).sum(0) / n.sum()
    pooled_var = (n[:, None] * unb).sum(0) / n.sum()
    torch.testing.assert_close(m.running_mean, 0.2 * pooled_mean, **F64)
    torch.testing.assert_close(m.running_var, 0.8 + 0.2 * pooled_var, **F64)
    assert int(m.num_batches_tracked) == 1


@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64), (torch.float32, F32)])
@pytest.mark.parametrize("k", [8, 16])
def test_ghostbn_with_one_ghost_batch_is_batchnorm(dtype, tol, k):
    """The published special case: virtual batch = the batch (or more) is BatchNorm, running statistics too."""
    gbn = _randomize(GhostBatchNorm(3, virtual_batch_size=k)).to(dtype)
    bn = BatchNorm(3).to(dtype)
    bn.load_state_dict(gbn.state_dict())
    for step in range(2):
        x = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(step), dtype=dtype) * 2 + 1
        _assert_same(_grads(gbn, x, [gbn.weight, gbn.bias]), _grads(bn, x, [bn.weight, bn.bias]), tol)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(getattr(gbn, key), getattr(bn, key), **tol)


def test_ghostbn_chunks_equal_batchnorm_on_each_chunk_and_eval_is_batchnorm():
    gbn = GhostBatchNorm(4, virtual_batch_size=3)
    x = torch.randn(9, 4, 6)
    y = gbn(x)
    for i in range(3):
        torch.testing.assert_close(y[3 * i : 3 * i + 3], BatchNorm(4)(x[3 * i : 3 * i + 3]), **F32)
    bn = BatchNorm(4)
    bn.load_state_dict(gbn.state_dict())
    assert set(gbn.state_dict()) == set(bn.state_dict())
    torch.testing.assert_close(gbn.eval()(x), bn.eval()(x), rtol=0, atol=0)


def test_ghostbn_masked_and_channel_last():
    gbn = GhostBatchNorm(5, virtual_batch_size=2, channel_dim=-1).double()
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    mask[2, :2] = False
    y = gbn(x, mask=mask)
    for i in range(2):
        xs, ms = x[2 * i : 2 * i + 2], mask[2 * i : 2 * i + 2]
        real = xs[ms]
        ref = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + gbn.eps)
        torch.testing.assert_close(y[2 * i : 2 * i + 2][ms], ref, **F64)
    assert torch.isfinite(y).all()


def test_ghostbn_gradcheck():
    m = _randomize(GhostBatchNorm(3, virtual_batch_size=2).double())
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))


@pytest.mark.parametrize("k", [0, -2, 2.5, True, "4"])
def test_ghostbn_bad_virtual_batch_size_is_named(k):
    with pytest.raises(ValueError, match=rf"virtual_batch_size must be an int >= 1 .*got {k!r}"):
        GhostBatchNorm(4, virtual_batch_size=k)


def test_ghostbn_bad_inputs_name_expected_and_got():
    with pytest.raises(ValueError, match="channel_dim=0 is the batch dim"):
        GhostBatchNorm(4, channel_dim=0)
    m = GhostBatchNorm(4, virtual_batch_size=1)
    with pytest.raises(ValueError, match=r"more than 1 value per statistic when training, got input of shape \(3, 4\)"):
        m(torch.randn(3, 4))  # chunks of one sample with no spatial dim: one value per channel
    with pytest.raises(ValueError, match=r"expects size \(4,\) at dim\(s\) 1 .*got an input of shape \(6, 3, 2\)"):
        GhostBatchNorm(4, virtual_batch_size=2)(torch.randn(6, 3, 2))


def test_ghostbn_compiles_without_graph_breaks():
    _compiles(lambda: GhostBatchNorm(4, virtual_batch_size=3), torch.randn(8, 4, 5, 5))


# ---------------------------------------------------------------------------------------- FRN and TLU
def frn_reference(x, w, b, tau, eps, learned=None):
    dims = tuple(range(2, x.ndim))
    view = [1, -1] + [1] * (x.ndim - 2)
    e = eps if learned is None else eps + learned.abs().view(view)
    nu2 = x.square().mean(dims, keepdim=True)
    y = x / torch.sqrt(nu2 + e) * w.view(view) + b.view(view)
    return y if tau is None else torch.maximum(y, tau.view(view))


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (3, 2, 7), (2, 3, 2, 3, 2)])
@pytest.mark.parametrize("learnable_eps,tlu", [(False, True), (True, True), (False, False)])
def test_frn_matches_its_float64_reference(shape, learnable_eps, tlu):
    m = _randomize(FilterResponseNorm(shape[1], eps=1e-3, learnable_eps=learnable_eps, tlu=tlu).double())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    params = [p for p in (m.weight, m.bias, m.tau, m.learned_eps) if p is not None]
    ours = _grads(m, x, params)
    ref = _grads(lambda t: frn_reference(t, m.weight, m.bias, m.tau, m.eps, m.learned_eps), x, params)
    _assert_same(ours, ref, F64)


def test_frn_defaults_and_its_special_cases():
    m = FilterResponseNorm(4)
    assert m.eps == 1e-6 and torch.equal(m.tau, torch.zeros(4)) and m.learned_eps is None
    x = torch.randn(3, 4, 6, 6)
    y = m(x)
    # tau = 0: FRN's TLU is a ReLU of the mean-square normalization
    ref = F.relu(x / torch.sqrt(x.square().mean((2, 3), keepdim=True) + 1e-6))
    torch.testing.assert_close(y, ref, **F32)
    # no centering: an input that is a constant c per channel maps to about sign(c) (the paper's 1x1 remark)
    const = torch.full((2, 4, 3, 3), -2.0)
    torch.testing.assert_close(FilterResponseNorm(4, tlu=False)(const), torch.full_like(const, -1.0), atol=1e-5, rtol=0)
    # no batch dependence, no train/eval difference
    torch.testing.assert_close(m(x[:1]), y[:1], **F32)
    torch.testing.assert_close(m.eval()(x), y, rtol=0, atol=0)


def test_frn_on_one_position_per_channel_and_with_a_mask():
    m = FilterResponseNorm(3, eps=1e-2, tlu=False).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), x / torch.sqrt(x.square() + 1e-2), **F64)
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[0, 4:] = False
    y = m(x, mask=mask)
    nu2 = x[0, :, :4].square().mean(-1, keepdim=True)
    torch.testing.assert_close(y[0], x[0] / torch.sqrt(nu2 + 1e-2), **F64)


def test_frn_learned_eps_learns_and_gradcheck():
    m = FilterResponseNorm(3, learnable_eps=True).double()
    assert torch.allclose(m.learned_eps, torch.full((3,), 1e-6, dtype=torch.float64))
    x = torch.randn(4, 3, 1, 1, dtype=torch.float64)  # 1x1: where a learned eps matters
    m(x).sum().backward()
    assert m.learned_eps.grad is not None and m.learned_eps.grad.abs().sum() > 0
    m = _randomize(FilterResponseNorm(3, learnable_eps=True, eps=1e-2).double())
    xg = torch.randn(3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (xg,))


def test_frn_state_dict_round_trip_and_keys():
    m = _randomize(FilterResponseNorm(4, learnable_eps=True))
    assert set(m.state_dict()) == {"weight", "bias", "tau", "learned_eps"}
    n = FilterResponseNorm(4, learnable_eps=True)
    n.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(n(x), m(x), rtol=0, atol=0)
    assert set(FilterResponseNorm(4, tlu=False, affine=False).state_dict()) == set()


def test_frn_and_tlu_bad_inputs():
    with pytest.raises(ValueError, match=r"FilterResponseNorm expects size \(4,\) at dim\(s\) 1 .*got an input "
                                         r"of shape \(2, 3, 5\)"):
        FilterResponseNorm(4)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        FilterResponseNorm(4, eps=-1.0)
    with pytest.raises(TypeError, match="num_features must be an int"):
        FilterResponseNorm(4.0)
    with pytest.raises(ValueError, match=r"TLU expects an input \(N, 3, \*\) .*got \(2, 4\)"):
        TLU(3)(torch.randn(2, 4))


def test_tlu_is_a_learned_floor():
    t = TLU(2)
    with torch.no_grad():
        t.tau.copy_(torch.tensor([-0.5, 1.0]))
    x = torch.tensor([[[-1.0, 0.0, 2.0], [-1.0, 0.5, 2.0]]])
    assert t(x).tolist() == [[[-0.5, 0.0, 2.0], [1.0, 1.0, 2.0]]]


def test_frn_compiles_without_graph_breaks():
    _compiles(lambda: FilterResponseNorm(4), torch.randn(3, 4, 5, 5))
    _compiles(lambda: FilterResponseNorm(4, learnable_eps=True), torch.randn(3, 4, 5, 5))


# -------------------------------------------------------------------------------------------------- EvoNorm
def s0_reference(x, w, b, v, eps, groups):
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    std = torch.sqrt(xg.var(-1, unbiased=False, keepdim=True) + eps).expand(xg.shape).reshape(x.shape)
    view = [1, -1] + [1] * (x.ndim - 2)
    num = x if v is None else x * torch.sigmoid(v.view(view) * x)
    return num / std * w.view(view) + b.view(view)


def b0_reference(x, w, b, v, eps, batch_var=None):
    dims = [d for d in range(x.ndim) if d != 1]
    view = [1, -1] + [1] * (x.ndim - 2)
    bv = x.var(dims, unbiased=False, keepdim=True) if batch_var is None else batch_var.view(view)
    iv = x.var(tuple(range(2, x.ndim)), unbiased=False, keepdim=True)
    right = torch.sqrt(iv + eps) if v is None else v.view(view) * x + torch.sqrt(iv + eps)
    return x / torch.maximum(torch.sqrt(bv + eps).expand(x.shape), right) * w.view(view) + b.view(view)


@pytest.mark.parametrize("shape,groups", [((3, 8, 4, 4), 4), ((2, 6, 7), 3), ((4, 4), 2), ((2, 4, 3), 1)])
@pytest.mark.parametrize("nonlinearity", [True, False])
def test_evonorm_s0_matches_its_float64_reference(shape, groups, nonlinearity):
    m = _randomize(EvoNormS0(shape[1], groups=groups, nonlinearity=nonlinearity).double())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 0.5
    params = [p for p in (m.weight, m.bias, m.v) if p is not None]
    _assert_same(_grads(m, x, params),
                 _grads(lambda t: s0_reference(t, m.weight, m.bias, m.v, m.eps, groups), x, params), F64)


def test_evonorm_s0_special_cases():
    x = torch.randn(3, 8, 5, 5, dtype=torch.float64)
    m = EvoNormS0(8, groups=2).double()
    assert EvoNormS0(8, num_groups=2).groups == 2  # GroupNorm's name is accepted too
    # v = 0: sigmoid(0) = 1/2, so half of x over the group std
    with torch.no_grad():
        m.v.zero_()
    plain = EvoNormS0(8, groups=2, nonlinearity=False).double()
    torch.testing.assert_close(m(x), plain(x) / 2, **F64)
    # groups = C: the denominator is the instance std; groups = 1: the LayerNorm-over-(C, H, W) std
    s = EvoNormS0(8, groups=8, nonlinearity=False).double()
    torch.testing.assert_close(s(x), x / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + s.eps), **F64)
    one = EvoNormS0(8, groups=1, nonlinearity=False).double()
    torch.testing.assert_close(one(x), x / torch.sqrt(x.var((1, 2, 3), unbiased=False, keepdim=True) + one.eps),
                               **F64)
    # batch-free: no train/eval or batch dependence
    torch.testing.assert_close(m(x[:1]), m(x)[:1], **F64)
    torch.testing.assert_close(m.eval()(x), m.train()(x), rtol=0, atol=0)


def test_evonorm_s0_mask_and_gradcheck():
    m = _randomize(EvoNormS0(4, groups=2).double())
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    y = m(x, mask=mask)
    ref = s0_reference(x[1:, :, :3], m.weight, m.bias, m.v, m.eps, 2)  # the real positions alone
    torch.testing.assert_close(y[1:, :, :3], ref, **F64)
    xg = torch.randn(3, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (xg,))


@pytest.mark.parametrize("nonlinearity", [True, False])
@pytest.mark.parametrize("shape", [(6, 3, 4, 4), (5, 4, 6)])
def test_evonorm_b0_matches_its_float64_reference_in_training_and_eval(shape, nonlinearity):
    m = _randomize(EvoNormB0(shape[1], momentum=0.25, nonlinearity=nonlinearity).double())
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 0.5
    params = [p for p in (m.weight, m.bias, m.v) if p is not None]
    _assert_same(_grads(m, x, params), _grads(lambda t: b0_reference(t, m.weight, m.bias, m.v, m.eps), x, params),
                 F64)
    dims = [d for d in range(x.ndim) if d != 1]
    torch.testing.assert_close(m.running_var, 0.75 + 0.25 * x.var(dims, unbiased=True), **F64)
    assert int(m.num_batches_tracked) == 1
    m.eval()
    x2 = torch.randn(shape, dtype=torch.float64)
    _assert_same(_grads(m, x2, params),
                 _grads(lambda t: b0_reference(t, m.weight, m.bias, m.v, m.eps, m.running_var), x2, params), F64)


def test_evonorm_b0_state_dict_freeze_and_gradcheck():
    m = _randomize(EvoNormB0(4))
    assert set(m.state_dict()) == {"weight", "bias", "v", "running_var", "num_batches_tracked"}
    for _ in range(2):
        m(torch.randn(5, 4, 3, 3))
    n = EvoNormB0(4)
    n.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(n.eval()(x), m.eval()(x), rtol=0, atol=0)
    m.train().freeze()  # eval statistics through .train()
    before = m.running_var.clone()
    torch.testing.assert_close(m(x), n(x), rtol=0, atol=0)
    assert torch.equal(before, m.running_var)
    g = _randomize(EvoNormB0(3, momentum=0.0).double())
    xg = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: g(t), (xg,))


def test_evonorm_b0_depends_on_the_batch_and_the_mode():
    m = EvoNormB0(4)
    x = torch.randn(8, 4, 5, 5) * 3
    y = m(x)
    assert not torch.allclose(m(x[:2])[:1], y[:1], atol=1e-4)
    assert not torch.allclose(m.eval()(x), y, atol=1e-4)


def test_evonorm_bad_inputs_name_expected_and_got():
    with pytest.raises(ValueError, match=r"EvoNormS0: needs num_channels divisible by num_groups: got 12 channels, 5 "
                                         r"groups \(valid group counts: 1, 2, 3, 4, 6, 12\)"):
        EvoNormS0(12, groups=5)
    with pytest.raises(ValueError, match=r"EvoNormS0 expects size \(8,\) at dim\(s\) 1"):
        EvoNormS0(8, groups=4)(torch.randn(2, 6, 3))
    with pytest.raises(ValueError, match=r"EvoNormB0 expects an input of at least 3 dims, got a 2-D input of shape "
                                         r"\(4, 3\)"):
        EvoNormB0(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"more than 1 value per statistic when training, got input of shape "
                                         r"\(1, 3, 1\)"):
        EvoNormB0(3)(torch.randn(1, 3, 1))
    with pytest.raises(ValueError, match="momentum must be in"):
        EvoNormB0(3, momentum=2.0)


def test_evonorm_compiles_without_graph_breaks():
    _compiles(lambda: EvoNormS0(8, groups=4), torch.randn(3, 8, 5, 5))
    _compiles(lambda: EvoNormB0(8), torch.randn(3, 8, 5, 5))
    _compiles(lambda: EvoNormB0(8), torch.randn(3, 8, 5, 5), train=False)


# ------------------------------------------------------------------------------------- weight standardization
def ws_reference(w, eps):
    flat = w.flatten(1)
    mu = flat.mean(1, keepdim=True)
    var = flat.var(1, unbiased=False, keepdim=True)
    return ((flat - mu) / torch.sqrt(var + eps)).view_as(w)


@pytest.mark.parametrize("cls,conv,shape", [(WSConv1d, F.conv1d, (2, 4, 9)), (WSConv2d, F.conv2d, (2, 4, 7, 7)),
                                            (WSConv3d, F.conv3d, (1, 4, 4, 5, 5))])
def test_wsconv_matches_its_float64_reference(cls, conv, shape):
    m = cls(4, 6, 3, padding=1, stride=2, groups=2).double()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    params = [m.weight, m.bias]
    ref = _grads(lambda t: conv(t, ws_reference(m.weight, m.eps), m.bias, stride=2, padding=1, groups=2), x, params)
    _assert_same(_grads(m, x, params), ref, F64)
    w = m.standardized_weight().flatten(1)
    raw = m.weight.flatten(1).var(1, unbiased=False)
    torch.testing.assert_close(w.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(w.var(1, unbiased=False), raw / (raw + m.eps), **F64)  # unit variance up to eps


def test_wsconv_is_scale_and_shift_invariant_in_its_weight_and_loads_conv_state():
    m = WSConv2d(3, 5, 3, bias=False, eps=0.0).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    y = m(x)
    with torch.no_grad():
        m.weight.mul_(7.0).add_(3.0)  # per-filter affine changes of the raw weight do not matter
    torch.testing.assert_close(m(x), y, atol=1e-9, rtol=1e-9)
    plain = torch.nn.Conv2d(3, 5, 3, bias=True)
    ws = WSConv2d(3, 5, 3)
    ws.load_state_dict(plain.state_dict())  # the keys of nn.Conv2d
    torch.testing.assert_close(ws(x.float()), F.conv2d(x.float(), standardize_weight(plain.weight, 1e-6), plain.bias))
    assert "eps=1e-06" in repr(ws)


def test_wsconv_gradcheck_bad_eps_and_compile():
    m = WSConv1d(2, 3, 3).double()
    x = torch.randn(2, 2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: m(t), (x,))
    with pytest.raises(ValueError, match=r"eps must be a number >= 0, got -1"):
        WSConv2d(3, 4, 3, eps=-1)
    with pytest.raises(RuntimeError, match=r"Given groups=1, weight of size \[4, 3, 3, 3\], expected "
                                           r"input\[2, 2, 5, 5\]"):
        WSConv2d(3, 4, 3)(torch.randn(2, 2, 5, 5))
    _compiles(lambda: WSConv2d(3, 4, 3, padding=1), torch.randn(2, 3, 6, 6))


# ------------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("make", [lambda: BatchRenorm(4, warmup_steps=0),
                                  lambda: GhostBatchNorm(4, virtual_batch_size=2), lambda: FilterResponseNorm(4),
                                  lambda: EvoNormS0(4, groups=2), lambda: EvoNormB0(4)],
                         ids=["brn", "ghost", "frn", "s0", "b0"])
def test_half_precision_inputs_stay_half_and_match_float32(make):
    m = make()
    x = torch.randn(6, 4, 5, 5) * 2 + 1
    ref = copy.deepcopy(m)(x)
    y = m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ref, atol=0.1, rtol=0.05)


# -------------------------------------------------------------------------------------------- state dicts
@pytest.mark.parametrize("make", [lambda: BatchRenorm(4, warmup_steps=3),
                                  lambda: GhostBatchNorm(4, virtual_batch_size=2),
                                  lambda: FilterResponseNorm(4, learnable_eps=True), lambda: EvoNormS0(4, groups=2),
                                  lambda: EvoNormB0(4), lambda: WSConv2d(4, 4, 3, padding=1)],
                         ids=["brn", "ghost", "frn", "s0", "b0", "ws"])
def test_state_dict_round_trip_reproduces_training_and_eval(make):
    m = _randomize(make())
    x = torch.randn(6, 4, 5, 5)
    for _ in range(2):
        m(x)  # move running statistics and schedules
    n = make()
    n.load_state_dict(m.state_dict())
    for train in (True, False):
        torch.testing.assert_close(n.train(train)(x), m.train(train)(x), rtol=0, atol=0)
    for (k, a), (_, b) in zip(n.state_dict().items(), m.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)

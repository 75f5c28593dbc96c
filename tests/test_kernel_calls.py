"""Kernel calls as complete as torch's: batched backward, per-thread modes, fp16 subnormals under
flush-to-zero, eps = 0 on constant rows, and the public ops' checks of what they are given."""

from __future__ import annotations

import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normlab as nl
from normlab.kernels import build


def need_cpp():
    if not nl.kernels.cpp_available():
        pytest.skip(f"normlab's C++ kernels are not available here: {build.failure()}")


def _pair(ours: nn.Module, theirs: nn.Module, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Both layers with the same random parameters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 + 1)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


BATCHED = [
    ("LayerNorm", lambda: nl.LayerNorm(12), lambda: nn.LayerNorm(12), (3, 4, 12), "cpp:rows"),
    ("RMSNorm", lambda: nl.RMSNorm(12, eps=1e-6), lambda: nn.RMSNorm(12, eps=1e-6), (5, 12), "cpp:rows"),
    ("GroupNorm", lambda: nl.GroupNorm(2, 6), lambda: nn.GroupNorm(2, 6), (3, 6, 2, 3), "cpp:rows"),
    ("BatchNorm2d", lambda: nl.BatchNorm2d(3), lambda: nn.BatchNorm2d(3), (4, 3, 2, 2), "cpp:batch"),
    ("BatchNorm1d eval", lambda: nl.BatchNorm1d(5).eval(), lambda: nn.BatchNorm1d(5).eval(), (6, 5),
     "cpp:batch-cols"),
]


@pytest.mark.parametrize("name,make,make_torch,shape,path", BATCHED, ids=[c[0] for c in BATCHED])
def test_batched_backward_matches_torch(name, make, make_torch, shape, path):
    """autograd.grad(is_grads_batched=True): the kernels' backward runs under vmap (a gradient without storage)."""
    need_cpp()
    ours, theirs = _pair(make().double(), make_torch().double())
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert nl.kernels.implementation(ours, x) == path
    v = torch.randn((7, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = []
    for layer in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        params = [p for p in (layer.weight, getattr(layer, "bias", None)) if p is not None]
        got.append(torch.autograd.grad(y, [xi, *params], v, is_grads_batched=True))
    for a, b, what in zip(*got, ("input", "weight", "bias")):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name} {what}: {m}")


@pytest.mark.parametrize("name,make,make_torch,shape,path", BATCHED, ids=[c[0] for c in BATCHED])
def test_vectorized_jacobian_and_hessian_match_torch(name, make, make_torch, shape, path):
    need_cpp()
    ours, theirs = _pair(make().double(), make_torch().double())
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    jac = [torch.autograd.functional.jacobian(layer, x, vectorize=True) for layer in (ours, theirs)]
    torch.testing.assert_close(*jac)
    small = x[:2] if name != "BatchNorm2d" else x[:2, :, :1, :1]  # a hessian of a few entries

    def scalar(layer):
        return lambda t: (layer(t) ** 3).sum()
    hess = [torch.autograd.functional.hessian(scalar(ours), small, vectorize=True),
            # torch's own GroupNorm has no vectorized hessian (a size mismatch in its batched double backward)
            torch.autograd.functional.hessian(scalar(theirs), small, vectorize=name != "GroupNorm")]
    torch.testing.assert_close(*hess)


def test_use_reference_in_one_thread_leaves_the_others_alone():
    need_cpp()
    ln = nl.LayerNorm(64)
    x = torch.randn(8, 64)
    inside, release, done = threading.Event(), threading.Event(), threading.Event()
    seen: dict = {}

    def worker():
        with nl.use_reference():
            seen["worker"] = nl.kernels.implementation(ln, x)
            inside.set()
            release.wait(10)
        seen["worker after"] = nl.kernels.implementation(ln, x)
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    assert inside.wait(10)
    seen["main"] = nl.kernels.implementation(ln, x)  # while the worker is inside its block
    release.set()
    t.join(10)
    assert seen == {"worker": "reference", "main": "cpp:rows", "worker after": "cpp:rows"}


def test_interleaved_blocks_in_two_threads_keep_their_own_modes():
    """Thread A enters, thread B enters, A leaves, B still has its own mode (no popping of each other's)."""
    steps = [threading.Event() for _ in range(4)]
    seen: dict = {}

    def a():
        with nl.kernels.use("native"):
            steps[0].set()
            steps[1].wait(10)
        seen["a after"] = nl.kernels.mode()
        steps[2].set()

    def b():
        steps[0].wait(10)
        with nl.kernels.use("reference"):
            steps[1].set()
            steps[2].wait(10)
            seen["b inside"] = nl.kernels.mode()
        seen["b after"] = nl.kernels.mode()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    default = nl.kernels.mode()
    assert seen == {"a after": default, "b inside": "reference", "b after": default}


@pytest.fixture
def flush_denormal():
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush denormals")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@pytest.mark.parametrize("make,shape,path", [
    (lambda: nl.LayerNorm(64, eps=1e-16), (4, 64), "cpp:rows"),  # eps far below the inputs' variance (~1e-12)
    (lambda: nl.RMSNorm(64, eps=1e-16), (4, 64), "cpp:rows"),
    (lambda: nl.GroupNorm(2, 4, eps=1e-16), (2, 4, 3, 5), "cpp:rows"),
    (lambda: nl.LayerNorm2d(4, eps=1e-16), (2, 4, 3, 5), "cpp:chfirst"),
    (lambda: nl.BatchNorm2d(4, eps=1e-16), (3, 4, 2, 5), "cpp:batch"),
], ids=["LayerNorm", "RMSNorm", "GroupNorm", "LayerNorm2d", "BatchNorm2d"])
def test_fp16_subnormal_inputs_under_flush_to_zero(make, shape, path, flush_denormal):
    """Every fp16 subnormal is a normal float32: flushing float denormals must not zero them."""
    need_cpp()
    layer = make().half()
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(4)) * 1e-6).half()  # |x| < 6.1e-5: subnormal
    assert (x != 0).float().mean() > 0.9 and x.abs().max() < 6.1e-5
    assert nl.kernels.implementation(layer, x) == path
    assert torch.equal(x.float().double(), x.double())  # torch's own conversion keeps them
    y = layer(x)
    ref = copy_layer(layer).double()(x.double())
    torch.testing.assert_close(y.double(), ref, atol=2e-3, rtol=2e-3)


def copy_layer(layer):
    import copy

    return copy.deepcopy(layer)


def test_fp16_subnormal_outputs_under_flush_to_zero(flush_denormal):
    need_cpp()
    ln = nl.LayerNorm(64).half()
    with torch.no_grad():
        ln.weight.fill_(1e-5)  # outputs ~1e-5: fp16 subnormals
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(5)).half()
    y = ln(x)
    ref = copy_layer(ln).double()(x.double()).half()
    assert (ref != 0).float().mean() > 0.9
    torch.testing.assert_close(y, ref, atol=1e-7, rtol=0)


@pytest.mark.parametrize("L", [18, 33, 768, 4097])
@pytest.mark.parametrize("c", [0.1, 1 / 3, 3.3, -7.7, 1e4 + 0.1])
def test_eps_zero_constant_rows_are_nan_as_torch(L, c):
    """Variance exactly 0 on a constant row, as the reference and torch: with eps = 0, 0 * inf = NaN (not beta)."""
    need_cpp()
    x = torch.full((3, L), c)
    x[1] = torch.randn(L)
    ln = nl.LayerNorm(L, eps=0.0)
    assert nl.kernels.implementation(ln, x) == "cpp:rows"
    y = ln(x)
    expect = F.layer_norm(x, (L,), eps=0.0)
    with nl.use_reference():
        ref = ln(x)
    assert torch.isnan(expect[0]).all() and torch.isnan(ref[0]).all()
    assert torch.isnan(y[0]).all() and torch.isnan(y[2]).all(), f"row of {L} x {c}: {y[0, :4]}"
    torch.testing.assert_close(y[1], expect[1])


@pytest.mark.parametrize("make,x,path", [
    (lambda: nl.GroupNorm(2, 6, eps=0.0),
     lambda: torch.tensor([0.1, 3.3]).repeat_interleave(3).view(1, 6, 1, 1).expand(2, 6, 5, 7), "cpp:rows"),
    (lambda: nl.InstanceNorm2d(3, eps=0.0), lambda: torch.full((2, 3, 5, 7), 1 / 3), "cpp:rows"),
    (lambda: nl.LayerNorm2d(6, eps=0.0), lambda: torch.full((2, 6, 5, 7), 0.1), "cpp:chfirst"),
    (lambda: nl.LayerNorm((6, 5, 7), eps=0.0), lambda: torch.full((2, 6, 5, 7), 3.3), "cpp:rows"),
], ids=["GroupNorm", "InstanceNorm2d", "LayerNorm2d", "LayerNorm CHW"])
def test_eps_zero_constant_groups_are_nan_as_the_reference(make, x, path):
    need_cpp()
    layer = make()
    x = x().contiguous()
    assert nl.kernels.implementation(layer, x) == path
    with nl.use_reference():
        ref = layer(x)
    assert torch.isnan(ref).all()
    assert torch.isnan(layer(x)).all()


def test_a_nearly_constant_row_keeps_its_tiny_variance():
    """The check for constant rows reads the values: a row that differs by one ulp is not constant."""
    need_cpp()
    x = torch.full((2, 33), 0.1)
    x[0, 5] = torch.nextafter(torch.tensor(0.1), torch.tensor(1.0))
    ln = nl.LayerNorm(33, eps=0.0, elementwise_affine=False)
    y = ln(x)
    with nl.use_reference():
        ref = ln(x)
    assert torch.isfinite(y[0]).all() and torch.isfinite(ref[0]).all()
    torch.testing.assert_close(y[0], ref[0], atol=1e-3, rtol=1e-3)


def _ops():
    need_cpp()
    return torch.ops.normlab


def test_rows_ops_refuse_parameters_of_the_wrong_size():
    ops = _ops()
    x = torch.randn(4, 1000)
    w, b = torch.randn(1000), torch.randn(1000)
    with pytest.raises(RuntimeError, match=r"rows_fwd: weight must have 1000 elements .*got 3"):
        ops.rows_fwd(x, torch.randn(3), None, None, 1, 1, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"rows_fwd: bias must have 1000 elements .*got 999"):
        ops.rows_fwd(x, w, torch.randn(999), None, 1, 1, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"rows_fwd: weight must have 8 elements"):  # GroupNorm: 2 groups of 4
        ops.rows_fwd(torch.randn(4, 40), torch.randn(4), None, None, 2, 10, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"weight must have 1000 elements"):
        ops.rows_ad(x, torch.randn(3), None, None, 1, 1, 1e-5, True, 0)
    with pytest.raises(RuntimeError, match=r"weight must have 1000 elements"):
        ops.rows_ad(x.view(2, 2, 1000), torch.randn(3), None, None, 1, 1, 1e-5, True, 1000)
    y, stats, _ = ops.rows_fwd(x, w, b, None, 1, 1, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"rows_bwd: weight must have 1000 elements"):
        ops.rows_bwd(y, x, torch.randn(3), stats, None, 1, 1, 1e-5, True, True, True, b)
    with pytest.raises(RuntimeError, match=r"rows_bwd: stats must be Float of shape \[3, 4\]"):
        ops.rows_bwd(y, x, w, stats[:, :2], None, 1, 1, 1e-5, True, True, True, b)


def test_chfirst_and_batch_ops_refuse_parameters_of_the_wrong_size():
    ops = _ops()
    x = torch.randn(2, 8, 5)
    with pytest.raises(RuntimeError, match=r"chfirst_fwd: weight must have 8 elements .*got 3"):
        ops.chfirst_fwd(x, torch.randn(3), None, 1e-5, True)
    y, stats = ops.chfirst_fwd(x, torch.randn(8), None, 1e-5, True)
    with pytest.raises(RuntimeError, match=r"chfirst_bwd: stats must be"):
        ops.chfirst_bwd(y, x, torch.randn(8), stats[:, :1], 1e-5, True, True, False, None)
    with pytest.raises(RuntimeError, match=r"batch_fwd: weight must have 8 elements .*got 3"):
        ops.batch_fwd(x, torch.randn(3), None, None, None, None, 1e-5, False)
    with pytest.raises(RuntimeError, match=r"batch_fwd: mean must have 8 elements"):
        ops.batch_fwd(x, None, None, None, torch.zeros(2), torch.ones(2), 1e-5, False)
    with pytest.raises(RuntimeError, match=r"batch_fwd: give both mean and var"):
        ops.batch_fwd(x, None, None, None, torch.zeros(8), None, 1e-5, False)
    with pytest.raises(RuntimeError, match=r"batch_fwd: bias must have 5 elements"):
        ops.batch_fwd(torch.randn(6, 5), None, torch.randn(2), None, None, None, 1e-5, True)
    y, stats = ops.batch_fwd(x, None, None, None, None, None, 1e-5, False)
    with pytest.raises(RuntimeError, match=r"batch_bwd: stats must be the \(4, C\)"):
        ops.batch_bwd(y, x, None, None, stats[:, :3], 1e-5, False, False, False, None)
    rm, rv, nbt = torch.zeros(3), torch.ones(8), torch.tensor(0)
    with pytest.raises(RuntimeError, match=r"running_var must match running_mean"):
        ops.batch_ad(x, None, None, None, None, 1e-5, False, rm, rv, nbt, 0.1, 2, True)


def test_add_norm_keeps_a_subclass_forward():
    """FilterResponseNorm (a Norm whose forward adds its TLU) of one channel at one position: its plan is rows of
    one group and one segment, which the fused add + norm takes, skipping the TLU; add_norm must give the
    composition."""
    need_cpp()
    frn = nl.FilterResponseNorm(1)
    with torch.no_grad():
        frn.tau.fill_(0.5)
    x, r = torch.randn(6, 1, 1, 1), torch.randn(6, 1, 1, 1)
    assert nl.kernels.implementation(frn, x) == "cpp:rows"
    y, s = nl.add_norm(x, r, frn)
    torch.testing.assert_close(y, frn(x + r))


@pytest.mark.parametrize("make,shape", [
    (lambda: nl.LayerNorm(4096), (1024, 4096)),
    (lambda: nl.GroupNorm(8, 64), (16, 64, 32, 32)),
    (lambda: nl.BatchNorm2d(64), (16, 64, 32, 32)),
    (lambda: nl.LayerNorm2d(64), (16, 64, 32, 32)),
], ids=["LayerNorm", "GroupNorm", "BatchNorm2d", "LayerNorm2d"])
def test_large_outputs_on_fresh_pages_match_torch(make, shape):
    """Outputs of 16 MB: glibc maps them afresh (the kernels then ask for huge pages and write them with ordinary
    stores); forward and backward as torch's."""
    need_cpp()
    layer = make()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    y = layer(x)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y) / y.numel())
    with nl.use_reference():
        ref_layer = copy_layer(layer)
        xr = x.detach().clone().requires_grad_(True)
        yr = ref_layer(xr)
        (dxr,) = torch.autograd.grad(yr, xr, torch.ones_like(yr) / yr.numel())
    torch.testing.assert_close(y, yr, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, dxr, atol=1e-8, rtol=1e-4)

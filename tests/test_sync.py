"""SyncBatchNorm over real gloo process groups equals BatchNorm over the concatenated global batch."""

from __future__ import annotations

import pytest
import torch

import normlab as nl
from normlab.distributed import run_distributed

F64 = torch.float64

# (per-rank batch sizes, layout, masked)
SCENARIOS = {
    2: [((3, 5), "nchw", False), ((4, 4), "btd", True), ((1, 6), "nc", False)],
    3: [((4, 0, 2), "nchw", False), ((1, 2, 6), "ncl", False), ((3, 0, 2), "btd", True), ((2, 3, 1), "btd", True)],
}


def _global_batch(sizes, layout, masked, seed):
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    shape = {"nchw": (n, 4, 3, 2), "ncl": (n, 4, 5), "nc": (n, 4), "btd": (n, 6, 4)}[layout]
    x = torch.randn(shape, generator=g, dtype=F64) * 2 + 1
    grad = torch.randn(shape, generator=g, dtype=F64)
    mask = None
    if masked:
        mask = torch.rand(shape[:-1], generator=g) > 0.3
        mask[:, 0] = True
    return x, grad, mask


def _run(layer, x, grad, mask, steps=2):
    """Two training steps; return output, input grad, param grads and running stats of the last."""
    for step in range(steps):
        xi = (x + 0.25 * step).detach().requires_grad_(True)
        layer.zero_grad(set_to_none=True)
        y = layer(xi) if mask is None else layer(xi, mask=mask)
        (y * grad).sum().backward()
    return y.detach(), xi.grad, layer.weight.grad, layer.bias.grad, layer.running_mean.clone(), \
        layer.running_var.clone(), layer.num_batches_tracked.clone()


def _worker(rank, world_size):
    import torch.distributed as dist

    report = []
    for i, (sizes, layout, masked) in enumerate(SCENARIOS[world_size]):
        x, grad, mask = _global_batch(sizes, layout, masked, seed=100 + i)
        channel_dim = -1 if layout == "btd" else 1
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        sync = nl.SyncBatchNorm(4, momentum=0.3, channel_dim=channel_dim, dtype=F64)
        ref = nl.BatchNorm(4, momentum=0.3, channel_dim=channel_dim, dtype=F64)
        with torch.no_grad():
            for m in (sync, ref):
                m.weight.copy_(torch.linspace(0.5, 1.5, 4, dtype=F64))
                m.bias.copy_(torch.linspace(-0.5, 0.5, 4, dtype=F64))
        local = _run(sync, x[lo:hi], grad[lo:hi], None if mask is None else mask[lo:hi])
        full = _run(ref, x, grad, mask)
        y, dx, dw, db, rm, rv, nbt = local
        for t in (dw, db):  # local contributions; their sum over ranks is the global gradient
            dist.all_reduce(t)
        errs = {
            "y": (y - full[0][lo:hi]).abs().max().item() if hi > lo else 0.0,
            "dx": (dx - full[1][lo:hi]).abs().max().item() if hi > lo else 0.0,
            "dw": (dw - full[2]).abs().max().item(),
            "db": (db - full[3]).abs().max().item(),
            "running_mean": (rm - full[4]).abs().max().item(),
            "running_var": (rv - full[5]).abs().max().item(),
            "num_batches_tracked": abs(int(nbt) - int(full[6])),
        }
        report.append(((sizes, layout, masked), errs))
    return report


@pytest.mark.parametrize("world_size", [2, 3])
def test_syncbatchnorm_equals_global_batchnorm(world_size):
    reports = run_distributed(_worker, world_size, timeout=240)
    for rank, report in enumerate(reports):
        for scenario, errs in report:
            for key, err in errs.items():
                assert err <= 1e-12, f"rank {rank}, scenario {scenario}: {key} differs by {err:.3e}"


def _batch_of_one_worker(rank, world_size):
    bn = nl.SyncBatchNorm(3)
    try:
        bn(torch.randn(1 if rank == 0 else 0, 3))
    except ValueError as e:
        return str(e)
    return "no error"


def test_global_batch_of_one_is_refused_on_every_rank():
    msgs = run_distributed(_batch_of_one_worker, 2, timeout=120)
    assert all("more than 1 value per statistic" in m for m in msgs), msgs


def test_without_process_group_it_is_batchnorm():
    x = torch.randn(6, 4, 3, dtype=F64)
    sync, plain = nl.SyncBatchNorm(4, dtype=F64), nl.BatchNorm(4, dtype=F64)
    torch.testing.assert_close(sync(x), plain(x), rtol=0, atol=0)
    torch.testing.assert_close(sync.running_var, plain.running_var, rtol=0, atol=0)


def test_run_distributed_reports_a_failing_rank():
    with pytest.raises(RuntimeError, match="rank 1 of 2 failed"):
        run_distributed(_fails_on_rank_one, 2, timeout=120)


def _fails_on_rank_one(rank, world_size):
    if rank == 1:
        raise ArithmeticError("boom")
    return rank

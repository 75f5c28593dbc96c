"""ChunkedBatchRenorm (C35's per-process Batch Renorm in one forward) against BatchRenorm run on each chunk."""

from __future__ import annotations

import copy

import torch

from normlab.experiments.harness.chunked_renorm import ChunkedBatchRenorm, chunk_renorms
from normlab.layers import BatchRenorm


def _pair(chunk, steps_done=0):
    torch.manual_seed(0)
    ref = BatchRenorm(3, momentum=0.1, rmax=1.5, dmax=0.5, warmup_steps=4).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
        ref.running_mean.uniform_(-1, 1)
        ref.running_var.uniform_(0.5, 2)
        ref.num_batches_tracked.fill_(steps_done)
    new = ChunkedBatchRenorm(3, chunk, momentum=0.1, rmax=1.5, dmax=0.5, warmup_steps=4).double()
    new.load_state_dict(ref.state_dict())
    return ref, new


def test_each_chunk_normalized_as_batch_renorm_on_that_chunk_forward_and_backward():
    x = (torch.randn(8, 3, 5, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    up = torch.randn(8, 3, 5, dtype=torch.float64)
    ref, new = _pair(2, steps_done=3)  # mid-ramp: r and d clipped by (1.375, 0.375)
    y = new(x)
    (y * up).sum().backward()
    gx, gw = x.grad.clone(), new.weight.grad.clone()
    x.grad = None
    ys, gws = [], torch.zeros(3, dtype=torch.float64)
    for k in range(4):
        one = copy.deepcopy(ref)  # every process starts the step from the same running statistics
        xs = x[2 * k : 2 * k + 2]
        out = one(xs)
        (out * up[2 * k : 2 * k + 2]).sum().backward()
        ys.append(out)
        gws += one.weight.grad
    torch.testing.assert_close(y, torch.cat(ys), rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, x.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, gws, rtol=0, atol=1e-12)


def test_one_chunk_is_batch_renorm_running_statistics_included():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    ref, new = _pair(6)
    for _ in range(3):
        torch.testing.assert_close(new(x), ref(x), rtol=0, atol=1e-12)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(new, key), getattr(ref, key), rtol=0, atol=1e-12)
    torch.testing.assert_close(new.eval()(x), ref.eval()(x), rtol=0, atol=1e-12)


def test_chunk_renorms_swaps_every_batch_renorm_keeping_its_state():
    net = torch.nn.Sequential(torch.nn.Conv1d(1, 3, 3), BatchRenorm(3, rmax=1.5, dmax=0.5, warmup_steps=7))
    net[1].running_mean.fill_(0.25)
    chunk_renorms(net, 2)
    assert type(net[1]) is ChunkedBatchRenorm and net[1].chunk == 2 and net[1].warmup_steps == 7
    assert torch.all(net[1].running_mean == 0.25)
    assert net(torch.randn(4, 1, 9)).shape == (4, 3, 7)


def test_running_statistics_are_the_first_process_s_and_rmax_1_is_batchnorm_per_chunk():
    from normlab.layers import BatchNorm

    x = torch.randn(8, 3, 5, dtype=torch.float64) * 3 + 2
    new = ChunkedBatchRenorm(3, 2, momentum=0.1, rmax=1.0, dmax=0.0, warmup_steps=0).double()
    bn0 = BatchNorm(3, momentum=0.1).double()  # rank 0: BatchNorm on its own chunk
    y = new(x)
    ref0 = bn0(x[:2])
    torch.testing.assert_close(y[:2], ref0, rtol=0, atol=1e-12)
    for k in range(1, 4):  # the other processes: BatchNorm on their chunk (their own statistics)
        torch.testing.assert_close(y[2 * k : 2 * k + 2], BatchNorm(3).double()(x[2 * k : 2 * k + 2]), rtol=0,
                                   atol=1e-12)
    torch.testing.assert_close(new.running_mean, bn0.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(new.running_var, bn0.running_var, rtol=0, atol=1e-12)

"""Data-parallel training (normlab.train under a process group): 2 gloo processes on the same seed give the
loss curve of one process on the global batch, to float tolerance; BatchNorm needs sync_batchnorm for that
(per-process BatchNorm sees only its shard); rank 0 alone writes the record."""

from __future__ import annotations

import json

import pytest
import torch

from normlab.distributed import run_distributed

STEPS = 12


def _conv(sync: bool, record_path=None, steps=STEPS):
    from normlab.data import digits
    from normlab.models import ConvNet, ConvNetConfig
    from normlab.train import ClassificationTask, TrainConfig, train

    torch.manual_seed(0)
    net = ConvNet(ConvNetConfig(dim=2, input_size=8, widths=(8, 16), norm="batchnorm"))
    cfg = TrainConfig(steps=steps, lr=1e-2, log_every=1, seed=3, progress=False, sync_batchnorm=sync)
    rec = train(net, ClassificationTask(digits(), 32), cfg, record_path=record_path)
    return [m["loss"] for m in rec["metrics"]], rec


def _gpt(record_path=None):
    from normlab.data import text
    from normlab.models import GPT, GPTConfig
    from normlab.train import LMTask, TrainConfig, train

    corpus = text()
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, d_model=32, n_head=2, block_size=16, vocab_size=corpus.vocab_size))
    cfg = TrainConfig(steps=STEPS, lr=3e-3, log_every=1, seed=5, progress=False)
    rec = train(model, LMTask(corpus, 16, 8), cfg, record_path=record_path)
    return [m["loss"] for m in rec["metrics"]], rec


def _worker(rank, world, kind, path):
    if kind == "gpt":
        losses, rec = _gpt(record_path=path)
    else:
        losses, rec = _conv(sync=(kind == "conv-sync"), record_path=path)
    return {"losses": losses, "status": rec["status"], "distributed": rec.get("distributed"),
            "final": rec["final"]}


@pytest.mark.parametrize("kind", ["gpt", "conv-sync"])
def test_two_processes_follow_the_single_process_curve(kind, tmp_path):
    single, _ = _gpt() if kind == "gpt" else _conv(sync=False)
    path = str(tmp_path / "rec.json")
    res = run_distributed(_worker, 2, kind, path, timeout=240)
    assert [r["status"] for r in res] == ["ok", "ok"]
    assert res[0]["losses"] == res[1]["losses"]  # the logged loss is the mean over ranks
    torch.testing.assert_close(torch.tensor(res[0]["losses"]), torch.tensor(single), rtol=1e-4, atol=1e-4)
    assert res[0]["distributed"]["world_size"] == 2
    rec = json.loads(open(path).read())  # one record, by rank 0
    assert rec["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": kind == "conv-sync",
                                  "written_by_rank": 0}
    assert rec["config"]["data"]["data_parallel"] == {"world_size": 2}


def test_per_process_batchnorm_is_not_the_global_batch():
    single, _ = _conv(sync=False)
    res = run_distributed(_worker, 2, "conv-local", None, timeout=240)
    local = torch.tensor(res[0]["losses"])
    assert (local - torch.tensor(single)).abs().max() > 1e-3  # each rank normalizes its own 16 samples


def _odd_worker(rank, world):
    from normlab.data import digits
    from normlab.models import ConvNet, ConvNetConfig
    from normlab.train import ClassificationTask, TrainConfig, train

    net = ConvNet(ConvNetConfig(dim=2, input_size=8, widths=(8,), norm="groupnorm", groups=2))
    rec = train(net, ClassificationTask(digits(), 33), TrainConfig(steps=2, progress=False))
    return rec["status"], rec["error"]


def test_a_batch_that_does_not_split_evenly_is_refused():
    for status, error in run_distributed(_odd_worker, 2, timeout=120):
        assert status == "failed" and "divisible by the 2 processes, got a batch of 33" in error


def test_distributed_true_without_a_group_says_how_to_launch():
    from normlab.train import TrainConfig

    with pytest.raises(RuntimeError, match="launch with torchrun"):
        _ = TrainConfig(steps=1, distributed=True)
        from normlab.train.distributed import world

        world(True)

"""The training loop: learning, divergence, determinism, instruments and records."""

from __future__ import annotations

import json
import math

import pytest
import torch

from normlab.data import digits, text
from normlab.models import GPT, ConvNet, ConvNetConfig, GPTConfig
from normlab.train import INSTRUMENTS, ClassificationTask, LMTask, TrainConfig, read_record, train


@pytest.fixture(scope="module")
def corpus():
    return text()


def _gpt(corpus, **kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(n_layer=2, d_model=32, n_head=4, block_size=32, vocab_size=corpus.vocab_size),
                            **kw}))


def test_short_lm_run_lowers_the_loss(corpus):
    rec = train(_gpt(corpus), LMTask(corpus, 32, 8), TrainConfig(steps=80, lr=3e-3, warmup_steps=10, progress=False,
                                                                 eval_batches=4))
    assert rec["status"] == "ok"
    first, last = rec["metrics"][0]["loss"], rec["metrics"][-1]["loss"]
    assert first == pytest.approx(math.log(corpus.vocab_size), rel=0.1)
    assert last < first - 1.0 and rec["final"]["val_loss"] < first - 1.0
    assert rec["config"]["model"]["norm"] == "layernorm" and rec["config"]["data"]["vocab"] == "".join(corpus.vocab)
    assert {"python", "torch", "normlab", "cpu"} <= set(rec["env"])


def test_absurd_learning_rate_is_marked_diverged(corpus):
    rec = train(_gpt(corpus, placement="post"), LMTask(corpus, 32, 8),
                TrainConfig(steps=100, lr=30.0, progress=False, grad_clip=None))
    assert rec["status"] == "diverged" and rec["diverged_at"] is not None and rec["diverged_at"] < 100
    assert rec["steps_done"] == rec["diverged_at"] + 1 and rec["final"] == {}


def test_same_seed_same_run_different_seed_different_run():
    def run(seed):
        torch.manual_seed(0)
        net = ConvNet(ConvNetConfig(dim=2, input_size=8, widths=(8, 16)))
        return train(net, ClassificationTask(digits(), 32), TrainConfig(steps=15, lr=1e-2, seed=seed, log_every=1,
                                                                          progress=False))
    a, b, c = run(1), run(1), run(2)
    assert [m["loss"] for m in a["metrics"]] == [m["loss"] for m in b["metrics"]]
    assert [m["loss"] for m in a["metrics"]] != [m["loss"] for m in c["metrics"]]


def test_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    f = [cfg.lr_factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert TrainConfig(steps=10, schedule="constant").lr_factor(9) == 1.0


def test_instruments_produce_expected_keys_and_sane_values(corpus):
    names = tuple(n for n in INSTRUMENTS if n != "bn_stats")
    model = _gpt(corpus, qk_norm="layernorm")
    rec = train(model, LMTask(corpus, 32, 4), TrainConfig(steps=4, lr=1e-3, instruments=names, progress=False,
                                                          instrument_every=2, eval_batches=2))
    assert rec["status"] == "ok", rec["error"]
    assert [e["step"] for e in rec["instruments"]] == [0, 2, 3]
    entry = rec["instruments"][0]
    for name in names:
        assert name in entry
    for key in ("grad_norms", "expected_grad_norms", "update_ratio"):
        values = entry[key]
        assert "blocks.0.attn.c_attn.weight" in values
        assert all(math.isfinite(v) and v > 0 for v in values.values()), key
    assert entry["residual_rms"]["layers"] == ["embedding", "blocks.0", "blocks.1"]
    assert all(v > 0 for v in entry["residual_rms"]["rms"])
    assert set(entry["attn_logits"]) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(0 <= v < 1.0001 for v in entry["norm_inputs"].values())  # |mean| <= RMS always
    assert "blocks.0.attn.q_norm" in entry["norm_inputs"]
    assert all(v["std"] >= 0 and v["absmax"] >= abs(v["mean"]) for v in entry["act_stats"].values())
    assert all(not m.track_logits for n, m in model.named_modules() if hasattr(m, "track_logits"))


def test_expected_gradient_does_not_disturb_training():
    def run(instruments):
        torch.manual_seed(0)
        net = ConvNet(ConvNetConfig(dim=2, input_size=8, widths=(8, 16)))
        return train(net, ClassificationTask(digits(), 32), TrainConfig(
            steps=6, lr=1e-2, log_every=1, instruments=instruments, progress=False))
    plain, measured = run(()), run(("expected_grad_norms", "bn_stats"))
    assert [m["loss"] for m in plain["metrics"]] == [m["loss"] for m in measured["metrics"]]
    bn = measured["instruments"][0]["bn_stats"]["stem.norm"]
    assert bn["var_shift"] >= 1.0 and bn["mean_shift"] >= 0


def test_record_is_written_atomically_and_failures_are_recorded(tmp_path, corpus):
    path = tmp_path / "runs" / "r.json"
    rec = train(_gpt(corpus), LMTask(corpus, 32, 4), TrainConfig(steps=3, progress=False, eval_batches=1),
                record_path=path, extra={"claim": "test"})
    assert read_record(path)["status"] == "ok" and read_record(path)["extra"] == {"claim": "test"}
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind

    class Broken(LMTask):
        def loss(self, model, batch):
            raise ArithmeticError("exploded")

    rec = train(_gpt(corpus), Broken(corpus, 32, 4), TrainConfig(steps=3, progress=False), record_path=path)
    assert rec["status"] == "failed" and "ArithmeticError: exploded" in rec["error"]
    assert json.loads(path.read_text())["status"] == "failed"


def test_bad_configs_raise_before_training(corpus):
    with pytest.raises(ValueError, match="unknown instruments \\['gradients'\\]"):
        train(_gpt(corpus), LMTask(corpus, 32, 4), TrainConfig(instruments=("gradients",)))
    with pytest.raises(ValueError, match="optimizer must be adamw or sgd"):
        TrainConfig(optimizer="lion").validate()
    with pytest.raises(ValueError, match="unknown batcher 'bucketed'"):
        LMTask(corpus, 32, 4, batcher="bucketed")


@pytest.mark.parametrize("batcher", ["padded", "packed"])
def test_variable_length_batchers_train(corpus, batcher):
    rec = train(_gpt(corpus, norm="batchnorm"), LMTask(corpus, 32, 8, batcher=batcher),
                TrainConfig(steps=20, lr=3e-3, progress=False, eval_batches=2))
    assert rec["status"] == "ok" and rec["metrics"][-1]["loss"] < rec["metrics"][0]["loss"]


def test_sgd_and_progress_bar(corpus, capsys):
    rec = train(_gpt(corpus), LMTask(corpus, 32, 4), TrainConfig(steps=5, optimizer="sgd", lr=0.1, progress=True,
                                                                 eval_batches=1))
    assert rec["status"] == "ok"

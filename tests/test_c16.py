"""C16 (normlab.experiments.claims.c16_syncbn): rescue judged at a global batch of 32 or more, simulated in one
process; exactness and step time on real gloo processes."""

from __future__ import annotations

import pytest

from cases_batchnorm import GOOD, _c16
from normlab.experiments import get
from normlab.experiments.claims import c16_syncbn


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c16_judges_the_rescue_at_a_global_batch_of_32_or_more(mode):
    runs = dict(c16_syncbn.grid(mode))
    simulated = {n: c for n, c in runs.items() if c["kind"] == "simulated"}
    timed = {n: c for n, c in runs.items() if c["kind"] == "distributed"}
    assert simulated and timed
    for name, c in simulated.items():
        assert c["world"] * c["per_process"] >= 32 and name == f"{c['world']} processes x {c['per_process']}"
        assert c["per_process"] <= 4  # a small per-process batch
    assert ("8 processes x 4" in simulated) and (mode == "quick") == ("16 processes x 2" not in simulated)
    assert all(c["steps"] <= 50 for c in timed.values())  # timing only: no accuracy from these


def test_c16_simulated_local_bn_normalizes_each_process_chunk_on_its_own(monkeypatch):
    from normlab.experiments.harness.chunked_renorm import ChunkedBatchRenorm

    seen = {}

    def fake_train(config, seed, net):
        chunks = {m.chunk for m in net.modules() if isinstance(m, ChunkedBatchRenorm)}
        seen[config["model"]["norm"]] = (chunks, config["batch"])
        return None, None, {"status": "ok", "final": {"test_acc": 0.5}}

    monkeypatch.setattr(c16_syncbn, "train_net", fake_train)
    config = dict(c16_syncbn.grid("quick")[-1][1])
    res = c16_syncbn.simulate(config, 0)
    assert seen == {"batchrenorm": ({4}, 32), "batchnorm": (set(), 32)}
    assert set(res["train"]) == {"local BN", "SyncBN"}


def test_c16_reports_the_step_time_and_needs_the_exactness():
    v = get("C16").verdict(_c16({"8 processes x 4": GOOD}))
    assert v.status == "supported" and "step time" in v.summary and "1.3" in v.summary
    assert get("C16").verdict(_c16({"8 processes x 4": GOOD}, diff=1e-3)).status == "not supported"

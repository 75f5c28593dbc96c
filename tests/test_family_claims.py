"""The setups of C36-C38 (normlab.experiments.claims) beyond the three-outcome cases: what each grid runs, the
folding run on a tiny net, and the rules' edges."""

from __future__ import annotations

import pytest

from cases_family import c37
from normlab.experiments import get
from normlab.experiments.claims import c36_bn_folding as c36_mod
from normlab.experiments.claims import c37_precise_bn as c37_mod
from normlab.experiments.claims import c38_batch_free as c38_mod


def test_c36_fold_run_on_a_tiny_net_is_exact_and_times_both():
    config = {"model": dict(dim=1, input_size=8, widths=[4, 8], blocks_per_stage=1, arch="resnet"), "batch": 4,
              "nets": 2, "processes": 2, "rounds": 3, "warmup_rounds": 1, "calls": 2, "mode": "quick"}
    res = c36_mod.run(config, 0)
    assert max(res["errors"]["float64"]) < 1e-12 and max(res["errors"]["float32"]) < 1e-5
    assert all(f == n and n > 0 for f, n in res["folded"])
    assert len(res["processes"]) == 2 and all(len(p["original"]) == len(p["folded"]) == 3 for p in res["processes"])
    assert res["processes"][0]["steady_allocator"] in (True, False) and not res["fresh_pages"]["steady_allocator"]
    v = get("C36").verdict([{"name": "tiny", "seed": 0, "config": config, "result": res}])
    assert v.status in ("supported", "not supported", "inconclusive") and len(v.tests) == 3


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c36_is_timed_alone_and_c37_c38_grids(mode):
    assert get("C36").exclusive and get("C36").threads == 1
    assert all(c["model"]["arch"] == "resnet" for _, c in c36_mod.grid(mode))
    arms = dict(c37_mod.grid(mode))
    assert set(arms) == set(c37_mod.ARMS)
    assert arms["lagging EMA (momentum 0.01, constant lr)"]["model"]["norm_momentum"] == 0.01
    assert arms["short (stopped early, constant lr)"]["train"]["schedule"] == "constant"
    assert arms["short (stopped early, constant lr)"]["train"]["steps"] < arms[c37_mod.REFERENCE]["train"]["steps"]
    assert {n for n, _ in c38_mod.grid(mode)} == {"frn", "evonorm_s0", "groupnorm", "batchnorm", "evonorm_b0"}


def test_c37_matching_on_the_trained_net_is_judged_with_a_margin():
    from cases_family import LAG, SHORT, TRAINED

    v = get("C37").verdict(c37({TRAINED: [-0.002, -0.001, -0.003, -0.002], SHORT: [0.05, 0.04, 0.06, 0.05],
                                LAG: [0.3, 0.35, 0.25, 0.3]}))
    assert v.status == "supported"  # a small loss within the half-point margin still "matches"


def test_c37_precise_run_recovers_a_lagging_ema():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the runner runs it (two threads on a busy 2-core machine crawl)
    try:
        config = dict(c37_mod.grid("quick"))["lagging EMA (momentum 0.01, constant lr)"]
        res = c37_mod.run({**config, "mode": "quick"}, 0)
    finally:
        torch.set_num_threads(threads)
    assert res["acc_precise"] > res["acc_ema"] + 0.05

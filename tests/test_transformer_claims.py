"""Setups and rules of C18-C20, C23, C25, C27, C32 (transformer) and C04-C08 (axes) beyond the outcome cases."""

from __future__ import annotations

import math

import pytest
from cases_axes import _c05, _c08
from cases_transformer import LN, _c18, _c32, _stream_recs

from normlab.experiments import get
from normlab.experiments.verdicts import exact_part

LM_CLAIMS = ("C18", "C19", "C23", "C25", "C27", "C32")


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_lm_claims_have_seeds_for_a_t_interval_and_consistent_step_budgets(mode):
    for claim in LM_CLAIMS:
        exp = get(claim)
        assert exp.seeds[mode] >= 4, claim  # 2 seeds give t(0.975, 1) = 12.7
        for name, cfg in exp.grid(mode):
            t = cfg["train"]
            assert t["warmup_steps"] == t["steps"] // 10, (claim, name)  # warm-up follows the overridden steps
            assert t["log_every"] == max(1, t["steps"] // 50), (claim, name)


def test_paired_arms_differ_only_in_what_is_compared():
    for mode in ("quick", "full"):
        grid = dict(get("C18").grid(mode))
        ln, rms = grid["layernorm"], grid["rmsnorm"]
        assert {k: v for k, v in ln["model"].items() if k != "norm"} == \
            {k: v for k, v in rms["model"].items() if k != "norm"}
        assert ln["train"] == rms["train"]
        c27 = dict(get("C27").grid(mode))
        depth = c27["all pre"]["model"]["n_layer"]
        assert c27["mixed pre/post"]["model"]["placement"] == ["pre", "post"] * (depth // 2)
        assert c27["all pre"]["train"] == c27["mixed pre/post"]["train"] == c27["all post"]["train"]


def test_c18_pairs_by_seed_and_uses_only_seeds_both_arms_have():
    recs = _c18(LN, [x + 0.01 for x in LN])
    recs = [r for r in recs if not (r["name"] == "rmsnorm" and r["seed"] == 3)]
    v = get("C18").verdict(recs)
    assert v.tests[0]["n"] == [3] and v.tests[0]["method"] == "paired t"
    assert v.tests[0]["estimate"] == pytest.approx(0.01)
    assert "26.8 vs 26.6" in v.versus_paper


def test_c18_a_diverged_run_counts_with_its_initial_loss():
    recs = _c18(LN, LN)
    for r in recs:
        if r["name"] == "rmsnorm" and r["seed"] == 0:
            r["result"].update(status="diverged", final={}, first_loss=4.6)
    v = get("C18").verdict(recs)
    assert v.numbers["a"][0] == pytest.approx(4.6)
    assert v.status != "supported"


def test_stream_growth_is_paired_and_reports_init():
    recs = _stream_recs({"pre": [3.0, 3.2, 2.9, 3.1], "post": [1.0, 1.05, 1.02, 1.0]}, init=1.5)
    v = get("C23").verdict(recs)
    assert v.tests[0]["method"] == "paired t"
    assert v.numbers["mean_log_growth_init"]["pre"] == pytest.approx(math.log(1.5))
    assert "at init" in v.summary and "Xiong" in v.versus_paper


def test_c32_recovers_the_slope_and_keeps_the_standard_contrast_unjudged():
    v = get("C32").verdict(_c32([0.1, 0.1, 0.1, 0.1], sp_slope=0.5))
    assert v.tests[0]["estimate"] == pytest.approx(0.1)
    assert len(v.tests) == 1  # only muP's slope is judged
    assert v.numbers["standard"]["estimate"] == pytest.approx(0.5 + 0.015)


def test_c20_real_runs_crush_and_clipping_rescues():
    from normlab.experiments.claims.c20_outliers import run as outlier_run

    cfg = {"dim": 256, "outlier": 1e3, "eps": [1e-5, 1.0, 1e3], "clip": [None, 10.0]}
    recs = [{"name": "outlier 1e3", "seed": s, "status": "ok", "result": outlier_run(cfg, s)} for s in range(4)]
    v = get("C20").verdict(recs)
    assert v.status == "supported", v.summary
    k = v.numbers["kept"]
    assert k["rmsnorm eps=1e-05 clip=none"] < 0.05 and k["layernorm eps=1e-05 clip=10"] > 0.8
    assert len(v.tests) == 6  # two norms x (crushed, clipped, eps 1e3)


@pytest.mark.parametrize("claim", ["C04", "C05", "C06", "C08"])
def test_exact_claims_hold_on_real_runs(claim):
    fn = get(claim).run
    recs = [{"name": "exact", "seed": s, "status": "ok", "result": fn({}, s)} for s in range(get(claim).seeds["full"])]
    v = get(claim).verdict(recs)
    assert v.status == "supported", v.summary
    assert v.tests and all(t["n"] == [len(recs)] for t in v.tests)


def test_exact_part_shows_disagreeing_seeds_as_a_range_and_agreeing_ones_as_exact():
    agree = exact_part([0.0, 0.0, 0.0], lambda d: d <= 1e-9, what="diff", rule="r")
    assert (agree["lo"], agree["hi"], agree["status"]) == (0.0, 0.0, "supported")
    assert agree["method"].startswith("exact (deterministic)")
    split = exact_part([0.0, 1e-3], lambda d: d <= 1e-9, what="diff", rule="r")
    assert (split["lo"], split["hi"], split["status"]) == (0.0, 1e-3, "inconclusive")
    none = exact_part([], lambda d: d <= 1e-9, what="diff", rule="r")
    assert none["status"] == "inconclusive" and none["n"] == [0]


def test_exact_verdicts_need_every_part():
    v = get("C05").verdict(_c05([0.0, 0.0], torch_diff=1e-3))  # only torch's GN(1) vs LN fails
    assert v.status == "not supported"
    assert [t["status"] for t in v.tests].count("not supported") == 1
    v = get("C08").verdict(_c08(err=("no message", "no message")))
    assert v.status == "not supported" and v.tests[0]["status"] == "supported"

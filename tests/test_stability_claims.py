"""The setups and rules of C31 (normlab.experiments.claims) beyond the three-outcome cases."""

from __future__ import annotations

import math

import pytest
from cases_common import lm_rec
from cases_stability import c31

from normlab.experiments import get


def test_c31_grid_runs_x1_to_x64_for_both_models_doubling_in_full_and_quadrupling_in_quick():
    for mode, step in (("quick", 4.0), ("full", 2.0)):
        grid = dict(get("C31").grid(mode))
        for prefix, norm in (("pre-LN", "layernorm"), ("no norm", "none")):
            scales = sorted(cfg["model"]["init_scale"] for n, cfg in grid.items() if n.startswith(prefix))
            assert scales == [step ** k for k in range(round(6 / math.log2(step)) + 1)]
            assert {cfg["model"]["norm"] for n, cfg in grid.items() if n.startswith(prefix)} == {norm}
            assert {cfg["model"]["n_layer"] for cfg in grid.values()} == {4}


def test_c31_largest_good_scale_needs_every_smaller_scale_good_against_the_models_own_x1():
    # the un-normalized model's x1 run ends 1 nat worse than pre-LN's: judged against its own x1, it still
    # trains up to x4 (a common reference would fail it at x1)
    recs = c31([64.0] * 6, [4.0] * 6, none_base=3.0)
    for r in recs:  # pre-LN seed 0 fails at x2 but recovers at x4: its largest good scale is x1
        if r["name"] == "pre-LN x2" and r["seed"] == 0:
            r["result"]["final"]["val_loss"] = 2.5
    v = get("C31").verdict(recs)
    good = v.numbers["largest_good_log2"]
    assert good["pre-LN"][0] == 0.0 and good["pre-LN"][1] == 6.0
    assert good["no norm"] == {s: 2.0 for s in range(6)}
    assert v.numbers["largest_stable_log2"]["no norm"] == {s: 2.0 for s in range(6)}
    assert len(v.tests) == 2 and all(t["method"].startswith("sign-test") for t in v.tests)


def test_c31_divergence_counts_a_final_loss_above_the_initial_and_a_non_finite_one():
    from normlab.experiments.claims.c31_init_scale import diverged

    assert not diverged(lm_rec("x", 0, 3.9, first=4.6))
    assert diverged(lm_rec("x", 0, 4.7, first=4.6))  # trained "ok" but ended above where it started
    # started far out (a large init scale) and came down, yet ended above where the model starts at x1
    x1 = lm_rec("x1", 0, 3.3, first=4.6)
    assert not diverged(lm_rec("x32", 0, 9e5, first=1e6)) and diverged(lm_rec("x32", 0, 9e5, first=1e6), x1)
    assert not diverged(lm_rec("x16", 0, 3.4, first=40.0), x1)
    assert diverged(lm_rec("x", 0, float("nan")))
    assert diverged(lm_rec("x", 0, None, status="diverged"))


def test_c31_a_run_that_starts_and_ends_near_a_million_nats_has_diverged():
    recs = c31([64.0] * 8, [16.0] * 8)
    for r in recs:  # the un-normalized net beyond x16: "ok", and below its own start, but untrained
        if r["name"] in ("no norm x32", "no norm x64"):
            r["result"] = lm_rec(r["name"], r["seed"], 9e5, first=1e6)["result"]
    v = get("C31").verdict(recs)
    assert v.numbers["largest_stable_log2"]["no norm"] == {s: 4.0 for s in range(8)}
    assert v.numbers["diverged_by_scale"]["no norm"] == {"x1": 0, "x2": 0, "x4": 0, "x8": 0, "x16": 0, "x32": 8,
                                                         "x64": 8}
    assert v.status == "supported"


def test_c31_a_model_whose_x1_run_diverges_scores_below_the_grid():
    recs = c31([64.0] * 6, [0.5] * 6)  # the un-normalized net diverges already at x1
    v = get("C31").verdict(recs)
    assert v.numbers["largest_good_log2"]["no norm"] == {s: -1.0 for s in range(6)}
    assert v.numbers["largest_stable_log2"]["no norm"] == {s: -1.0 for s in range(6)}
    assert v.status == "supported"
    quick = get("C31").verdict(c31([64.0] * 6, [0.5] * 6, step=4.0))  # one x4 step below x1
    assert quick.numbers["largest_stable_log2"]["no norm"] == {s: -2.0 for s in range(6)}


"""The setups and rules of C31 (normlab.experiments.claims) beyond the three-outcome cases."""

from __future__ import annotations

import pytest
from cases_stability import c31

from normlab.experiments import get


def test_c31_grid_doubles_from_x1_to_x64_for_both_models():
    for mode in ("quick", "full"):
        grid = dict(get("C31").grid(mode))
        for prefix, norm in (("pre-LN", "layernorm"), ("no norm", "none")):
            scales = sorted(cfg["model"]["init_scale"] for n, cfg in grid.items() if n.startswith(prefix))
            assert scales == [2.0 ** k for k in range(7)]
            assert {cfg["model"]["norm"] for n, cfg in grid.items() if n.startswith(prefix)} == {norm}


def test_c31_largest_good_scale_needs_every_smaller_scale_good_and_a_common_bound():
    recs = c31([64.0] * 4, [2.0] * 4)
    for r in recs:  # pre-LN seed 0 fails at x2 but recovers at x4: its largest good scale is x1
        if r["name"] == "pre-LN x2" and r["seed"] == 0:
            r["result"]["final"]["val_loss"] = 4.0
    v = get("C31").verdict(recs)
    assert v.numbers["largest_good_log2"]["pre-LN"][0] == 0.0
    assert v.numbers["largest_good_log2"]["no norm"] == {s: 1.0 for s in range(4)}
    assert v.numbers["bound"] == pytest.approx(2.25)  # the x1 runs' mean (2.0) + 0.25, for both models


def test_c31_a_model_that_fails_at_x1_scores_below_the_grid():
    recs = c31([64.0] * 4, [0.5] * 4)  # the un-normalized net never reaches the bound
    v = get("C31").verdict(recs)
    assert v.numbers["largest_good_log2"]["no norm"] == {s: -1.0 for s in range(4)}
    assert v.status == "supported"

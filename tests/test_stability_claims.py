"""The setups and rules of C26, C31 and C34 (normlab.experiments.claims) beyond the three-outcome cases."""

from __future__ import annotations

import math

import pytest
from cases_common import lm_rec
from cases_stability import FINE, STRADDLE, c26, c31, c34

from normlab.experiments import get


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c26_both_arms_get_z_loss_lr_independent_decay_and_warmup(mode):
    grid = get("C26").grid(mode)
    lrs = sorted({cfg["train"]["lr"] for _, cfg in grid})
    assert lrs[0] == pytest.approx(3e-4) and lrs[-1] == pytest.approx(0.3)  # spans Wortsman et al.'s sweep
    for qk in ("none", "layernorm"):
        arm = [cfg for name, cfg in grid if name.startswith(f"qk-{qk}-")]
        assert len(arm) == len(lrs)
        for cfg in arm:
            t = cfg["train"]
            assert cfg["model"]["z_loss"] == pytest.approx(1e-4)
            assert t["weight_decay"] * t["lr"] == pytest.approx(1e-4)  # AdamW multiplies the decay by the lr
            assert t["warmup_steps"] == t["steps"] // 10


def test_c26_counts_divergences_per_arm_and_clips_them_to_the_initial_loss():
    sens = [0.5, 0.6, 0.55, 0.5], [0.05, 0.06, 0.04, 0.05]
    v = get("C26").verdict(c26(*sens, diverge={("none", 0.3), ("none", 0.03)}))
    assert v.numbers["diverged"] == {"none": [8, 16], "layernorm": [0, 16]}
    assert "no qk-norm 8/16, qk-layernorm 0/16" in v.summary
    assert len(v.tests) == 2  # both halves judged
    # a diverged run counts as its initial loss (10) in the sensitivity, not its final 12
    per_seed = v.numbers["lr sensitivity"]["a"]
    assert all(x == pytest.approx((8.0 + 8.0) / 4) for x in per_seed)


def test_c26_pairs_only_seeds_with_the_whole_sweep_in_both_arms():
    recs = c26([0.5, 0.6, 0.55, 0.5], [0.05, 0.06, 0.04, 0.05])
    recs = [r for r in recs if not (r["seed"] == 3 and r["name"] == "qk-layernorm-lr0.03")]
    v = get("C26").verdict(recs)
    assert [t["n"] for t in v.tests] == [[3], [3]]


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


def test_c34_reports_both_parts_and_compares_best_to_best():
    v = get("C34").verdict(c34(FINE, STRADDLE))
    assert "[DyT vs pre-LN: supported]" in v.summary
    assert "[DeepNorm vs pre-LN at depth: inconclusive]" in v.summary
    assert len(v.tests) == 2
    assert "DyT a2 lr0.01" in v.key_number and "pre-LN lr0.003" in v.key_number  # each arm's best config
    assert all(math.isfinite(t["lo"]) for t in v.tests)


def test_c34_depth_arms_are_deep_and_thin_and_dyt_sees_unit_variance_inputs():
    for mode in ("quick", "full"):
        grid = dict(get("C34").grid(mode))
        deep = [cfg["model"] for n, cfg in grid.items() if " deep " in n]
        assert deep and all(m["n_layer"] >= 12 and m["d_model"] <= 64 for m in deep)
        assert {m["placement"] for m in deep} == {"pre", "deepnorm"}
        dyt = [cfg["model"] for n, cfg in grid.items() if n.startswith("DyT")]
        assert len({m["dyt_alpha0"] for m in dyt}) >= 2 and all(m["embed_scale"] for m in dyt)
        assert all(cfg["model"]["embed_scale"] for n, cfg in grid.items() if n.startswith("pre-LN lr"))

"""C26's setup and rules beyond the three-outcome cases: Wortsman et al.'s seven lrs, the logit bound judged by a
sign test over seeds, the losses where the logits pass it, and the lr sensitivity."""

from __future__ import annotations

import math

import pytest
from cases_stability import C26_LRS, GOOD_LOGITS, SENS_GOOD, c26

from normlab.experiments import get
from normlab.experiments.claims import c26_qk_norm as c26mod


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_both_arms_sweep_seven_lrs_with_z_loss_lr_independent_decay_and_warmup(mode):
    grid = get("C26").grid(mode)
    lrs = sorted({cfg["train"]["lr"] for _, cfg in grid})
    assert lrs == pytest.approx(C26_LRS)  # Wortsman et al.'s grid 3e-4 ... 3e-1
    for qk in ("none", "layernorm"):
        arm = [cfg for name, cfg in grid if name.startswith(f"qk-{qk}-")]
        assert len(arm) == len(lrs)
        for cfg in arm:
            t = cfg["train"]
            assert cfg["model"]["z_loss"] == pytest.approx(1e-4)
            assert t["weight_decay"] * t["lr"] == pytest.approx(1e-4)  # AdamW multiplies the decay by the lr
            assert t["warmup_steps"] == t["steps"] // 10
            assert "attn_logits" in t["instruments"]
    assert get("C26").seeds[mode] >= 6  # the fewest seeds with which a sign test can be supported


def test_counts_divergences_per_arm_and_clips_them_to_the_initial_loss():
    v = get("C26").verdict(c26(*SENS_GOOD, diverge={("none", 0.3), ("none", 0.03)}))
    assert v.numbers["diverged"] == {"none": [12, 42], "layernorm": [0, 42]}
    assert "no qk-norm 12/42, qk-layernorm 0/42" in v.summary
    assert len(v.tests) == 4  # every part judged
    # a diverged run counts as its initial loss (10) in the sensitivity, not its final 12
    per_seed = v.numbers["lr sensitivity"]["a"]
    assert all(x == pytest.approx((8.0 + 8.0) / 7) for x in per_seed)


def test_pairs_only_seeds_with_the_whole_sweep_in_both_arms():
    recs = [r for r in c26(*SENS_GOOD) if not (r["seed"] == 3 and r["name"] == "qk-layernorm-lr0.03")]
    v = get("C26").verdict(recs)
    assert [t["n"] for t in v.tests] == [[5]] * 4
    assert "[logits pass the bound without qk-norm: inconclusive]" in v.summary  # 5 of 5: p = 0.0625


@pytest.mark.parametrize("passes,status", [([True] * 6, "supported"), ([True] * 5, "inconclusive"),
                                           ([True] * 4, "inconclusive"), ([False] * 6, "not supported"),
                                           ([True, False] * 3, "inconclusive"), ([], "inconclusive")])
def test_sign_test_needs_six_of_six_and_four_of_four_is_not_exact(passes, status):
    v = c26mod.sign_test(passes, what="x", rule="r")
    assert v.status == status
    if passes:
        t = v.tests[0]
        assert t["lo"] <= sum(passes) / len(passes) <= t["hi"]


def test_sign_test_interval_is_clopper_pearson():
    t = c26mod.sign_test([True] * 6, what="x", rule="r").tests[0]
    assert t["lo"] == pytest.approx(0.025 ** (1 / 6))  # all k of n: lower bound (alpha/2)^(1/n)
    assert t["hi"] == 1.0


def test_one_qk_norm_seed_past_the_bound_makes_bounded_inconclusive():
    logits = (GOOD_LOGITS[0], [30.0, 25.0, 5e3, 30.0, 27.0, 29.0])
    v = get("C26").verdict(c26(*SENS_GOOD, logits=logits))
    assert "[bounded with qk-norm: inconclusive]" in v.summary
    assert v.numbers["max_attn_logit_layer0"]["layernorm"] == pytest.approx(5e3)


def test_losses_are_compared_only_at_the_lrs_where_the_logits_passed():
    recs = c26(*SENS_GOOD)
    # the largest lr is where the no-qk logits pass; make a smaller lr much worse without qk-norm only
    for r in recs:
        if r["name"] == "qk-none-lr0.001":
            r["result"]["final"]["val_loss"] = 9.0
    v = get("C26").verdict(recs)
    diffs = v.numbers["training worse where they pass"]["values"]
    assert diffs == pytest.approx([(a - b) * 7 for a, b in zip(*SENS_GOOD)])


def test_a_non_finite_logit_counts_as_past_the_bound():
    recs = c26(*SENS_GOOD, logits=([math.inf] * 6, GOOD_LOGITS[1]))
    v = get("C26").verdict(recs)
    assert "[logits pass the bound without qk-norm: supported]" in v.summary

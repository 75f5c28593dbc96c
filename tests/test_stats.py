"""normlab.experiments.stats: calibrated intervals and the three-way rules every verdict uses."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from normlab.experiments.verdicts import combine_verdicts, compare, equivalent, threshold
from normlab.experiments.stats import (bootstrap_ci, difference_ci, judge_direction, judge_equivalence,
                                       judge_threshold, mean_ci)


# ------------------------------------------------------------------ calibration
@pytest.mark.parametrize("n", [3, 4, 5, 6, 8, 10])
@pytest.mark.parametrize("paired", [False, True])
def test_95_percent_interval_covers_the_true_difference_95_percent_of_the_time(n, paired):
    rng = random.Random(1000 + n + 17 * paired)
    true_diff, trials, covered = 0.7, 2000, 0
    for _ in range(trials):
        if paired:  # shared seed effect: a strong positive correlation between the pair
            shared = [rng.gauss(0, 2.0) for _ in range(n)]
            a = [s + true_diff + rng.gauss(0, 0.5) for s in shared]
            b = [s + rng.gauss(0, 0.5) for s in shared]
        else:  # unequal variances and sizes: Welch's case
            a = [true_diff + rng.gauss(0, 1.0) for _ in range(n)]
            b = [rng.gauss(0, 2.0) for _ in range(n + 2)]
        _, lo, hi = difference_ci(a, b, paired=paired)
        covered += lo <= true_diff <= hi
    coverage = covered / trials
    # binomial standard error at 2000 trials is ~0.5%; Welch is slightly conservative at small n
    assert 0.93 <= coverage <= 0.975, coverage


def test_pairing_uses_the_shared_seed_effect():
    a = [10.0, 20.0, 30.0, 40.0]
    b = [9.0, 19.1, 28.9, 39.0]
    _, lo_p, hi_p = difference_ci(a, b, paired=True)
    _, lo_w, hi_w = difference_ci(a, b)
    assert lo_p > 0.5 and hi_p < 1.5  # the seed effect cancels
    assert lo_w < 0 < hi_w  # independent: swamped by the seed-to-seed spread
    with pytest.raises(ValueError, match="as many values in a as in b, got 4 and 3"):
        difference_ci(a, b[:3], paired=True)


def test_known_values_match_the_t_formula():
    # mean 2, sd 1, n 4: half width t(0.975, 3) * 1 / 2 = 3.182 / 2
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 2.0 + 0.0])
    sd = statistics.stdev([1.0, 2.0, 3.0, 2.0])
    assert m == 2.0 and hi - m == pytest.approx(3.1824463 * sd / 2, rel=1e-6)
    d, lo, hi = difference_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])  # b has no variance: df = n_a - 1
    assert d == 2.0 and hi - d == pytest.approx(4.3026527 * 1.0 / math.sqrt(3), rel=1e-6)


def test_too_few_values_give_no_interval_and_deterministic_values_a_zero_width_one():
    assert difference_ci([1.0], [0.0])[1:] == (-math.inf, math.inf)
    assert difference_ci([], [0.0, 1.0])[1:] == (-math.inf, math.inf)
    assert difference_ci([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0, 1.0)
    assert judge_direction(-math.inf, math.inf, expect="greater") == "inconclusive"


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    a, b = [1.0, 1.2, 0.9, 1.1, 1.05], [0.2, 0.3, 0.1, 0.25, 0.2]
    est, lo, hi = bootstrap_ci(lambda x, y: statistics.median(x) - statistics.median(y), a, b)
    assert (est, lo, hi) == bootstrap_ci(lambda x, y: statistics.median(x) - statistics.median(y), a, b)
    assert lo <= est <= hi and lo > 0
    assert bootstrap_ci(statistics.fmean, [1.0])[1:] == (-math.inf, math.inf)


# ------------------------------------------------------------------ the rules
def test_direction_rule_gives_each_outcome():
    assert judge_direction(0.2, 0.5, expect="greater", min_effect=0.1) == "supported"
    assert judge_direction(-0.5, 0.05, expect="greater", min_effect=0.1) == "not supported"  # excludes 0.1
    assert judge_direction(0.05, 0.5, expect="greater", min_effect=0.1) == "inconclusive"
    assert judge_direction(-0.5, -0.2, expect="less") == "supported"
    assert judge_direction(0.2, 0.5, expect="less") == "not supported"
    assert judge_direction(0.0, 0.0, expect="greater") == "not supported"  # exactly no effect
    with pytest.raises(ValueError, match="expect must be 'greater' or 'less', got 'more'"):
        judge_direction(0, 1, expect="more")


def test_equivalence_rule_gives_each_outcome():
    assert judge_equivalence(-0.005, 0.008, tolerance=0.01) == "supported"
    assert judge_equivalence(0.02, 0.05, tolerance=0.01) == "not supported"
    assert judge_equivalence(-0.005, 0.02, tolerance=0.01) == "inconclusive"
    # a wide interval around zero is not evidence of equivalence (the old max(spread, tol) rule said yes)
    assert judge_equivalence(-0.3, 0.3, tolerance=0.01) == "inconclusive"


def test_threshold_rule_gives_each_outcome():
    assert judge_threshold(0.01, 0.1, below=0.2) == "supported"
    assert judge_threshold(0.3, 0.5, below=0.2) == "not supported"
    assert judge_threshold(0.1, 0.3, below=0.2) == "inconclusive"
    assert judge_threshold(0.3, 0.5, above=0.2) == "supported"


def test_verdict_builders_record_their_interval():
    v = compare([2.0, 2.1, 2.05], [1.0, 1.1, 1.0], expect="greater", what="x", label_a="a", label_b="b")
    assert v.status == "supported" and v.tests[0]["lo"] > 0 and "95% CI" in v.summary
    assert compare([1.0, 1.1, 1.0], [2.0, 2.1, 2.05], expect="greater", what="x", label_a="a",
                   label_b="b").status == "not supported"
    assert compare([1.0, 2.0, 1.5], [1.2, 1.3, 1.25], expect="greater", what="x", label_a="a",
                   label_b="b").status == "inconclusive"
    p = compare([1.0, 2.0, 3.0], [0.9, 1.9, 2.9], expect="greater", what="x", label_a="a", label_b="b",
                paired=True)
    assert p.status == "supported" and p.tests[0]["method"] == "paired t"
    e = equivalent([1.0, 1.002, 1.001], [1.001, 1.0, 1.002], what="l", label_a="a", label_b="b", tolerance=0.01)
    assert e.status == "supported"
    assert equivalent([1.0, 1.3], [1.0, 1.01], what="l", label_a="a", label_b="b",
                      tolerance=0.01).status == "inconclusive"
    assert equivalent([1.5, 1.51, 1.5], [1.0, 1.01, 1.0], what="l", label_a="a", label_b="b",
                      tolerance=0.01).status == "not supported"
    t = threshold([0.02, 0.03, 0.025], what="ratio", below=0.2)
    assert t.status == "supported" and t.tests[0]["n"] == [3]
    both = combine_verdicts({"one": v, "two": e})
    assert both.status == "supported" and len(both.tests) == 2
    assert combine_verdicts({"one": v, "two": t, "three": p}).status == "supported"
    assert combine_verdicts({"one": v, "bad": compare([1.0, 1.1, 1.0], [2.0, 2.1, 2.05], expect="greater",
                                                      what="x", label_a="a", label_b="b")}).status == \
        "not supported"


# ------------------------------------------------- grid outcomes, Holm, below the bar, selection seeds
def test_agreeing_seeds_on_a_grid_are_a_sign_test_not_an_exact_result():
    from normlab.experiments.stats import median_ci, sign_test
    from normlab.experiments.verdicts import grid_compare

    assert sign_test([0.5] * 4) == pytest.approx(0.125)
    assert median_ci([0.5] * 4)[1:] == (-math.inf, math.inf)  # no 95% interval from four values
    assert median_ci([0.5, 0.5, 1.0, 0.5, 0.5, 0.5]) == (0.5, 0.5, 1.0)
    four = grid_compare([1.0] * 4, [0.5] * 4, expect="greater", what="log10 lr", label_a="BN", label_b="none")
    assert four.status == "inconclusive" and "exact" not in four.summary
    assert "sign test p = 0.12" in four.summary
    six_up = grid_compare([1.0] * 6, [0.5] * 6, expect="greater", what="log10 lr", label_a="BN", label_b="none")
    assert six_up.status == "supported"
    assert six_up.tests[0]["method"].startswith("sign-test") and six_up.tests[0]["p_against"] == 1.0
    six_down = grid_compare([0.0] * 6, [0.5] * 6, expect="greater", what="log10 lr", label_a="BN", label_b="none")
    assert six_down.status == "not supported"
    mixed = grid_compare([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0.5] * 6, expect="greater", what="x", label_a="a",
                         label_b="b")
    assert mixed.status == "inconclusive"


def test_grid_threshold_goes_each_way():
    from normlab.experiments.verdicts import grid_threshold

    assert grid_threshold([1.0, 1.5, 1.0, 1.0, 2.0, 1.0], what="log2 scale", above=0.5).status == "supported"
    assert grid_threshold([0.0, 0.0, 0.2, 0.0, 0.0, 0.0], what="log2 scale", above=0.5).status == "not supported"
    assert grid_threshold([0.0, 1.0, 0.0, 1.0, 0.0, 1.0], what="log2 scale", above=0.5).status == "inconclusive"
    assert grid_threshold([1.0] * 5, what="log2 scale", above=0.5).status == "inconclusive"  # 5 < 6 values


def test_a_significant_effect_smaller_than_the_claimed_minimum_reads_below_the_bar():
    small = [0.20, 0.22, 0.19, 0.21, 0.20]
    v = compare(small, [0.0] * 5, expect="greater", what="gain", label_a="a", label_b="b", min_effect=0.5,
                paired=True)
    assert v.status == "below the bar" and "below the bar" in v.rule
    assert compare(small, [0.0] * 5, expect="greater", what="gain", label_a="a", label_b="b",
                   min_effect=0.1, paired=True).status == "supported"
    assert compare([-x for x in small], [0.0] * 5, expect="greater", what="gain", label_a="a", label_b="b",
                   min_effect=0.5, paired=True).status == "not supported"  # no effect in the claimed direction
    assert compare([-x for x in small], [0.0] * 5, expect="less", what="gain", label_a="a", label_b="b",
                   min_effect=0.5, paired=True).status == "below the bar"
    assert judge_direction(0.1, 0.3, expect="greater", min_effect=0.0) == "supported"  # no bar: no such reading
    parts = {"big": compare([2.0, 2.1, 1.9], [0.0] * 3, expect="greater", what="x", label_a="a", label_b="b",
                            min_effect=0.5, paired=True),
             "small": v}
    assert combine_verdicts(parts).status == "below the bar"


def _part(mean_value, bound=0.0, n=8, spread=1.0, seed=0):
    rng = random.Random(seed)
    xs = [mean_value + spread * rng.gauss(0, 1) for _ in range(n)]
    return threshold(xs, what="q", above=bound)


def test_holm_keeps_a_strong_refutation_and_drops_a_marginal_one_among_many_parts():
    from normlab.experiments.stats import holm_keeps, p_beyond, Interval

    assert holm_keeps([0.001, 0.02, 0.5], alpha=0.025) == [True, False, False]
    assert holm_keeps([0.001, 0.004, 0.5], alpha=0.025) == [True, True, False]
    supported = {f"p{i}": _part(3.0, seed=i) for i in range(12)}
    assert all(v.status == "supported" for v in supported.values())
    # a marginal refutation: wholly below the bound at 95% (p < 0.025) but not with 13 parts
    marginal = threshold([-0.6, 0.1, -0.5, -0.2, -0.4, 0.0, -0.6, -0.2], what="q", above=0.0)
    p = marginal.tests[0]["p_against"]
    assert marginal.status == "not supported" and 0.025 / 13 < p < 0.025
    judged = combine_verdicts({**supported, "marginal": marginal})
    assert judged.status == "inconclusive" and "Holm" in judged.summary
    assert combine_verdicts({**supported, "marginal": marginal}, holm=False).status == "not supported"
    strong = threshold([-3.0, -3.1, -2.9, -3.05, -2.95, -3.0, -3.02, -2.98], what="q", above=0.0)
    assert combine_verdicts({**supported, "strong": strong}).status == "not supported"
    assert combine_verdicts({**supported, "marginal": marginal, "strong": strong}).status == "not supported"
    # p_beyond agrees with the interval rule: wholly on a side exactly when p < (1 - level) / 2
    rng = random.Random(5)
    for _ in range(200):
        xs = [rng.gauss(rng.uniform(-1, 1), 1) for _ in range(rng.randint(2, 9))]
        v = threshold(xs, what="q", above=0.0)
        iv = Interval(**v.tests[0])
        assert (v.status == "not supported") == (p_beyond(iv, 0.0, "below") < 0.025)
        assert (v.status == "supported") == (p_beyond(iv, 0.0, "above") < 0.025)


def test_zero_spread_is_exact_only_for_deterministic_checks():
    from normlab.experiments.stats import interval
    from normlab.experiments.verdicts import exact

    assert "exact" not in interval("x", [0.5, 0.5, 0.5, 0.5]).text()
    assert "zero width" in interval("x", [0.5, 0.5, 0.5, 0.5]).text()
    from normlab.experiments.stats import Interval

    assert "exact" in Interval(**exact(0.0, what="x", status="supported", rule="r")).text()


def test_a_configuration_chosen_on_selection_seeds_is_judged_on_the_others():
    from normlab.experiments.verdicts import choose_on_seeds, selection_split

    select, judge = selection_split(range(6), 2)
    assert select == [4, 5] and judge == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least one selection seed"):
        selection_split(range(3), 3)
    # lr 1e-2 is better on the selection seeds; on the judging seeds noise favours 3e-3: the choice ignores that
    loss = {("lr 3e-3", s): 1.0 + (-0.3 if s in judge else 0.1) for s in range(6)}
    loss.update({("lr 1e-2", s): 1.0 for s in range(6)})
    loss[("lr 3e-2", 4)] = math.nan  # a diverged run ranks last
    loss[("lr 3e-2", 5)] = 0.1
    records = [{"name": n, "seed": s, "v": v} for (n, s), v in loss.items()]
    assert choose_on_seeds(records, ["lr 3e-3", "lr 1e-2", "lr 3e-2"], lambda r: r["v"], select) == "lr 1e-2"
    assert choose_on_seeds(records, ["lr 3e-3", "lr 1e-2"], lambda r: r["v"], judge) == "lr 3e-3"
    assert choose_on_seeds(records, ["absent"], lambda r: r["v"], select) is None

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

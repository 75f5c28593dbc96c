"""Confidence intervals and the three-way rules that every verdict takes its numbers from.

A claim is judged on an interval, never on a max-min range of seeds:

- a **comparison** ("A is larger than B by at least ``min_effect``") is
  *supported* when the whole confidence interval of the difference lies
  beyond ``min_effect`` in the claimed direction, *not supported* when the
  whole interval lies short of it (the data exclude an effect that large),
  and *inconclusive* when the interval straddles it;
- an effect in the claimed direction whose interval lies wholly short of
  the claimed minimum (but excludes 0) is *below the bar*: a finding, not a
  refutation of any effect;
- a claim refuted on any one of many parts is corrected for their number
  (Holm's step-down on each part's one-sided p, :func:`holm_keeps`); a claim
  that needs all its parts needs no correction;
- an outcome read off a grid (the largest lr that trains) ties across
  seeds: it is judged by the sign-test interval of the median
  (:func:`median_ci`, :func:`sign_test`), never as "exact" because seeds
  agree (four agreeing seeds: p = 0.125); "exact" is for deterministic
  checks only;
- an **equivalence** ("A matches B within ``tolerance``") is *supported* only
  when the whole interval lies inside ``[-tolerance, +tolerance]``, *not
  supported* when it lies wholly outside, *inconclusive* when it straddles a
  bound.  (The same two-sided interval as comparisons: stricter than the
  90% interval of the classic two one-sided tests.)

Intervals:

- independent groups: Welch's t interval of ``mean(a) - mean(b)``
  (unequal variances, Welch-Satterthwaite degrees of freedom);
- paired (runs that share seed and data order): the one-sample t interval of
  the per-seed differences;
- a statistic that is not a mean (a ratio of medians, the largest trainable
  scale, ...): a percentile bootstrap (:func:`bootstrap_ci`) with a fixed
  generator seed so that a verdict is reproducible.

With fewer than two values in a group (two pairs when paired) there is no
interval: it is reported as ``(-inf, inf)`` and every rule says
inconclusive.  When every value is identical (a deterministic
measurement) the interval has zero width.

Example:
    >>> d, lo, hi = difference_ci([2.0, 2.1, 2.2], [1.0, 1.1, 1.0])
    >>> round(d, 3), lo > 0
    (1.067, True)
    >>> judge_direction(lo, hi, expect="greater")
    'supported'
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

__all__ = ["LEVEL", "Interval", "t_quantile", "mean_ci", "difference_ci", "bootstrap_ci", "interval",
           "sign_test", "median_ci", "p_beyond", "holm_keeps", "judge_direction", "judge_equivalence",
           "judge_threshold", "combine", "REFUTED"]

LEVEL = 0.95
_NO_INTERVAL = (-math.inf, math.inf)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def _clean(xs) -> list[float]:
    return [float(x) for x in xs]


def mean_ci(xs: Sequence[float], *, level: float = LEVEL) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the one-sample t interval of the mean of ``xs``."""
    xs = _clean(xs)
    if not xs:
        return math.nan, *_NO_INTERVAL
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, *_NO_INTERVAL
    sd = statistics.stdev(xs)
    if not math.isfinite(sd):
        return m, *_NO_INTERVAL
    half = t_quantile(0.5 + level / 2, len(xs) - 1) * sd / math.sqrt(len(xs))
    return m, m - half, m + half


def difference_ci(a: Sequence[float], b: Sequence[float], *, paired: bool = False,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """``(diff, lo, hi)``: ``mean(a) - mean(b)`` with its ``level`` confidence interval.

    Args:
        a, b: per-run values of the two groups.
        paired: the i-th values of ``a`` and ``b`` share a seed and data
            order: the interval is the t interval of ``a[i] - b[i]``
            (lengths must match).  Otherwise Welch's t interval.
        level: confidence level, e.g. 0.95.
    """
    a, b = _clean(a), _clean(b)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if paired:
        if len(a) != len(b):
            raise ValueError(f"a paired interval needs as many values in a as in b, got {len(a)} and {len(b)}")
        return mean_ci([x - y for x, y in zip(a, b)], level=level)
    if not a or not b:
        return math.nan, *_NO_INTERVAL
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return diff, *_NO_INTERVAL
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = va + vb
    if not math.isfinite(se2):
        return diff, *_NO_INTERVAL
    if se2 == 0:
        return diff, diff, diff
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * math.sqrt(se2)
    return diff, diff - half, diff + half


def bootstrap_ci(statistic: Callable[..., float], *samples: Sequence[float], paired: bool = False,
                 level: float = LEVEL, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """``(estimate, lo, hi)``: percentile bootstrap interval of ``statistic(*samples)``.

    Each sample is resampled with replacement on its own (``paired=False``),
    or all with the same indices (``paired=True``: the i-th values share a
    seed).  ``statistic`` takes the samples as lists and returns a float,
    e.g. ``lambda a, b: median(a) - median(b)``.  The generator is seeded, so
    the interval is reproducible.  Used where a statistic is not a mean; with
    few seeds a percentile bootstrap is narrower than it should be, so the
    rules that use it say so.
    """
    samples = [_clean(s) for s in samples]
    est = float(statistic(*samples))
    if any(len(s) < 2 for s in samples):
        return est, *_NO_INTERVAL
    if paired and len({len(s) for s in samples}) != 1:
        raise ValueError(f"paired samples must have equal lengths, got {[len(s) for s in samples]}")
    rng = random.Random(seed)
    stats = []
    for _ in range(n_boot):
        if paired:
            idx = [rng.randrange(len(samples[0])) for _ in samples[0]]
            draw = [[s[i] for i in idx] for s in samples]
        else:
            draw = [[s[rng.randrange(len(s))] for _ in s] for s in samples]
        v = float(statistic(*draw))
        if math.isfinite(v):
            stats.append(v)
    if len(stats) < n_boot // 2:
        return est, *_NO_INTERVAL
    stats.sort()
    alpha = (1 - level) / 2
    lo = stats[min(len(stats) - 1, int(math.floor(alpha * len(stats))))]
    hi = stats[min(len(stats) - 1, int(math.ceil((1 - alpha) * len(stats))) - 1)]
    return est, lo, hi


@dataclass
class Interval:
    """One judged quantity: its estimate, interval, level, sample sizes and how the interval was made."""

    what: str
    estimate: float
    lo: float
    hi: float
    level: float
    n: list[int]
    method: str
    status: str = ""
    rule: str = ""
    se: float = math.nan  # standard error of a t interval (nan for other methods)
    df: float = math.nan  # its degrees of freedom
    p_against: float = math.nan  # one-sided p of the refuting side (set by the rule that judged it; see p_beyond)

    def text(self, digits: int = 3) -> str:
        """``"0.12 [0.05, 0.19] (95% CI, Welch, n=5+5)"``."""
        f = (lambda x: f"{x:.{digits}g}")
        if not math.isfinite(self.lo) or not math.isfinite(self.hi):
            ci = "no interval"
        elif self.lo == self.hi:
            ci = "exact" if self.method.startswith("exact") else "zero width"
        else:
            ci = f"[{f(self.lo)}, {f(self.hi)}]"
        n = "+".join(str(k) for k in self.n)
        return f"{f(self.estimate)} {ci} ({self.level:.0%} CI, {self.method}, n={n})"

    def to_dict(self) -> dict:
        return asdict(self)


def interval(what: str, a: Sequence[float], b: Sequence[float] | None = None, *, paired: bool = False,
             level: float = LEVEL) -> Interval:
    """An :class:`Interval` of ``mean(a) - mean(b)`` (or of ``mean(a)`` when ``b`` is None)."""
    a = _clean(a)
    if b is None:
        est, lo, hi = mean_ci(a, level=level)
        return Interval(what, est, lo, hi, level, [len(a)], "t", **_se_df(est, lo, hi, level, len(a) - 1))
    b = _clean(b)
    est, lo, hi = difference_ci(a, b, paired=paired, level=level)
    n = [len(a)] if paired else [len(a), len(b)]
    if paired:
        df = len(a) - 1.0
    elif len(a) > 1 and len(b) > 1:
        va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else math.inf
    else:
        df = math.nan
    return Interval(what, est, lo, hi, level, n, "paired t" if paired else "Welch t", **_se_df(est, lo, hi, level, df))


def _se_df(est: float, lo: float, hi: float, level: float, df: float) -> dict:
    """The standard error behind a t interval (its half width over the t quantile) and its degrees of freedom."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or not df >= 1:
        return {}
    if lo == hi:
        return {"se": 0.0, "df": float(df)}
    return {"se": (hi - lo) / 2 / t_quantile(0.5 + level / 2, df), "df": float(df)}


def sign_test(diffs: Sequence[float]) -> float:
    """Two-sided exact sign test of "the median of ``diffs`` is 0" (zeros dropped): its p-value.

    Made for outcomes read off a grid (the largest lr that trains, the
    largest init scale), where seeds often agree exactly: four seeds that all
    agree give p = 0.125, not an "exact" result.

        >>> sign_test([1.0, 1.0, 1.0, 1.0])
        0.125
    """
    from scipy.stats import binomtest

    nonzero = [d for d in _clean(diffs) if d != 0]
    if not nonzero:
        return 1.0
    return float(binomtest(sum(d > 0 for d in nonzero), len(nonzero), 0.5).pvalue)


def median_ci(xs: Sequence[float], *, level: float = LEVEL) -> tuple[float, float, float]:
    """``(median, lo, hi)``: the distribution-free interval of the median from order statistics (the sign test
    inverted): ``[x_(k), x_(n+1-k)]`` with the largest ``k`` whose coverage is at least ``level``.

    No assumption about the values' distribution, so it suits values on a grid.  Below six values there is
    no 95% interval (the whole line: every rule says inconclusive).

        >>> median_ci([0.5, 0.5, 0.5, 0.5])[1:]
        (-inf, inf)
        >>> median_ci([0.5, 0.5, 1.0, 0.5, 0.5, 0.5])
        (0.5, 0.5, 1.0)
    """
    from scipy.stats import binom

    xs = sorted(_clean(xs))
    n = len(xs)
    if not n:
        return math.nan, *_NO_INTERVAL
    med = statistics.median(xs)
    k = 0
    for j in range(1, n // 2 + 1):
        if binom.cdf(j - 1, n, 0.5) <= (1 - level) / 2:
            k = j
    if k == 0:
        return med, *_NO_INTERVAL
    return med, xs[k - 1], xs[n - k]


def p_beyond(iv: Interval, bound: float, side: str) -> float:
    """One-sided p-value that ``iv``'s quantity lies on ``side`` ("below" or "above") of ``bound``.

    From the t distribution for t intervals (``iv.se``, ``iv.df``); nan for
    intervals of other methods.  A rule's interval lies wholly on that side
    of the bound exactly when this p is below ``(1 - level) / 2``.
    """
    if side not in ("below", "above"):
        raise ValueError(f"side must be 'below' or 'above', got {side!r}")
    if not (math.isfinite(iv.se) and iv.df >= 1 and math.isfinite(iv.estimate)):
        return math.nan
    if iv.se == 0:
        beyond = iv.estimate < bound if side == "below" else iv.estimate > bound
        return 0.0 if beyond else 1.0
    from scipy.stats import t

    z = (iv.estimate - bound) / iv.se
    return float(t.cdf(z, iv.df) if side == "below" else t.sf(z, iv.df))


def holm_keeps(p_values: Sequence[float], *, alpha: float) -> list[bool]:
    """Holm's step-down procedure: which of ``p_values`` stay significant at family-wise level ``alpha``.

    Sorted ascending, the j-th smallest (j = 0, 1, ...) is kept while
    ``p <= alpha / (m - j)``; the first that fails stops it.  A nan p (a
    test without one) counts as 1.

        >>> holm_keeps([0.001, 0.02, 0.5], alpha=0.025)
        [True, False, False]
    """
    ps = [p if math.isfinite(p) else 1.0 for p in p_values]
    m = len(ps)
    keep = [False] * m
    for j, i in enumerate(sorted(range(m), key=lambda i: ps[i])):
        if ps[i] > alpha / (m - j):
            break
        keep[i] = True
    return keep


def judge_direction(lo: float, hi: float, *, expect: str, min_effect: float = 0.0) -> str:
    """Rule for "the difference is > ``min_effect``" (``expect="greater"``) or "< -``min_effect``".

    supported: the whole interval beyond ``min_effect`` in the claimed
    direction; below the bar: the whole interval between 0 and
    ``min_effect`` (an effect in the claimed direction, smaller than the
    claimed minimum); not supported: the whole interval short of it
    otherwise; else inconclusive.
    """
    if expect not in ("greater", "less"):
        raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")
    if min_effect < 0:
        raise ValueError(f"min_effect is a size and must be >= 0, got {min_effect}")
    if expect == "less":
        lo, hi = -hi, -lo
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if lo > min_effect:
        return "supported"
    if hi < min_effect or (lo == hi and hi <= min_effect):  # a zero-width interval at the bound: no effect
        return "below the bar" if min_effect > 0 and lo > 0 else "not supported"
    return "inconclusive"


def judge_equivalence(lo: float, hi: float, *, tolerance: float) -> str:
    """Three-way rule for "the difference is within +-``tolerance``"."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if -tolerance <= lo and hi <= tolerance:
        return "supported"
    if lo > tolerance or hi < -tolerance:
        return "not supported"
    return "inconclusive"


def judge_threshold(lo: float, hi: float, *, below: float | None = None, above: float | None = None) -> str:
    """Three-way rule for "the quantity is below ``below``" (or above ``above``), one bound given."""
    if (below is None) == (above is None):
        raise ValueError("give exactly one of below= or above=")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "inconclusive"
    if below is not None:
        return "supported" if hi < below else "not supported" if lo > below else "inconclusive"
    return "supported" if lo > above else "not supported" if hi < above else "inconclusive"


REFUTED = ("not supported", "below the bar")  # the statuses that go against a claim


def combine(statuses: Sequence[str]) -> str:
    """A claim with several parts: supported if all are, not supported if any is not, below the bar if none is
    not supported and one is below the bar, else inconclusive."""
    statuses = list(statuses)
    if not statuses:
        return "inconclusive"
    if any(s == "not supported" for s in statuses):
        return "not supported"
    if any(s == "below the bar" for s in statuses):
        return "below the bar"
    if all(s == "supported" for s in statuses):
        return "supported"
    return "inconclusive"

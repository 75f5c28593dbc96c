"""Confidence intervals and the three-way rules that every verdict takes its numbers from.

A claim is judged on an interval, never on a max-min range of seeds:

- a **comparison** ("A is larger than B by at least ``min_effect``") is
  *supported* when the whole confidence interval of the difference lies
  beyond ``min_effect`` in the claimed direction, *not supported* when the
  whole interval lies short of it (the data exclude an effect that large),
  and *inconclusive* when the interval straddles it;
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
           "judge_direction", "judge_equivalence", "judge_threshold", "combine"]

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

    def text(self, digits: int = 3) -> str:
        """``"0.12 [0.05, 0.19] (95% CI, Welch, n=5+5)"``."""
        f = (lambda x: f"{x:.{digits}g}")
        if not math.isfinite(self.lo) or not math.isfinite(self.hi):
            ci = "no interval"
        elif self.lo == self.hi:
            ci = "exact"
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
        return Interval(what, est, lo, hi, level, [len(a)], "t")
    b = _clean(b)
    est, lo, hi = difference_ci(a, b, paired=paired, level=level)
    n = [len(a)] if paired else [len(a), len(b)]
    return Interval(what, est, lo, hi, level, n, "paired t" if paired else "Welch t")


def judge_direction(lo: float, hi: float, *, expect: str, min_effect: float = 0.0) -> str:
    """Three-way rule for "the difference is > ``min_effect``" (``expect="greater"``) or "< -``min_effect``".

    supported: the whole interval beyond ``min_effect`` in the claimed
    direction; not supported: the whole interval short of it; otherwise
    inconclusive.
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
        return "not supported"
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


def combine(statuses: Sequence[str]) -> str:
    """A claim with several parts: supported if all are, not supported if any is not, else inconclusive."""
    statuses = list(statuses)
    if not statuses:
        return "inconclusive"
    if any(s == "not supported" for s in statuses):
        return "not supported"
    if all(s == "supported" for s in statuses):
        return "supported"
    return "inconclusive"

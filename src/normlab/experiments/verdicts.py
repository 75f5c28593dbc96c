"""Verdict helpers, once for every claim: from per-run values to a :class:`~normlab.experiments.spec.Verdict`.

The rules take their intervals from :mod:`normlab.experiments.stats`:
comparisons (:func:`compare`), equivalences (:func:`equivalent`,
:func:`within`), fixed bounds (:func:`threshold`), deterministic checks
(:func:`exact`), and claims made of several parts (:func:`combine_verdicts`:
all must hold; :func:`any_of`: one must).  Record helpers (:func:`by_name`,
:func:`paired_by_seed`) and number formatting (:func:`fmt`, :func:`ci_text`)
live here too, so a claim module imports its judging tools from one place.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from .spec import Verdict
from .stats import (LEVEL, REFUTED, Interval, combine, holm_keeps, interval, judge_direction, judge_equivalence,
                    judge_threshold, median_ci, p_beyond, sign_test)


__all__ = ["compare", "equivalent", "within", "threshold", "exact", "combine_verdicts", "any_of", "grid_compare",
           "grid_threshold", "selection_split", "choose_on_seeds", "paired_by_seed",
           "by_name", "spread", "mean", "fmt", "ci_text", "seed_agreement", "exact_part", "exact_verdict",
           "exactness"]


def by_name(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by run name (the config's label), in record order; a missing name reads as []."""
    groups: defaultdict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["name"]].append(r)
    return groups


_V = TypeVar("_V")


def paired_by_seed(group_a: list[dict], group_b: list[dict], value: Callable[[dict], _V]
                   ) -> tuple[list[_V], list[_V]]:
    """``value`` of the records of the seeds both groups have, aligned by seed (for a paired interval)."""
    a = {r["seed"]: value(r) for r in group_a}
    b = {r["seed"]: value(r) for r in group_b}
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def mean(xs) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else float("nan")


def spread(xs) -> float:
    """Seed-to-seed range of a group: max - min (0 for a single value); descriptive only, never a rule."""
    xs = list(xs)
    return max(xs) - min(xs) if len(xs) > 1 else 0.0


def fmt(x: float, digits: int = 3) -> str:
    """``x`` to ``digits`` significant digits; a zero (or a number that rounds to one) never prints as "-0"."""
    if not isinstance(x, (int, float)):
        return str(x)
    s = f"{x:.{digits}g}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def compare(a, b, *, expect: str, what: str, label_a: str, label_b: str, min_effect: float = 0.0,
            paired: bool = False, level: float = LEVEL) -> Verdict:
    """Judge "``a`` is greater (or less) than ``b``" by the confidence interval of ``mean(a) - mean(b)``.

    Supported when the whole interval lies beyond ``min_effect`` in the
    expected direction, not supported when it lies wholly short of it,
    inconclusive when it straddles (see :mod:`normlab.experiments.stats`).
    ``paired=True`` when ``a[i]`` and ``b[i]`` share a seed and data order.
    """
    a, b = list(a), list(b)
    iv = interval(f"{what}: {label_a} - {label_b}", a, b, paired=paired, level=level)
    iv.status = judge_direction(iv.lo, iv.hi, expect=expect, min_effect=min_effect)
    iv.p_against = p_beyond(iv, min_effect if expect == "greater" else -min_effect,
                            "below" if expect == "greater" else "above")
    iv.rule = _direction_rule(f"the {level:.0%} CI of {label_a} - {label_b}", label_a, label_b, expect, min_effect)
    ma, mb = mean(a), mean(b)
    summary = (f"{what}: {label_a} {fmt(ma)} (n={len(a)}) vs {label_b} {fmt(mb)} (n={len(b)}); "
               f"difference {iv.text()}")
    return Verdict(iv.status, summary, iv.rule, {"a": a, "b": b, "mean_a": ma, "mean_b": mb,
                                                 "effect": iv.estimate, "ci": [iv.lo, iv.hi]},
                   key_number=f"{fmt(ma)} vs {fmt(mb)}, diff {_short(iv)}", tests=[iv.to_dict()])


def _direction_rule(ci: str, label_a: str, label_b: str, expect: str, min_effect: float) -> str:
    sign = ">" if expect == "greater" else "<"
    bound = fmt(min_effect if expect == "greater" else -min_effect)
    if min_effect > 0:
        refuted = (f"below the bar if it lies wholly between 0 and {bound} (an effect, smaller than claimed); not "
                   f"supported if it lies wholly short of {bound} and reaches 0")
    else:
        refuted = f"not supported if it lies wholly short of {bound}"
    return f"supported if {ci} lies wholly beyond {bound} ({label_a} {sign} {label_b}); {refuted}; otherwise inconclusive"


def equivalent(a, b, *, what: str, label_a: str, label_b: str, tolerance: float, paired: bool = False,
               level: float = LEVEL) -> Verdict:
    """Judge "``a`` matches ``b`` within ``tolerance``" as an equivalence test on the interval.

    Supported only when the whole ``level`` CI of ``mean(a) - mean(b)`` lies
    inside ``[-tolerance, tolerance]``; not supported when it lies wholly
    outside; inconclusive when it straddles a bound (or a group is empty).
    """
    a, b = list(a), list(b)
    iv = interval(f"{what}: {label_a} - {label_b}", a, b, paired=paired, level=level)
    iv.status = judge_equivalence(iv.lo, iv.hi, tolerance=tolerance)
    iv.p_against = _p_outside(iv, tolerance)
    iv.rule = (f"supported if the {level:.0%} CI of {label_a} - {label_b} lies inside +-{fmt(tolerance)}; not "
               "supported if it lies wholly outside; otherwise inconclusive")
    summary = (f"{what}: {label_a} {fmt(mean(a))} (n={len(a)}) vs {label_b} {fmt(mean(b))} (n={len(b)}); "
               f"difference {iv.text()}, tolerance +-{fmt(tolerance)}")
    return Verdict(iv.status, summary, iv.rule, {"a": a, "b": b, "difference": iv.estimate,
                                                 "ci": [iv.lo, iv.hi], "tolerance": tolerance},
                   key_number=f"diff {_short(iv)} (tolerance +-{fmt(tolerance)})", tests=[iv.to_dict()])


def threshold(xs, *, what: str, below: float | None = None, above: float | None = None,
              level: float = LEVEL) -> Verdict:
    """Judge "the mean of ``xs`` is below (or above) a fixed bound" by its one-sample t interval."""
    xs = list(xs)
    iv = interval(what, xs, level=level)
    iv.status = judge_threshold(iv.lo, iv.hi, below=below, above=above)
    side, bound = ("below", below) if below is not None else ("above", above)
    iv.p_against = p_beyond(iv, bound, "above" if side == "below" else "below")
    iv.rule = (f"supported if the {level:.0%} CI of the mean lies wholly {side} {fmt(bound)}; not supported if "
               "it lies wholly on the other side; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}", iv.rule, {"values": xs, "ci": [iv.lo, iv.hi]},
                   key_number=_short(iv), tests=[iv.to_dict()])


def exact(value: float, *, what: str, status: str, rule: str, n: int = 1) -> dict:
    """A deterministic measurement as a zero-width interval (for claims checked exactly, not by seeds)."""
    iv = Interval(what, float(value), float(value), float(value), 1.0, [n], "exact (deterministic)", status, rule,
                  p_against=0.0 if status in REFUTED else 1.0)
    return iv.to_dict()


def combine_verdicts(parts: dict[str, Verdict], *, key_number: str | None = None, holm: bool = True,
                     level: float = LEVEL) -> Verdict:
    """One verdict for a claim made of several judged parts (each part's tests are kept).

    Supported if every part is (each at ``level``: a claim that needs all
    its parts needs no correction), not supported if any part is not (below
    the bar if a part is below the bar and none is not supported), otherwise
    inconclusive.  Refuting on any one of many parts is corrected for the
    number of parts (``holm=True``, see :func:`holm_parts`).
    """
    if holm:
        parts = holm_parts(parts, level=level)
    status = combine([v.status for v in parts.values()])
    summary = "; ".join(f"[{name}: {v.status}] {v.summary}" for name, v in parts.items())
    rule = "every part must be supported (any part not supported: not supported): " + " | ".join(
        f"{name}: {v.rule}" for name, v in parts.items())
    tests = [t for v in parts.values() for t in v.tests]
    numbers = {name: v.numbers for name, v in parts.items()}
    key = key_number if key_number is not None else "; ".join(f"{n}: {v.key_number}" for n, v in parts.items())
    return Verdict(status, summary, rule, numbers, key_number=key, tests=tests)


def holm_parts(parts: dict[str, Verdict], *, level: float = LEVEL) -> dict[str, Verdict]:
    """``parts`` with Holm's correction applied to their refutations (not supported, below the bar).

    Each part that rests on one judged interval with a p-value (``p_against``:
    t intervals and exact checks) enters the family; a refutation whose p is
    not significant at family-wise ``(1 - level) / 2`` (one side of the
    two-sided interval) by Holm's step-down over the m such parts becomes
    inconclusive, and says so.  Parts made of several intervals (combined
    already, with their own correction) and intervals without a p keep their
    status.
    """
    family = [n for n, v in parts.items() if len(v.tests) == 1 and math.isfinite(v.tests[0].get("p_against", math.nan))]
    if len(family) < 2:
        return parts
    keeps = dict(zip(family, holm_keeps([parts[n].tests[0]["p_against"] for n in family], alpha=(1 - level) / 2)))
    out = {}
    for name, v in parts.items():
        if name in keeps and v.status in REFUTED and not keeps[name]:
            p = v.tests[0]["p_against"]
            note = (f"{v.status} on its own (one-sided p = {fmt(p, 2)}), not significant after Holm's correction "
                    f"over {len(family)} parts")
            test = dict(v.tests[0], status="inconclusive", rule=v.tests[0]["rule"] + f"; {note}")
            v = dataclasses.replace(v, status="inconclusive", summary=f"{v.summary} ({note})", tests=[test])
        out[name] = v
    return out


def grid_compare(a, b, *, expect: str, what: str, label_a: str, label_b: str, min_effect: float = 0.0,
                 level: float = LEVEL) -> Verdict:
    """Judge "``a`` is greater (or less) than ``b``" for paired outcomes read off a grid (the largest lr that
    trains, the largest init scale: values that often tie), by the sign-test interval of the median
    per-seed difference (:func:`~normlab.experiments.stats.median_ci`) and the sign test's p.

    Seeds that agree exactly are not an exact result: below six seeds there
    is no 95% interval and the rule says inconclusive (four agreeing seeds:
    sign test p = 0.125).
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError(f"grid_compare pairs values by seed: got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    est, lo, hi = median_ci(diffs, level=level)
    iv = Interval(f"{what}: {label_a} - {label_b} (median of per-seed differences)", est, lo, hi, level,
                  [len(diffs)], "sign-test interval of the median (order statistics)")
    iv.status = judge_direction(lo, hi, expect=expect, min_effect=min_effect)
    bound = min_effect if expect == "greater" else -min_effect
    shifted = [d - bound for d in diffs]
    iv.p_against = _one_sided_sign_p(shifted, "below" if expect == "greater" else "above")
    iv.rule = _direction_rule(f"the {level:.0%} sign-test interval of the median {label_a} - {label_b}", label_a,
                              label_b, expect, min_effect)
    p = sign_test(diffs)
    summary = (f"{what}: {label_a} {fmt(mean(a))} vs {label_b} {fmt(mean(b))} (means of n={len(a)}); median "
               f"difference {iv.text()}; sign test p = {fmt(p, 2)}")
    return Verdict(iv.status, summary, iv.rule, {"a": a, "b": b, "differences": diffs, "ci": [lo, hi],
                                                 "sign_test_p": p},
                   key_number=f"median diff {_short(iv)}, sign test p = {fmt(p, 2)}", tests=[iv.to_dict()])


def grid_threshold(xs, *, what: str, below: float | None = None, above: float | None = None,
                   level: float = LEVEL) -> Verdict:
    """Judge "a grid outcome lies below (or above) a fixed bound" by the sign-test interval of its median."""
    xs = [float(x) for x in xs]
    est, lo, hi = median_ci(xs, level=level)
    iv = Interval(f"{what} (median)", est, lo, hi, level, [len(xs)],
                  "sign-test interval of the median (order statistics)")
    iv.status = judge_threshold(lo, hi, below=below, above=above)
    side, bound = ("below", below) if below is not None else ("above", above)
    iv.p_against = _one_sided_sign_p([x - bound for x in xs], "above" if side == "below" else "below")
    iv.rule = (f"supported if the {level:.0%} sign-test interval of the median lies wholly {side} {fmt(bound)}; "
               "not supported if it lies wholly on the other side; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}", iv.rule, {"values": xs, "ci": [lo, hi]},
                   key_number=f"median {_short(iv)}", tests=[iv.to_dict()])


def _one_sided_sign_p(diffs: list[float], side: str) -> float:
    """One-sided exact sign test p that the median of ``diffs`` lies ``side`` ("below"/"above") of 0."""
    from scipy.stats import binomtest

    nonzero = [d for d in diffs if d != 0]
    if not nonzero:
        return 1.0
    hits = sum(d < 0 for d in nonzero) if side == "below" else sum(d > 0 for d in nonzero)
    return float(binomtest(hits, len(nonzero), 0.5, alternative="greater").pvalue)


def _p_outside(iv: Interval, tolerance: float) -> float:
    """One-sided p that the quantity lies outside +-``tolerance`` (on the side its estimate is)."""
    return p_beyond(iv, tolerance, "above") if iv.estimate >= 0 else p_beyond(iv, -tolerance, "below")


def selection_split(seeds, n_select: int) -> tuple[list[int], list[int]]:
    """Split ``seeds`` into (selection seeds, judging seeds): the last ``n_select`` select, the others judge.

    A configuration (best lr, best alpha0) chosen on the seeds that judge it
    is chosen for its noise as well as its merit: the more noise, the better
    the chosen arm looks.  Choosing on other seeds removes that bias.
    """
    seeds = sorted(set(seeds))
    if not 0 < n_select < len(seeds):
        raise ValueError(f"need at least one selection seed and one judging seed: {n_select} of {len(seeds)} seeds")
    return seeds[-n_select:], seeds[:-n_select]


def choose_on_seeds(records, names, score: Callable[[dict], float], seeds, *, lower_is_better: bool = True
                    ) -> str | None:
    """The name among ``names`` whose mean ``score`` over the records of ``seeds`` is best (None without any).

    Pass the selection seeds of :func:`selection_split`; judge the chosen
    configuration on the other seeds.  A non-finite score (a diverged run)
    ranks last.
    """
    seeds = set(seeds)
    best, best_value = None, math.inf
    for name in names:
        vals = [score(r) for r in records if r["name"] == name and r["seed"] in seeds]
        if not vals:
            continue
        m = statistics.fmean(v if math.isfinite(v) else math.inf for v in vals) if lower_is_better else \
            -statistics.fmean(v if math.isfinite(v) else -math.inf for v in vals)
        if best is None or m < best_value:
            best, best_value = name, m
    return best


def _short(iv: Interval) -> str:
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{fmt(iv.estimate)} (no CI)"
    return f"{fmt(iv.estimate)} [{fmt(iv.lo)}, {fmt(iv.hi)}]"


def within(xs, *, what: str, tolerance: float) -> Verdict:
    """Judge "the mean of ``xs`` is 0 within +-``tolerance``" by its one-sample t interval (an equivalence test)."""
    xs = list(xs)
    iv = interval(what, xs)
    iv.status = judge_equivalence(iv.lo, iv.hi, tolerance=tolerance)
    iv.rule = (f"supported if the {iv.level:.0%} CI of the mean lies inside +-{fmt(tolerance)}; not supported if "
               "it lies wholly outside; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}, tolerance +-{fmt(tolerance)}", iv.rule,
                   {"values": xs, "ci": [iv.lo, iv.hi]}, key_number=fmt(iv.estimate), tests=[iv.to_dict()])


def any_of(parts: dict[str, Verdict]) -> Verdict:
    """One verdict for "at least one of these holds": supported if any part is, not supported if all are not."""
    statuses = [v.status for v in parts.values()]
    status = ("supported" if "supported" in statuses else
              "not supported" if statuses and all(s == "not supported" for s in statuses) else
              "below the bar" if statuses and all(s in REFUTED for s in statuses) else "inconclusive")
    return Verdict(status, "; ".join(f"[{n}: {v.status}] {v.summary}" for n, v in parts.items()),
                   "at least one part must be supported (all not supported: not supported): "
                   + " | ".join(f"{n}: {v.rule}" for n, v in parts.items()),
                   {n: v.numbers for n, v in parts.items()}, tests=[t for v in parts.values() for t in v.tests])


def ci_text(v: Verdict, k: int = 0) -> str:
    """The ``k``-th judged interval of ``v`` as "estimate [lo, hi]" ("estimate (no interval)" without one)."""
    t = v.tests[k]
    if not (math.isfinite(t["lo"]) and math.isfinite(t["hi"])):
        return f"{fmt(t['estimate'])} (no interval)"
    return f"{fmt(t['estimate'])} [{fmt(t['lo'])}, {fmt(t['hi'])}]"


def seed_agreement(passes: list[bool]) -> str:
    """A deterministic check run on several random inputs: supported if every seed passes, not supported if
    every seed fails, inconclusive if they disagree (or there are none)."""
    if passes and all(passes):
        return "supported"
    if passes and not any(passes):
        return "not supported"
    return "inconclusive"


def exact_part(values: list[float], passes, *, what: str, rule: str, worst=max) -> dict:
    """One exactly-checked quantity over seeds, as an interval dict for ``Verdict.tests``.

    ``passes(value) -> bool`` is the check of one seed.  Zero width at the
    worst seed's value when every seed agrees; when they disagree the interval
    shows the seeds' lowest and highest values (and says so), and the status
    is inconclusive.  ``worst`` picks the value reported (``max`` for an
    error, ``min`` for a difference that must be large).
    """
    values = [float(v) for v in values]
    status = seed_agreement([bool(passes(v)) for v in values])
    rule = (f"{rule}; checked exactly on each seed's input: supported if every seed passes, not supported if "
            "every seed fails, inconclusive if the seeds disagree or there are no runs")
    if not values:
        return Interval(what, math.nan, -math.inf, math.inf, 1.0, [0], "exact (no runs)", status, rule).to_dict()
    est = worst(values)
    if status != "inconclusive":
        return exact(est, what=f"{what} (worst of {len(values)} seeds)", status=status, rule=rule, n=len(values))
    return Interval(what, est, min(values), max(values), 1.0, [len(values)],
                    "exact per seed (seeds disagree: lowest..highest)", status, rule).to_dict()


def exact_verdict(parts: list[dict], summary: str, rule: str, numbers: dict, key_number: str) -> Verdict:
    """A verdict made of exactly-checked parts: supported if every part is, not supported if any is not."""
    return Verdict(combine([t["status"] for t in parts]), summary, rule, numbers, key_number=key_number,
                   tests=parts)


def exactness(value: float, *, what: str, rounding: float = 1e-9, visible: float = 1e-3) -> Verdict:
    """A deterministic error judged three ways: exact (<= ``rounding``, float64 rounding), visibly wrong
    (> ``visible``), or in between (inconclusive: not rounding, not a visible error either)."""
    status = "supported" if value <= rounding else "not supported" if value > visible else "inconclusive"
    rule = (f"supported if the max |error| is <= {rounding:g} (float64 rounding); not supported if above "
            f"{visible:g}; otherwise inconclusive")
    return Verdict(status, f"{what}: max |error| {fmt(value)}", rule, {"max_error": value}, key_number=fmt(value),
                   tests=[exact(value, what=what, status=status, rule=rule)])

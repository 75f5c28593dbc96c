"""Experiments as small declarative specs, and verdicts computed from their records.

An :class:`Experiment` names a claim of ``shared/claims.md`` (C01..C38), says
what to run in each mode (a list of named configs, and a number of seeds),
points at a module-level function that performs one run, and at a function
that turns the run records into a :class:`Verdict`.  The engine
(:mod:`normlab.experiments.runner`) runs and stores; this module only
declares and judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar
from dataclasses import dataclass, field

from .stats import LEVEL, Interval, combine, interval, judge_direction, judge_equivalence, judge_threshold

__all__ = ["Experiment", "Run", "Verdict", "MODES", "PerMode", "experiment", "compare", "equivalent", "threshold",
           "exact",
           "combine_verdicts", "paired_by_seed", "by_name", "spread", "mean", "fmt"]

MODES = ("quick", "full", "paper")


class PerMode(dict):
    """A table of sizes by mode.  ``"paper"`` (sizes close to the papers', for a GPU or a cluster) falls back to
    ``"full"`` where a table names no paper size, so every experiment runs in every mode."""

    def __missing__(self, key):
        if key == "paper" and "full" in self:
            return self["full"]
        raise KeyError(key)
VERDICTS = ("supported", "not supported", "inconclusive")


@dataclass(frozen=True)
class Run:
    """One run of an experiment: a named config and a seed."""

    claim: str
    name: str
    config: dict
    seed: int

    def key(self, code_version: str) -> str:
        """Identity of the run's record: claim, config, seed and code version."""
        blob = json.dumps([self.claim, self.name, self.config, self.seed, code_version], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Verdict:
    """``status`` (supported / not supported / inconclusive), the numbers behind it and the rule applied.

    ``tests`` holds every interval the status was computed from (estimate,
    lo, hi, level, n, method, its own status and rule), so the report can
    show an interval, not only a point.
    """

    status: str
    summary: str
    rule: str
    numbers: dict = field(default_factory=dict)
    key_number: str = ""
    tests: list[dict] = field(default_factory=list)  # the judged intervals (stats.Interval as dicts)
    versus_paper: str = ""  # "paper: ..., here: ..." where the paper gives a number


    def __post_init__(self):
        if self.status not in VERDICTS:
            raise ValueError(f"verdict status must be one of {VERDICTS}, got {self.status!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Experiment:
    """The declaration of one claim's experiment.

    Attributes:
        claim: the claim id, e.g. "C21".
        title: a short title.
        statement: the claim in plain words.
        setup: model, data, steps, seeds, in words (for the report).
        grid: ``grid(mode) -> [(name, config), ...]``: what to run in ``"quick"`` and ``"full"`` mode.
        seeds: number of seeds per mode, e.g. ``{"quick": 2, "full": 3}``.
        run: ``run(config, seed) -> dict``, a module-level function (it runs in a worker process);
            the dict must be JSON-able.
        verdict: ``verdict(records) -> Verdict`` over the run records of one mode.
        plot: ``plot(records, verdict, path_prefix) -> [png paths]`` (optional).
        paper: the paper figure or number to compare with, with its citation.
        threads: torch threads each run wants (the pool fits workers around it).
        exclusive: the runs must have the machine to themselves (timings): they run one at a time
            after every other run has finished, never beside another run.
    """

    claim: str
    title: str
    statement: str
    setup: str
    grid: Callable[[str], list[tuple[str, dict]]]
    seeds: dict
    run: Callable[[dict, int], dict]
    verdict: Callable[[list[dict]], Verdict]
    plot: Callable | None = None
    paper: str = ""
    threads: int = 1
    exclusive: bool = False
    _version: str | None = field(default=None, init=False, repr=False, compare=False)

    def runs(self, mode: str, seeds: int | None = None, context: dict | None = None) -> list[Run]:
        """The runs of ``mode``; ``context`` (e.g. ``{"text": path}``) is merged into every config."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = seeds if seeds is not None else PerMode(self.seeds)[mode]
        return [Run(self.claim, name, dict(config, mode=mode, **(context or {})), seed)
                for name, config in self.grid(mode) for seed in range(n)]

    def code_version(self) -> str:
        """normlab's version plus a hash of the code that produces this experiment's records.

        That is the run function with what it reaches in the experiments
        package, and the library below it (:mod:`.fingerprint`); the
        verdict and plot functions are not part of it, so a fixed rule
        re-judges old records.  Computed once per process, so records
        written and judged by one process agree even if a file is edited
        while it runs.
        """
        if self._version is None:
            import normlab

            from .fingerprint import library_fingerprint, run_fingerprint

            self._version = f"{normlab.__version__}+{run_fingerprint(self.run)}.{library_fingerprint()}"
        return self._version


_FIELDS = {f.name for f in dataclasses.fields(Experiment) if f.init}


def experiment(**spec) -> Experiment:
    """Build an :class:`Experiment` from keyword arguments, rejecting unknown keys by name."""
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown experiment spec key(s) {unknown}; allowed: {sorted(_FIELDS)}")
    missing = sorted(k for k in ("claim", "title", "statement", "setup", "grid", "seeds", "run", "verdict")
                     if k not in spec)
    if missing:
        raise ValueError(f"experiment spec is missing {missing}")
    if not {"quick", "full"} <= set(spec["seeds"]) or not set(spec["seeds"]) <= set(MODES):
        raise ValueError(f"seeds must give a number for quick and full mode (and may for paper mode, which "
                         f"otherwise uses full's), got {spec['seeds']}")
    return Experiment(**spec)


# ------------------------------------------------------------------ statistics
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
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) else str(x)


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
    sign = ">" if expect == "greater" else "<"
    bound = f"{'+' if expect == 'greater' else '-'}{fmt(min_effect)}"
    iv.rule = (f"supported if the {level:.0%} CI of {label_a} - {label_b} lies wholly beyond {bound} "
               f"({label_a} {sign} {label_b}); not supported if it lies wholly short of {bound}; otherwise "
               "inconclusive")
    ma, mb = mean(a), mean(b)
    summary = (f"{what}: {label_a} {fmt(ma)} (n={len(a)}) vs {label_b} {fmt(mb)} (n={len(b)}); "
               f"difference {iv.text()}")
    return Verdict(iv.status, summary, iv.rule, {"a": a, "b": b, "mean_a": ma, "mean_b": mb,
                                                 "effect": iv.estimate, "ci": [iv.lo, iv.hi]},
                   key_number=f"{fmt(ma)} vs {fmt(mb)}, diff {_short(iv)}", tests=[iv.to_dict()])


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
    iv.rule = (f"supported if the {level:.0%} CI of the mean lies wholly {side} {fmt(bound)}; not supported if "
               "it lies wholly on the other side; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}", iv.rule, {"values": xs, "ci": [iv.lo, iv.hi]},
                   key_number=_short(iv), tests=[iv.to_dict()])


def exact(value: float, *, what: str, status: str, rule: str, n: int = 1) -> dict:
    """A deterministic measurement as a zero-width interval (for claims checked exactly, not by seeds)."""
    iv = Interval(what, float(value), float(value), float(value), 1.0, [n], "exact (deterministic)", status, rule)
    return iv.to_dict()


def combine_verdicts(parts: dict[str, Verdict], *, key_number: str | None = None) -> Verdict:
    """One verdict for a claim made of several judged parts (each part's tests are kept).

    Supported if every part is, not supported if any part is not, otherwise inconclusive.
    """
    status = combine([v.status for v in parts.values()])
    summary = "; ".join(f"[{name}: {v.status}] {v.summary}" for name, v in parts.items())
    rule = "every part must be supported (any part not supported: not supported): " + " | ".join(
        f"{name}: {v.rule}" for name, v in parts.items())
    tests = [t for v in parts.values() for t in v.tests]
    numbers = {name: v.numbers for name, v in parts.items()}
    key = key_number if key_number is not None else "; ".join(f"{n}: {v.key_number}" for n, v in parts.items())
    return Verdict(status, summary, rule, numbers, key_number=key, tests=tests)


def _short(iv: Interval) -> str:
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{fmt(iv.estimate)} (no CI)"
    return f"{fmt(iv.estimate)} [{fmt(iv.lo)}, {fmt(iv.hi)}]"

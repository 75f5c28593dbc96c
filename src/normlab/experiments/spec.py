"""Experiments as small declarative specs, and verdicts computed from their records.

An :class:`Experiment` names a claim of ``shared/claims.md`` (C01..C34), says
what to run in each mode (a list of named configs, and a number of seeds),
points at a module-level function that performs one run, and at a function
that turns the run records into a :class:`Verdict`.  The engine
(:mod:`normlab.experiments.runner`) runs and stores; this module only
declares and judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Experiment", "Run", "Verdict", "MODES", "experiment", "compare", "equivalent", "spread", "mean",
           "fmt"]

MODES = ("quick", "full")
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
    """``status`` (supported / not supported / inconclusive), the numbers behind it and the rule applied."""

    status: str
    summary: str
    rule: str
    numbers: dict = field(default_factory=dict)
    key_number: str = ""

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
    _version: str | None = field(default=None, init=False, repr=False, compare=False)

    def runs(self, mode: str, seeds: int | None = None, context: dict | None = None) -> list[Run]:
        """The runs of ``mode``; ``context`` (e.g. ``{"text": path}``) is merged into every config."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = seeds if seeds is not None else self.seeds[mode]
        return [Run(self.claim, name, dict(config, mode=mode, **(context or {})), seed)
                for name, config in self.grid(mode) for seed in range(n)]

    def code_version(self) -> str:
        """normlab's version plus a hash of the module that defines this experiment.

        Computed once per process, so records written and judged by one
        process agree even if the source file is edited while it runs.
        """
        if self._version is None:
            self._version = self._compute_version()
        return self._version

    def _compute_version(self) -> str:
        import normlab

        module = inspect.getmodule(self.run)
        try:
            source = inspect.getsource(module) if module else ""
        except OSError:
            source = ""
        return f"{normlab.__version__}+{hashlib.sha256(source.encode()).hexdigest()[:10]}"


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
    if set(spec["seeds"]) != set(MODES):
        raise ValueError(f"seeds must give a number for each mode {MODES}, got {spec['seeds']}")
    return Experiment(**spec)


# ------------------------------------------------------------------ statistics
def by_name(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by run name (the config's label), in record order; a missing name reads as []."""
    groups: defaultdict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["name"]].append(r)
    return groups


def mean(xs) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else float("nan")


def spread(xs) -> float:
    """Seed-to-seed spread of a group: max - min (0 for a single value)."""
    xs = list(xs)
    return max(xs) - min(xs) if len(xs) > 1 else 0.0


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) else str(x)


def compare(a, b, *, expect: str, what: str, label_a: str, label_b: str, min_effect: float = 0.0) -> Verdict:
    """Judge "``a`` is greater (or less) than ``b``" from per-seed values.

    effect = mean(a) - mean(b); the spread is the larger seed-to-seed range of
    the two groups.  Inconclusive when |effect| <= spread or |effect| <=
    ``min_effect``; otherwise supported if the sign is the expected one, not
    supported if it is the opposite.
    """
    if expect not in ("greater", "less"):
        raise ValueError(f"expect must be 'greater' or 'less', got {expect!r}")
    a, b = list(a), list(b)
    ma, mb = mean(a), mean(b)
    effect, sp = ma - mb, max(spread(a), spread(b))
    threshold = max(sp, min_effect)
    if not (abs(effect) > threshold):
        status = "inconclusive"
    elif (effect > 0) == (expect == "greater"):
        status = "supported"
    else:
        status = "not supported"
    sign = ">" if expect == "greater" else "<"
    summary = (f"{what}: {label_a} {fmt(ma)} (n={len(a)}, range {fmt(spread(a))}) vs {label_b} {fmt(mb)} "
               f"(n={len(b)}, range {fmt(spread(b))}); effect {fmt(effect)}")
    rule = (f"supported if {label_a} {sign} {label_b} by more than the seed spread ({fmt(sp)})"
            + (f" and {fmt(min_effect)}" if min_effect else "") + "; opposite sign beyond it: not supported; "
            "otherwise inconclusive")
    return Verdict(status, summary, rule, {"a": a, "b": b, "mean_a": ma, "mean_b": mb, "effect": effect,
                                           "spread": sp}, key_number=f"{fmt(ma)} vs {fmt(mb)}")


def equivalent(a, b, *, what: str, label_a: str, label_b: str, tolerance: float) -> Verdict:
    """Judge "``a`` matches ``b``": supported when |mean difference| <= max(seed spread, tolerance).

    Not supported when the difference exceeds both; there is no
    inconclusive outcome unless a group is empty.
    """
    a, b = list(a), list(b)
    if not a or not b:
        return Verdict("inconclusive", f"{what}: no finished runs to compare", "needs runs of both groups")
    ma, mb = mean(a), mean(b)
    diff, sp = ma - mb, max(spread(a), spread(b))
    bound = max(sp, tolerance)
    status = "supported" if abs(diff) <= bound else "not supported"
    summary = (f"{what}: {label_a} {fmt(ma)} vs {label_b} {fmt(mb)}, difference {fmt(diff)}; "
               f"seed spread {fmt(sp)}")
    rule = f"supported if |difference| <= max(seed spread, {fmt(tolerance)}) = {fmt(bound)}"
    return Verdict(status, summary, rule, {"a": a, "b": b, "difference": diff, "spread": sp, "bound": bound},
                   key_number=f"diff {fmt(diff)} (bound {fmt(bound)})")

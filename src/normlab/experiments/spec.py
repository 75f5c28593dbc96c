"""Experiments as small declarative specs, and verdicts computed from their records.

An :class:`Experiment` names a claim of ``shared/claims.md`` (C01..C38), says
what to run in each mode (a list of named configs, and a number of seeds),
points at a module-level function that performs one run, and at a function
that turns the run records into a :class:`Verdict`.  The engine
(:mod:`normlab.experiments.runner`) runs and stores; this module only
declares; :mod:`normlab.experiments.verdicts` judges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Experiment", "Run", "Verdict", "MODES", "PerMode", "experiment"]

MODES = ("quick", "full", "paper")


class PerMode(dict):
    """A table of sizes by mode.  ``"paper"`` (sizes close to the papers', for a GPU or a cluster) falls back to
    ``"full"`` where a table names no paper size, so every experiment runs in every mode."""

    def __missing__(self, key):
        if key == "paper" and "full" in self:
            return self["full"]
        raise KeyError(key)
VERDICTS = ("supported", "not supported", "below the bar", "inconclusive")


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
    """``status`` (supported / not supported / below the bar / inconclusive), the numbers behind it and the rule.

    "below the bar": an effect in the claimed direction whose interval lies
    wholly short of the claimed minimum (a finding, not a refutation of any
    effect).

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

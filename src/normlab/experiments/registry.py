"""Claim id -> experiment.

Every module of :mod:`normlab.experiments.claims` (``cNN_<slug>.py``) is
imported and its ``SPEC`` registered.  Extra modules can be named in the
environment variable ``NORMLAB_EXPERIMENTS`` (comma-separated import paths):
each registers its experiments with :func:`register` or defines a ``SPEC``;
worker processes inherit the variable, so their runs find those experiments
too.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re

from .spec import Experiment

__all__ = ["register", "get", "all_experiments", "parse_claims"]

_REGISTRY: dict[str, Experiment] = {}
_loaded = False


def register(exp: Experiment) -> Experiment:
    if not re.fullmatch(r"C\d\d", exp.claim):
        raise ValueError(f"claim ids look like C01..C38 (a C and two digits), got {exp.claim!r}")
    if exp.claim in _REGISTRY:
        raise ValueError(f"claim {exp.claim} is registered twice")
    _REGISTRY[exp.claim] = exp
    return exp


def _load() -> None:
    global _loaded
    if not _loaded:
        from . import claims

        extra = [m.strip() for m in os.environ.get("NORMLAB_EXPERIMENTS", "").split(",") if m.strip()]
        found = [f"{claims.__name__}.{m.name}" for m in pkgutil.iter_modules(claims.__path__)]
        for name in (*sorted(found), *extra):
            spec = getattr(importlib.import_module(name), "SPEC", None)
            if isinstance(spec, Experiment) and _REGISTRY.get(spec.claim) is not spec:
                register(spec)
        _loaded = True


def all_experiments() -> dict[str, Experiment]:
    _load()
    return dict(sorted(_REGISTRY.items()))


def get(claim: str) -> Experiment:
    exps = all_experiments()
    key = claim.strip().upper()
    if key not in exps:
        raise KeyError(f"unknown claim id {claim!r}; implemented: {', '.join(exps)}")
    return exps[key]


def parse_claims(text: str | None) -> list[Experiment]:
    """"C18,C22" -> those experiments (all when None); unknown ids raise KeyError naming the known ones.

    A text that names no claim ("", " ", ",") is a ValueError, never "all claims".
    """
    if text is None:
        return list(all_experiments().values())
    ids = [c.strip() for c in text.split(",") if c.strip()]
    if not ids:
        raise ValueError(f"no claim ids in {text!r}: give ids such as C21 or C18,C22 (or leave the option out "
                         "for all claims)")
    return list({e.claim: e for e in map(get, ids)}.values())  # each claim once, in the order given

"""The evidence suite: one experiment per claim, a resumable runner, verdicts computed from records."""

from .registry import all_experiments, get, parse_claims, register
from .spec import MODES, Experiment, Run, Verdict, experiment
from .verdicts import compare, equivalent

__all__ = ["Experiment", "Run", "Verdict", "MODES", "experiment", "compare", "equivalent", "register", "get",
           "all_experiments", "parse_claims"]

"""Run what is missing, then judge: the steps behind ``normlab run`` and ``normlab report``."""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from collections.abc import Callable

from .records import load_records, output_lock, pending_runs, set_aside_unreadable
from .runner import execute_runs
from .spec import Experiment, Verdict

__all__ = ["run_missing", "judge", "status_of", "quick_differences"]


def run_missing(exps: list[Experiment], mode: str, out: str, *, workers: int | None = None,
                seeds: int | None = None, context: dict | None = None, log: Callable | None = None,
                backend: str = "local", address: str | None = None) -> list[dict]:
    """Run every run of ``exps`` in ``mode`` that has no finished record yet; return their summaries.

    Holds ``out``'s lock meanwhile (a second run on the same directory waits and says so), and first sets
    aside record files that cannot be read, saying which and that their runs will be done again.

    ``backend``: "local" (a process pool of ``workers``) or "ray" (Ray tasks on the cluster at ``address``).
    """
    def say(line: str) -> None:
        print(f"normlab: {line}", file=sys.stderr, flush=True)

    with output_lock(out, say=say):
        for exp in exps:
            for line in set_aside_unreadable(out, exp, mode, seeds, context):
                say(line)
        jobs = [(exp, run) for exp in exps for run in pending_runs(out, exp, mode, seeds, context)]
        return execute_runs(out, jobs, workers=workers, log=log, backend=backend, address=address)


def judge(exp: Experiment, mode: str, out: str, *, seeds: int | None = None, plots_dir: str | None = None,
          context: dict | None = None) -> dict:
    """Verdict (and plots) of one experiment from its finished records."""
    records = load_records(out, exp, mode, seeds, context)
    expected = len(exp.runs(mode, seeds, context))
    try:
        verdict = exp.verdict(records) if records else Verdict("inconclusive", "no finished runs", "needs runs")
    except Exception:
        verdict = Verdict("inconclusive", "the verdict could not be computed", traceback.format_exc(limit=3))
    if len(records) < expected and verdict.status != "inconclusive":
        verdict = dataclasses.replace(verdict, status="inconclusive",
                                      summary=f"only {len(records)}/{expected} runs finished; " + verdict.summary)
    plots, plot_error = [], None
    if plots_dir and records and exp.plot is not None:
        os.makedirs(plots_dir, exist_ok=True)
        try:
            plots = exp.plot(records, verdict, os.path.join(plots_dir, exp.claim))
        except Exception:
            plot_error = traceback.format_exc(limit=3)
    seeds_used = sorted({r["seed"] for r in records})
    return {"claim": exp.claim, "title": exp.title, "statement": exp.statement, "setup": exp.setup,
            "paper": exp.paper, "mode": mode, "runs_finished": len(records), "runs_expected": expected,
            "seeds": len(seeds_used), "verdict": verdict.to_dict(), "plots": plots, "plot_error": plot_error,
            "wall_time_s": sum(r.get("wall_time_s", 0.0) for r in records), "context": context or {},
            "quick_differs": quick_differences(exp) if mode == "quick" else ""}


def quick_differences(exp: Experiment) -> str:
    """How ``exp``'s quick setup is weaker than or different from full mode's: its own note, and the
    configurations that full mode runs and quick leaves out (sizes aside)."""
    quick = {name for name, _ in exp.grid("quick")}
    full = [name for name, _ in exp.grid("full")]
    missing = [name for name in full if name not in quick]
    parts = [exp.quick_differs] if exp.quick_differs else []
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        parts.append(f"quick leaves out {len(missing)} of full mode's {len(full)} configurations "
                     f"({shown})")
    return "; ".join(parts)


def status_of(exp: Experiment, out: str) -> str:
    """A one-word state for ``normlab list``: which modes have all their records."""
    states = []
    for mode in ("quick", "full"):
        total = len(exp.runs(mode))
        done = total - len(pending_runs(out, exp, mode))
        states.append(f"{mode} {done}/{total}")
    return ", ".join(states)

"""Estimated wall time of a claim's runs in a mode, before they start (printed by ``normlab report --mode paper``).

The estimate scales measured full-mode run time by the compute the mode's
configs ask for relative to full mode's: for a GPT, steps x batch x context
x blocks x width^2 (the matmuls' multiply-adds); for a ConvNet, steps x batch
x blocks x sum of width^2; otherwise steps.  The measured time is the
full-mode records' own where ``out`` holds them, else this machine's full
run of the suite (2-core CPU, in :data:`FULL_SECONDS`).  It is a CPU
estimate: on a GPU the large configs run many times faster, the small ones
barely.
"""

from __future__ import annotations

from .records import load_records
from .spec import Experiment

__all__ = ["FULL_SECONDS", "cost", "estimate_seconds", "format_estimate"]

#: run-seconds per claim of one full-mode suite run on a 2-core AMD EPYC CPU (torch 2.13, 2026-12-06; 62.7 min of wall
#: time on 2 workers, beside a light test job)
FULL_SECONDS = {
    "C01": 54, "C02": 26, "C03": 112, "C04": 1, "C05": 1, "C06": 1, "C07": 3, "C08": 1, "C09": 169, "C10": 10,
    "C11": 1, "C12": 1, "C13": 59, "C14": 21, "C15": 8, "C16": 236, "C17": 65, "C18": 87, "C19": 30, "C20": 1,
    "C21": 316, "C22": 174, "C23": 128, "C24": 119, "C25": 176, "C26": 1535, "C27": 157, "C28": 1, "C29": 1,
    "C30": 19, "C31": 478, "C32": 294, "C33": 37, "C34": 1830, "C35": 1054, "C36": 72, "C37": 56, "C38": 25,
}


def cost(config: dict) -> float:
    """A proxy of one run's compute (relative units, comparable between modes of one claim)."""
    train = config.get("train") or {}
    steps = float(train.get("steps") or config.get("steps") or 1)
    model = config.get("model") or {}
    batch = float(config.get("batch") or 8)
    if "d_model" in model:
        block = float(model.get("block_size", 64))
        return steps * batch * block * float(model.get("n_layer", 1)) * float(model["d_model"]) ** 2
    if "widths" in model:
        blocks = float(model.get("blocks_per_stage", 1))
        return steps * float(config.get("batch") or 32) * blocks * sum(float(w) ** 2 for w in model["widths"])
    return steps


def estimate_seconds(exp: Experiment, mode: str, out: str | None = None) -> float:
    """Run-seconds ``exp``'s runs in ``mode`` should take (see the module docstring)."""
    full_runs = exp.runs("full")
    measured = None
    if out is not None:
        recs = load_records(out, exp, "full")
        if recs and len(recs) == len(full_runs):
            measured = sum(r.get("wall_time_s", 0.0) for r in recs)
    if measured is None:
        measured = float(FULL_SECONDS.get(exp.claim, 60))
    full_cost = sum(cost(r.config) for r in full_runs) or 1.0
    return measured * sum(cost(r.config) for r in exp.runs(mode)) / full_cost


def format_estimate(exps: list[Experiment], mode: str, out: str | None, workers: int) -> str:
    """One line per claim and a total, for the start of a long report."""
    lines, total = [], 0.0
    for exp in exps:
        s = estimate_seconds(exp, mode, out)
        total += s
        lines.append(f"  {exp.claim}: ~{_human(s)} of run time ({len(exp.runs(mode))} runs)")
    lines.append(f"  all: ~{_human(total)} of run time, ~{_human(total / max(1, workers))} of wall time on "
                 f"{workers} worker(s) (a CPU estimate from full-mode timings scaled by model size x steps; "
                 "a GPU runs the large configs much faster)")
    return "\n".join(lines)


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

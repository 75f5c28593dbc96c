"""Records of runs on disk: where a run's record lives, reading the finished ones, the runs still to do, and
performing one run into a record.

The process pool (:mod:`normlab.experiments.runner`) and the Ray backend
(:mod:`normlab.experiments.ray_backend`) both build on this module; neither
imports the other's internals.

Records live at ``<out>/records/<claim>/<name>-s<seed>-<key>.json`` where
the key hashes claim, config, seed and code version.  A run whose record
exists with status ``ok`` is never run again.
"""

from __future__ import annotations

import json
import os
import time
import traceback

from ..train.record import environment
from .spec import Experiment, Run

__all__ = ["Interrupted", "record_path", "read_record", "load_records", "pending_runs", "perform", "summary"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the runs; the one-line message has been printed already."""


def record_path(out: str, run: Run, code_version: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.name)
    return os.path.join(out, "records", run.claim, f"{safe}-s{run.seed}-{run.key(code_version)}.json")


def read_record(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_records(out: str, exp: Experiment, mode: str, seeds: int | None = None,
                 context: dict | None = None) -> list[dict]:
    """The finished records of this experiment's runs in ``mode`` (current code version only)."""
    version = exp.code_version()
    records = []
    for run in exp.runs(mode, seeds, context):
        rec = read_record(record_path(out, run, version))
        if rec is not None and rec.get("status") == "ok":
            records.append(rec)
    return records


def pending_runs(out: str, exp: Experiment, mode: str, seeds: int | None = None,
                 context: dict | None = None) -> list[Run]:
    version = exp.code_version()
    return [r for r in exp.runs(mode, seeds, context)
            if (read_record(record_path(out, r, version)) or {}).get("status") != "ok"]


def perform(claim: str, name: str, config: dict, seed: int, code_version: str, threads: int) -> dict:
    """Perform one run and return its record (status "failed" with the traceback when the run raises)."""
    import torch

    from . import registry

    torch.set_num_threads(threads)  # per run: a reused worker (Ray's) may ignore OMP_NUM_THREADS
    exp = registry.get(claim)
    start = time.perf_counter()
    record = {"claim": claim, "name": name, "seed": seed, "config": config, "mode": config.get("mode"),
              "device": config.get("device", "cpu"), "code_version": code_version, "status": "ok", "result": None,
              "error": None}
    try:
        torch.manual_seed(seed)
        record["result"] = exp.run(dict(config), seed)
    except Exception:
        record["status"], record["error"] = "failed", traceback.format_exc()
    record["wall_time_s"] = time.perf_counter() - start
    record["env"] = environment()
    return record


def summary(record: dict) -> dict:
    return {k: record[k] for k in ("claim", "name", "seed", "status", "wall_time_s", "error")}

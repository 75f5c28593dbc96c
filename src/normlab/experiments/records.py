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

import contextlib
import json
import os
import time
import traceback
from collections.abc import Callable

from ..train.record import environment
from .fingerprint import text_fingerprint
from .spec import Experiment, Run

__all__ = ["Interrupted", "record_path", "read_record", "load_records", "pending_runs", "perform", "summary",
           "set_aside_unreadable", "output_lock"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the runs; the one-line message has been printed already."""


def record_path(out: str, run: Run, code_version: str) -> str:
    """Where ``run``'s record lives: its key hashes claim, config, seed, code version and a ``--text`` file's
    content (a file edited in place gets new records)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in run.name)
    text = run.config.get("text")
    if text and os.path.isfile(text):
        code_version = f"{code_version}+text.{text_fingerprint(text)}"
    return os.path.join(out, "records", run.claim, f"{safe}-s{run.seed}-{run.key(code_version)}.json")


def read_record(path: str) -> dict | None:
    """The record at ``path``; None when there is none or it cannot be read (see :func:`record_problem`)."""
    return _load(path)[0]


def _load(path: str) -> tuple[dict | None, str | None]:
    """(record, None), or (None, why it is unusable) for a file that exists but is not a record, or (None, None)."""
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:  # a truncated or garbled file (a full disk, an edit, a copy cut short)
        return None, f"cannot be read ({type(e).__name__}: {str(e)[:80]})"
    if not isinstance(rec, dict) or "status" not in rec:
        return None, "is not a run record (no status)"
    return rec, None


def set_aside_unreadable(out: str, exp: Experiment, mode: str, seeds: int | None = None,
                         context: dict | None = None) -> list[str]:
    """Move record files of ``exp``'s runs that exist but cannot be read to ``<file>.corrupt``; one line each.

    Their runs count as not done, so the next run writes them afresh; the
    lines say which file, what was wrong and what happens, for the caller to
    print.
    """
    version = exp.code_version()
    lines = []
    for run in exp.runs(mode, seeds, context):
        path = record_path(out, run, version)
        problem = _load(path)[1]
        if problem:
            os.replace(path, path + ".corrupt")
            lines.append(f"record {path} {problem}: moved to {os.path.basename(path)}.corrupt; the run "
                         f"({run.claim} {run.name} seed {run.seed}) will be done again")
    return lines


@contextlib.contextmanager
def output_lock(out: str, *, say: Callable[[str], None]):
    """Hold ``<out>/.normlab.lock`` while this process writes records there.

    A second ``normlab run``/``report`` on the same directory says that
    another one (its pid) is writing there and waits for it, then runs only
    what the first left (pending runs are computed after the wait), so two
    processes never run the same run twice.  Without ``fcntl`` (Windows)
    there is no lock.
    """
    os.makedirs(out, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Linux/macOS
        yield
        return
    with open(os.path.join(out, ".normlab.lock"), "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process"
            say(f"another normlab run ({holder}) is writing records to {out}: waiting for it to finish, then "
                "running only what it leaves")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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

"""Run experiments' runs in a local process pool, one atomically written record per run, resumable.

Records (:mod:`normlab.experiments.records`) are keyed by claim, config,
seed and code version.  A run whose record exists with status ``ok`` is
never run again, so an interrupted ``normlab
report`` (Ctrl-C, or SIGKILL) loses nothing that finished and redoes
nothing; a record is written whole or not at all (temp file + rename).

Interrupts: workers ignore SIGINT (a terminal's Ctrl-C reaches the whole
process group).  The first Ctrl-C cancels the runs not yet started, lets
the ones in progress finish and write their records, prints one line and
raises :class:`Interrupted`; a second Ctrl-C stops the workers at once
(SIGTERM, then SIGKILL) and reaps them before raising.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

from ..train.record import write_record
from .records import Interrupted, load_records, pending_runs, perform, record_path, summary
from .spec import Experiment, Run

__all__ = ["record_path", "load_records", "pending_runs", "execute_runs", "plan_workers", "Interrupted", "BACKENDS"]


def _execute(claim: str, name: str, config: dict, seed: int, path: str, code_version: str, threads: int) -> dict:
    """Pool worker: perform one run and write its record (also when it fails)."""
    record = perform(claim, name, config, seed, code_version, threads)
    write_record(path, record)
    return summary(record)


def _remove_stale_temp_files(records_dir: str) -> None:
    """Temp files of a process killed while writing (never read as records) are removed."""
    for root, _, files in os.walk(records_dir):
        for name in files:
            if name.startswith(".tmp-"):
                try:
                    os.remove(os.path.join(root, name))
                except OSError:
                    pass


def plan_workers(workers: int | None, threads: int) -> tuple[int, int]:
    """(workers, threads per worker): by default fill the cores, each worker with the threads its runs want."""
    cores = os.cpu_count() or 1
    threads = max(1, min(threads, cores))
    if workers is None:
        workers = max(1, cores // threads)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers, threads


BACKENDS = ("local", "ray")


def execute_runs(out: str, jobs: list[tuple[Experiment, Run]], *, workers: int | None = None,
                 log: Callable[[dict, int, int], None] | None = None, backend: str = "local",
                 address: str | None = None) -> list[dict]:
    """Run ``jobs`` (experiment, run) on ``backend``; return one summary per finished run.

    ``backend="local"``: a process pool on this machine.  ``backend="ray"``:
    every run is a Ray task (see :mod:`normlab.experiments.ray_backend`) on the
    cluster at ``address`` (or ``RAY_ADDRESS``; a local Ray when neither is
    set).  Runs whose ``ok`` record exists are skipped by the caller (see
    :func:`pending_runs`).  Runs of ``exclusive`` experiments (timings) go
    last, one at a time, with nothing beside them.  Ctrl-C cancels what has
    not started; finished records stay.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not jobs:
        return []
    os.makedirs(out, exist_ok=True)
    _remove_stale_temp_files(os.path.join(out, "records"))
    shared = [j for j in jobs if not j[0].exclusive]
    alone = [j for j in jobs if j[0].exclusive]
    summaries: list[dict] = []
    total = len(jobs)
    if backend == "ray":
        from .ray_backend import ray_runs

        for group, exclusive in ((shared, False), (alone, True)):
            if group:
                ray_runs(out, group, summaries, total, log, address=address, exclusive=exclusive)
        return summaries
    if shared:
        n_workers, n_threads = plan_workers(workers, max(exp.threads for exp, _ in shared))
        _pool_runs(out, shared, n_workers, n_threads, summaries, total, log)
    if alone:
        _, n_threads = plan_workers(1, max(exp.threads for exp, _ in alone))
        _pool_runs(out, alone, 1, n_threads, summaries, total, log)
    return summaries


def _ignore_sigint() -> None:
    """Worker initializer: Ctrl-C is the parent's to handle (it reaches the whole process group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_pool(n_workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"), initializer=_ignore_sigint)


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Terminate the workers (SIGTERM, then SIGKILL) and reap them; nothing waits for a run to end."""
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None  # a third Ctrl-C waits
    try:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old)


def _hold_sigint() -> Callable[[], object] | None:
    """Hold Ctrl-C off while the pool spawns its workers; return the release (None off the main thread).

    Meanwhile a SIGINT is recorded, not acted on, and the release acts on it as the handler in
    force would (the default one raises KeyboardInterrupt from the release); an ignored SIGINT, as
    before, was lost: under load the workers could start runs before the parent was done
    submitting, and a Ctrl-C then did nothing.  SIGINT is also blocked in this thread, so workers
    spawned meanwhile start with it blocked and none can be interrupted before its initializer
    ignores it (a signal mask is inherited through fork and exec; a Python handler is not).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    held: list[int] = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    masks = hasattr(signal, "pthread_sigmask")  # not on Windows
    if masks:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def release() -> None:
        if masks:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # one pending here is recorded now
        signal.signal(signal.SIGINT, old)
        if held:
            if callable(old):
                old(signal.SIGINT, None)  # the default handler raises KeyboardInterrupt
            elif old != signal.SIG_IGN:
                raise KeyboardInterrupt
    return release


def _pool_runs(out: str, jobs: list[tuple[Experiment, Run]], n_workers: int, n_threads: int, summaries: list[dict],
               total: int, log: Callable[[dict, int, int], None] | None) -> None:
    pool = _start_pool(n_workers)
    futures = {}
    release = _hold_sigint()  # workers are spawned by submit()
    try:
        for exp, run in jobs:
            version = exp.code_version()
            fut = pool.submit(_execute, run.claim, run.name, run.config, run.seed,
                              record_path(out, run, version), version, n_threads)
            futures[fut] = run
    except BaseException:
        if release is not None:
            release()
        raise
    interrupted = False
    remaining = set(futures)

    def first_interrupt() -> None:
        nonlocal interrupted, remaining
        interrupted = True
        for fut in remaining:
            fut.cancel()
        remaining = {f for f in remaining if not f.cancelled()}
        print(f"interrupted: finishing the {len(remaining)} run(s) in progress (Ctrl-C again to stop "
              "now); finished runs are saved, run the same command again to resume", file=sys.stderr, flush=True)

    try:
        try:
            if release is not None:
                release()  # a Ctrl-C held off while the workers were spawned is raised here
        except KeyboardInterrupt:
            first_interrupt()
        while remaining:
            try:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in done:
                    if fut.cancelled():
                        continue
                    try:
                        summary = fut.result()
                    except Exception as e:  # the worker itself died
                        run = futures[fut]
                        summary = {"claim": run.claim, "name": run.name, "seed": run.seed, "status": "failed",
                                   "wall_time_s": 0.0, "error": f"worker died: {e!r}"}
                    summaries.append(summary)
                    if log:
                        log(summary, len(summaries), total)
            except KeyboardInterrupt:
                if interrupted:
                    raise
                first_interrupt()
    except KeyboardInterrupt:  # the second Ctrl-C
        _stop_now(pool)
        print("stopped: the runs in progress were abandoned", file=sys.stderr, flush=True)
        raise Interrupted() from None
    except BaseException:
        _stop_now(pool)
        raise
    pool.shutdown(wait=True)
    if interrupted:
        raise Interrupted()

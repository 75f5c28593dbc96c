"""Run experiments' runs as Ray tasks, with the local pool's guarantees.

Each run is a Ray task that asks for the CPUs it uses (its torch threads)
and a GPU when it runs on CUDA; the task performs the run and returns its
record, and the driver (this process) writes it atomically under ``out``,
so records live in one place whatever machine ran them, and a run is
written once or not at all:

- resume: a crash of the driver loses only the runs in flight; the next
  ``normlab report`` runs what has no ``ok`` record (records are keyed by
  the code that produced them, as with the pool);
- a worker that dies mid-run (killed, out of memory, a lost node) is
  retried by Ray (``max_retries``) and its run written when a retry
  finishes; a run that raises is recorded as failed and retried by the next
  report;
- at most as many tasks as the cluster's CPUs hold are in flight (more are
  submitted as these finish), so the first Ctrl-C stops submitting and lets
  the runs in progress finish and write their records, and a second one
  cancels them (as the pool does);
- exclusive experiments (timings) run one task at a time, after the rest.

Ray is optional (``pip install normlab[ray]``).  The cluster is the one at
``address`` or ``RAY_ADDRESS``; with neither, a local Ray is started with
this machine's CPUs and shut down at the end.  Workers must have normlab
installed (an existing cluster's nodes: the same environment as the
driver); experiment plugins named in ``NORMLAB_EXPERIMENTS`` are passed on
in the tasks' runtime environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ..train.record import write_record
from .records import Interrupted, perform, record_path, summary
from .spec import Experiment, Run

__all__ = ["ray_runs", "import_ray"]

MAX_RETRIES = 3  # retries of a task whose worker died (Ray's system failures), not of a run that raised


def import_ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray backend needs Ray: pip install 'normlab[ray]' (or pip install ray)") from None
    return ray


def _task(claim: str, name: str, config: dict, seed: int, code_version: str, threads: int) -> dict:
    """A Ray task: one run's record (the driver writes it)."""
    return perform(claim, name, config, seed, code_version, threads)


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster (or start a local one); True when this call started Ray (and stops it)."""
    if ray.is_initialized():
        return False
    addr = address or os.environ.get("RAY_ADDRESS") or None
    env = {k: os.environ[k] for k in ("NORMLAB_EXPERIMENTS", "NORMLAB_CACHE", "NORMLAB_KERNELS", "PYTHONPATH")
           if k in os.environ}
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
              "runtime_env": {"env_vars": env} if env else None}
    if addr:
        ray.init(address=addr, **kwargs)
    else:
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    return True


def _failed(run: Run, config_version: str, error: str) -> dict:
    return {"claim": run.claim, "name": run.name, "seed": run.seed, "config": run.config,
            "mode": run.config.get("mode"), "code_version": config_version, "status": "failed", "result": None,
            "error": error, "wall_time_s": 0.0, "env": {}}


def ray_runs(out: str, jobs: list[tuple[Experiment, Run]], summaries: list[dict], total: int,
             log: Callable[[dict, int, int], None] | None, *, address: str | None = None,
             exclusive: bool = False) -> None:
    """Run ``jobs`` as Ray tasks, writing each record as it arrives; appends to ``summaries``."""
    ray = import_ray()
    started = _connect(ray, address)
    remote = ray.remote(_task)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        queue = list(jobs)
        in_flight: dict = {}
        interrupted = False

        def submit_more() -> None:
            while queue and not interrupted:
                exp, run = queue[0]
                width = 1 if exclusive else max(1, cpus // max(1, exp.threads))
                if len(in_flight) >= width:
                    return
                queue.pop(0)
                version = exp.code_version()
                gpus = 1 if str(run.config.get("device", "cpu")).startswith("cuda") else 0
                ref = remote.options(num_cpus=exp.threads, num_gpus=gpus, max_retries=MAX_RETRIES,
                                     retry_exceptions=False).remote(run.claim, run.name, run.config, run.seed,
                                                                    version, exp.threads)
                in_flight[ref] = (run, record_path(out, run, version), version)

        submit_more()
        while in_flight:
            try:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
            except KeyboardInterrupt:
                if interrupted:  # the second Ctrl-C: cancel what is running
                    for ref in in_flight:
                        ray.cancel(ref, force=True)
                    print("stopped: the runs in progress were abandoned", file=sys.stderr, flush=True)
                    raise Interrupted() from None
                interrupted = True
                queue.clear()
                print(f"interrupted: finishing the {len(in_flight)} run(s) in progress (Ctrl-C again to stop "
                      "now); finished runs are saved, run the same command again to resume",
                      file=sys.stderr, flush=True)
                continue
            ref = ready[0]
            run, path, version = in_flight.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as e:  # the task's worker died more often than Ray retries
                record = _failed(run, version, f"ray task failed: {type(e).__name__}: {e}")
            write_record(path, record)
            summaries.append(summary(record))
            if log:
                log(summaries[-1], len(summaries), total)
            submit_more()
        if interrupted:
            raise Interrupted()
    finally:
        if started:
            ray.shutdown()

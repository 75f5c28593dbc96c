"""Run a function in several local processes joined by a ``torch.distributed`` group.

Used to test and measure :class:`normlab.SyncBatchNorm` on one machine with
the ``gloo`` backend (CPU).  The rendezvous is a file in a temporary
directory, so no network port is opened beyond gloo's own loopback traffic.
"""

from __future__ import annotations

import os
import queue
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["run_distributed"]


def _entry(fn, rank, world_size, init_method, backend, args, results, threads):
    torch.set_num_threads(threads)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
        try:
            results.put((rank, True, fn(rank, world_size, *args)))
        finally:
            dist.destroy_process_group()
    except BaseException:  # report, never hang the parent
        results.put((rank, False, traceback.format_exc()))


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo",
                    timeout: float = 300.0, threads: int = 1) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` in ``world_size`` spawned processes; return results by rank.

    ``fn`` must be importable by name (a module-level function) and its
    return value picklable.  A failure in any rank raises ``RuntimeError``
    with that rank's traceback; a rank that does not answer within
    ``timeout`` seconds raises ``TimeoutError``.

    Example::

        from normlab.distributed import run_distributed

        def world(rank, world_size):
            import torch.distributed as dist
            return dist.get_world_size()

        assert run_distributed(world, 2) == [2, 2]
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="normlab-dist-") as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        procs = [ctx.Process(target=_entry, args=(fn, r, world_size, init, backend, args, results, threads),
                             daemon=True) for r in range(world_size)]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        try:
            for _ in range(world_size):
                rank, ok, value = results.get(timeout=timeout)
                if not ok:
                    raise RuntimeError(f"rank {rank} of {world_size} failed:\n{value}")
                out[rank] = value
        except queue.Empty:
            missing = sorted(set(range(world_size)) - set(out))
            raise TimeoutError(f"ranks {missing} of {world_size} gave no result within {timeout:.0f} s") from None
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
    return [out[r] for r in range(world_size)]

"""Self-contained run records, written atomically."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile

import numpy as np
import torch

__all__ = ["environment", "write_record", "read_record"]


def environment() -> dict:
    """Versions and machine facts a record keeps so a result can be traced to where it came from."""
    import normlab

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "normlab": normlab.__version__, "platform": platform.platform(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def _clean(obj):
    """JSON-safe: non-finite floats become strings ("nan", "inf"), tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_record(path: str | os.PathLike, record: dict) -> None:
    """Write ``record`` as JSON to ``path`` atomically: a temp file in the same directory, fsync, rename.

    A process killed at any moment leaves either the old file or the new one,
    never half a record.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".tmp")  # never matches *.json
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_clean(record), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_record(path: str | os.PathLike) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)

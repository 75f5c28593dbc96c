"""Where normlab keeps what it makes once per machine (generated data, compiled kernels)."""

from __future__ import annotations

import os
import tempfile

__all__ = ["cache_dir", "temp_cache_dir"]


def cache_dir() -> str:
    """$NORMLAB_CACHE, else $XDG_CACHE_HOME/normlab, else ~/.cache/normlab."""
    base = os.environ.get("NORMLAB_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "normlab")
    return base


def temp_cache_dir() -> str:
    """This user's cache under the temporary directory: where things go when :func:`cache_dir` cannot be written."""
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    return os.path.join(tempfile.gettempdir(), f"normlab-cache-{uid}")

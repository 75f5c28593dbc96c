"""Where normlab keeps what it makes once per machine (generated data, compiled kernels)."""

from __future__ import annotations

import os

__all__ = ["cache_dir"]


def cache_dir() -> str:
    """$NORMLAB_CACHE, else $XDG_CACHE_HOME/normlab, else ~/.cache/normlab."""
    base = os.environ.get("NORMLAB_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "normlab")
    return base

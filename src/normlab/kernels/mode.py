"""Which implementations the layers may use: the kernel mode, per thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MODES", "mode", "use", "use_reference"]

MODES = ("auto", "reference", "native", "cpp", "triton")


def _env_mode() -> str:
    m = os.environ.get("NORMLAB_KERNELS", "auto").strip().lower() or "auto"
    if m not in MODES:
        raise ValueError(f"NORMLAB_KERNELS must be one of {', '.join(MODES)}, got {m!r}")
    return m


def _probe(m: str) -> None:
    """Entering mode ``triton``: ask now whether triton imports (compiled calls read the answer, see triton_ops)."""
    if m == "triton":
        from . import triton_ops

        triton_ops.available()


_default = _env_mode()
_probe(_default)


class _ThreadModes(threading.local):
    """The :func:`use` blocks in force, per thread: one thread's block never changes what another runs."""

    def __init__(self) -> None:
        self.stack: list[str] = []


_modes = _ThreadModes()


def mode() -> str:
    """The kernel mode in force in this thread: the innermost :func:`use`, else ``NORMLAB_KERNELS`` (read at import)."""
    stack = _modes.stack
    return stack[-1] if stack else _default


@contextmanager
def use(m: str) -> Iterator[None]:
    """Run a block with kernel mode ``m`` (one of :data:`MODES`), in the thread that runs it."""
    if m not in MODES:
        raise ValueError(f"kernel mode must be one of {', '.join(MODES)}, got {m!r}")
    _probe(m)
    stack = _modes.stack
    stack.append(m)
    try:
        yield
    finally:
        stack.pop()


def use_reference():
    """Run a block with normlab's reference implementation only (``use("reference")``)."""
    return use("reference")

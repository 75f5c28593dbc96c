"""TorchScript: normlab's layers refuse ``torch.jit.script`` with a clear error instead of failing inside."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["NoTorchScript"]


class NoTorchScript:
    """Mixin: ``torch.jit.script`` calls ``__prepare_scriptable__`` on every submodule before compiling.

    The layers are plain Python over arbitrary dims (tuples of dims, optional
    masks, Python-int counts), which TorchScript cannot type; TorchScript is
    deprecated in PyTorch, and ``torch.compile`` and ``torch.export`` handle
    these layers (both are tested).  ``torch.jit.trace`` works too, for a
    fixed input shape.
    """

    def __prepare_scriptable__(self) -> NoReturn:
        raise RuntimeError(
            f"normlab's {type(self).__name__} does not support TorchScript (torch.jit.script): use "
            "torch.compile(model) for speed, or torch.export.export(model, (x,)) for a deployable graph "
            "(torch.jit.trace also works for a fixed input shape)")

"""The code version of a run: a hash of the code that produces its record, and of nothing else.

A record is keyed by (claim, config, seed, code version).  The code version
hashes

- the run function and everything of its own module and of
  ``normlab.experiments`` it reaches through names: the functions and classes it calls (transitively) and the
  plain constants it reads (size tables), by their source or ``repr``;
- the library below the experiments (layers, functional, models, train,
  data, distributed, bench, kernels): every source file of normlab outside
  ``experiments/``, ``report/``, the CLI and the doctor, since a run may
  reach any of it through lazy imports;
- the environment the numbers depend on: torch, Python and numpy versions
  and the default corpus's content (:func:`environment_fingerprint`); a
  ``--text`` file enters each record's key by its content
  (:func:`text_fingerprint`), not only its path.

A claim's verdict and plot functions are not reached from its run function,
so fixing a rule or a figure re-judges the existing records in seconds; a
change to the run code or to the library re-runs them.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import types
from collections.abc import Callable

__all__ = ["run_fingerprint", "library_fingerprint", "environment_fingerprint", "text_fingerprint"]

_PACKAGE = "normlab"
_EXPERIMENTS = "normlab.experiments"
_ABOVE_THE_LIBRARY = {"experiments", "report", "cli.py", "doctor", "doctor.py", "__pycache__"}
_SOURCE_SUFFIXES = (".py", ".c", ".cc", ".cpp", ".h", ".cu")
_library_cache: str | None = None
_environment_cache: str | None = None
_text_cache: dict[tuple, str] = {}


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by a code object and the functions nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return repr(obj)


def _is_experiment_code(obj, home: str) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return isinstance(obj, (types.FunctionType, type)) and (module == home or module.startswith(_EXPERIMENTS))


def _plain_constant(obj) -> bool:
    return isinstance(obj, (int, float, str, bool, tuple, list, dict, frozenset, set, type(None)))


def run_fingerprint(fn: Callable) -> str:
    """Hash of ``fn``'s source and of the code and constants it reaches by name.

    Followed: functions and classes of ``fn``'s own module (a plugin module
    named in ``NORMLAB_EXPERIMENTS`` too) and of ``normlab.experiments``;
    constants (numbers, strings, containers) are hashed by ``repr``.
    """
    home = fn.__module__
    parts: list[str] = []
    seen: set[int] = set()
    stack = [fn]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        parts.append(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}\n{_source(obj)}")
        if isinstance(obj, type):
            members = [m for m in vars(obj).values() if isinstance(m, (types.FunctionType, staticmethod,
                                                                       classmethod, property))]
            funcs: list[Callable] = []
            for m in members:
                f = m.fget if isinstance(m, property) else getattr(m, "__func__", m)
                if isinstance(f, types.FunctionType):
                    funcs.append(f)
        else:
            funcs = [obj]
        for f in funcs:
            glob = f.__globals__
            for name in sorted(_names(f.__code__)):
                if name not in glob:
                    continue
                value = glob[name]
                if _is_experiment_code(value, home):
                    stack.append(value)
                elif (not callable(value) and not isinstance(value, types.ModuleType)
                      and _plain_constant(value) and id(value) not in seen):
                    seen.add(id(value))
                    parts.append(f"{f.__module__}.{name} = {value!r}")
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:12]


def library_fingerprint() -> str:
    """Hash of every normlab source file below the experiments (computed once per process)."""
    global _library_cache
    if _library_cache is None:
        import normlab

        root = os.path.dirname(normlab.__file__)
        h = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            if rel == ".":
                dirnames[:] = sorted(d for d in dirnames if d not in _ABOVE_THE_LIBRARY)
                filenames = [f for f in filenames if f not in _ABOVE_THE_LIBRARY]
            else:
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith(_SOURCE_SUFFIXES):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
        _library_cache = h.hexdigest()[:12]
    return _library_cache


def environment_fingerprint() -> str:
    """Hash of what a run's numbers depend on outside normlab's code (computed once per process): the torch,
    Python and numpy versions (numpy generates MNIST-1D) and the content of the default text corpus (CPython's
    ``pydoc_data.topics``, which changes with the Python build)."""
    global _environment_cache
    if _environment_cache is None:
        import platform

        import numpy
        import torch

        from ..data.text import default_text

        corpus = hashlib.sha256(default_text().encode("utf-8")).hexdigest()
        blob = f"torch {torch.__version__}|python {platform.python_version()}|numpy {numpy.__version__}|{corpus}"
        _environment_cache = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return _environment_cache


def text_fingerprint(path: str) -> str:
    """Hash of the content of a ``--text`` file (cached by path, size and modification time)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _text_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _text_cache[key] = h.hexdigest()[:12]
    return _text_cache[key]


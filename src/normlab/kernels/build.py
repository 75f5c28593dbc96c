"""Build and load normlab's C++ CPU kernels: just in time, once per machine, cached.

The sources in ``csrc/`` are compiled with ``torch.utils.cpp_extension.load``
(ninja, the C++ compiler torch was told about, ``-O3 -march=native -fopenmp``)
into ``cache_dir()/kernels/<key>``, where the key hashes the sources, the
torch version, the compiler flags and this CPU's instruction-set flags, so a
cache is never used by a machine or a torch it was not built for.  The first
build prints one line and takes a few tens of seconds; later processes load
the library in milliseconds.  Concurrent processes (the report's workers)
wait on torch's build lock instead of compiling twice.

If the build cannot happen (no C++ compiler, no ninja, a compile error), one
``RuntimeWarning`` says why and what to install, and the layers keep their
other paths (torch's native kernels where their precision is acceptable,
else the reference).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
import time
import warnings

import torch

from .._cache import cache_dir

__all__ = ["load", "loaded", "failure", "sources", "build_key"]

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-DNDEBUG"]
_LDFLAGS = ["-fopenmp"]

_lock = threading.Lock()
_state: dict = {"loaded": False, "failure": None, "seconds": None}


def sources() -> list[str]:
    """The C++ files of the extension (the header is hashed too)."""
    return sorted(os.path.join(_HERE, f) for f in os.listdir(_HERE) if f.endswith(".cpp"))


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_key() -> str:
    """Hash of what the compiled library depends on."""
    h = hashlib.sha256()
    for path in sorted(os.path.join(_HERE, f) for f in os.listdir(_HERE)):
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    h.update(torch.__version__.encode())
    h.update(" ".join(_FLAGS + _LDFLAGS).encode())
    h.update(_cpu_flags().encode())
    h.update(platform.machine().encode())
    return h.hexdigest()[:16]


def _why_not() -> str | None:
    """A reason the build cannot start, or None."""
    if not sys.platform.startswith("linux") and sys.platform != "darwin":
        return f"the C++ kernels are built on Linux and macOS only (this is {sys.platform})"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None and shutil.which("g++") is None:
        return (f"no C++ compiler was found ({cxx!r} is not on PATH): install one (e.g. `apt-get install g++`, "
                "or Xcode's command-line tools) to get normlab's fused CPU kernels")
    try:
        import ninja  # noqa: F401
    except ImportError:
        if shutil.which("ninja") is None:
            return "ninja is not installed: `pip install ninja` (a dependency of normlab) to build the C++ kernels"
    return None


def loaded() -> bool:
    """Whether the kernels are loaded in this process (never builds)."""
    return _state["loaded"]


def failure() -> str | None:
    """Why the kernels could not be built or loaded, once a load was tried and failed."""
    return _state["failure"]


def load() -> bool:
    """Build (if needed) and load the kernels; True on success.  Tried once per process."""
    if _state["loaded"] or _state["failure"] is not None:
        return _state["loaded"]
    with _lock:
        if _state["loaded"] or _state["failure"] is not None:
            return _state["loaded"]
        reason = _why_not()
        if reason is None:
            reason = _build_and_load()
        if reason is None:
            from . import ops

            ops.register()
            _state["loaded"] = True
        else:
            _state["failure"] = reason
            warnings.warn(f"normlab: {reason}. The layers use torch's native kernels where their precision is "
                          "acceptable and normlab's reference implementation elsewhere (correct, slower).",
                          RuntimeWarning, stacklevel=3)
        return _state["loaded"]


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the PyPI package's binary is not there when the venv is not activated."""
    try:
        import ninja

        where = getattr(ninja, "BIN_DIR", None)
    except ImportError:
        return
    if where and where not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = where + os.pathsep + os.environ.get("PATH", "")


def _build_and_load() -> str | None:
    from torch.utils import cpp_extension

    key = build_key()
    build_dir = os.path.join(cache_dir(), "kernels", key)
    os.makedirs(build_dir, exist_ok=True)
    lib = os.path.join(build_dir, "normlab_kernels.so")
    t0 = time.perf_counter()
    fresh = not os.path.exists(lib)
    if fresh:
        print("normlab: compiling the fused CPU kernels for this machine (once; about 20-60 s) ...",
              file=sys.stderr, flush=True)
    try:
        _put_ninja_on_path()
        cpp_extension.load(name="normlab_kernels", sources=sources(), extra_cflags=_FLAGS,
                           extra_ldflags=_LDFLAGS, extra_include_paths=[_HERE], build_directory=build_dir,
                           is_python_module=False, verbose=False)
    except Exception as e:  # a compiler or loader failure: fall back, saying why
        first = str(e).strip().splitlines()
        return f"the C++ kernels failed to build or load ({type(e).__name__}: {first[0] if first else ''})"
    _state["seconds"] = time.perf_counter() - t0
    if fresh:
        print(f"normlab: CPU kernels ready ({_state['seconds']:.0f} s, cached in {build_dir})", file=sys.stderr,
              flush=True)
    return None

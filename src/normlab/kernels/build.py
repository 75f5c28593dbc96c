"""Build and load normlab's C++ CPU kernels: just in time, once per machine, cached.

The cache is ``cache_dir()/kernels/<key>/normlab_kernels.so`` with a stamp
beside it (its size and SHA-256), where the key hashes the sources' content
(never their path: two checkouts or virtual environments of the same version
share one build), the torch version, the compiler flags and this CPU's
instruction-set flags.  A process loads a library whose stamp matches
directly (``torch.ops.load_library``, milliseconds, no compiler, no lock, a
read-only cache too).

Otherwise it builds the way a package manager installs:

1. take the key's lock (``<key>.lock``, an ``flock``, which the system
   releases when its holder dies: a build killed half-way leaves no lock that
   blocks the next process, which says in one line that it takes over);
2. compile in a private temporary directory, in a child process
   (``torch.utils.cpp_extension``, ninja, ``-O3 -march=native -fopenmp``),
   which also loads the result: a library that crashes at load crashes the
   child, not the user's process;
3. stamp it and move it into place with an atomic rename: no process ever
   sees (or maps) a file that is half written, and a cut-short copy fails its
   stamp instead of crashing the process that loads it (SIGBUS).

If the cache cannot be written, the build goes to this user's temporary
cache (:func:`normlab._cache.temp_cache_dir`), said in one line.  A stamped
library that fails to load is rebuilt once.  If the kernels cannot be had
(no C++ compiler, no ninja, a compile error, a lock held for longer than
``NORMLAB_BUILD_WAIT`` seconds, default 900), one ``RuntimeWarning`` says why
and the layers keep their other paths (torch's native kernels where their
precision is acceptable, else the reference): a layer never raises because
of the build.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator

import torch

from .._cache import cache_dir, temp_cache_dir

__all__ = ["load", "loaded", "failure", "sources", "build_key", "library"]

_HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-DNDEBUG"]
_LDFLAGS = ["-fopenmp"]
_NAME = "normlab_kernels"
_LIB = _NAME + ".so"
_STAMP = _LIB + ".stamp"

_lock = threading.Lock()
_state: dict = {"loaded": False, "failure": None, "seconds": None, "library": None}


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
    """Hash of what the compiled library depends on (the sources' names and content, not their path)."""
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


def library() -> str | None:
    """The path of the library loaded in this process (None before a load)."""
    return _state["library"]


def _say(msg: str) -> None:
    print(f"normlab: {msg}", file=sys.stderr, flush=True)


def load() -> bool:
    """Build (if needed) and load the kernels; True on success.  Tried once per process, never raises."""
    if _state["loaded"] or _state["failure"] is not None:
        return _state["loaded"]
    with _lock:
        if _state["loaded"] or _state["failure"] is not None:
            return _state["loaded"]
        try:
            reason = _load()
        except Exception as e:  # anything at all: the layers fall back, the reason is said once
            reason = f"the C++ kernels could not be set up ({type(e).__name__}: {_first_line(str(e))})"
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


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


# ------------------------------------------------------------------ the cached library
def _places() -> list[str]:
    """Where a build may be: the cache, then this user's temporary cache."""
    return [os.path.join(cache_dir(), "kernels"), os.path.join(temp_cache_dir(), "kernels")]


def _digest(path: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _valid(lib: str) -> bool:
    """Whether ``lib`` is whole: the size and hash its stamp recorded after the build (checked before loading)."""
    try:
        with open(lib + ".stamp", encoding="utf-8") as f:
            stamp = json.load(f)
        if os.path.getsize(lib) != stamp.get("size"):
            return False
        return _digest(lib) == {"size": stamp["size"], "sha256": stamp.get("sha256")}
    except (OSError, ValueError, TypeError):
        return False


def _dlopen(lib: str) -> str | None:
    """Load a library into this process; the error, or None."""
    try:
        torch.ops.load_library(lib)
    except Exception as e:  # OSError from dlopen (a bad file, a missing symbol)
        return f"{type(e).__name__}: {_first_line(str(e))}"
    _state["library"] = lib
    return None


def _load() -> str | None:
    key = build_key()
    places = _places()
    stale = None
    for place in places:  # a finished build anywhere: load it directly
        lib = os.path.join(place, key, _LIB)
        if _valid(lib):
            err = _dlopen(lib)
            if err is None:
                return None
            _say(f"the cached kernels in {os.path.dirname(lib)} failed to load ({err}); building them again")
            stale = lib
            break
    why = _why_not()
    if why is not None:
        return why
    place, said = _writable(places, key)
    if place is None:
        return f"no place to build the C++ kernels ({said})"
    if said:
        _say(said)
    lib = os.path.join(place, key, _LIB)
    with _locked(os.path.join(place, key + ".lock")) as waited:
        if waited is not None:
            return waited
        if lib != stale and _valid(lib):  # another process finished it while this one waited
            err = _dlopen(lib)
            if err is None:
                return None
        err = _build(place, key)
        if err is not None:
            return err
    err = _dlopen(lib)
    return None if err is None else f"the freshly built C++ kernels failed to load ({err})"


def _writable(places: list[str], key: str) -> tuple[str | None, str]:
    """The first place that can be written (made if needed), and the line that says why it is not the first."""
    why = ""
    for i, place in enumerate(places):
        try:
            os.makedirs(os.path.join(place, key), exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=place, prefix=".probe-", delete=True)
            probe.close()
        except OSError as e:
            why = why or f"the cache {place} cannot be written ({type(e).__name__}: {e.strerror or e})"
            continue
        return place, (f"{why}; building the kernels in {place}" if i else "")
    return None, why


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def _locked(path: str) -> Iterator[str | None]:
    """Hold the build lock of one key (an flock: released by the system when its holder dies).

    Yields None once held, or the reason to give up (held by a live process for longer than
    ``NORMLAB_BUILD_WAIT`` seconds).  A lock file left by a process that is gone (a build killed
    half-way) is taken over, said in one line.
    """
    import fcntl

    wait = float(os.environ.get("NORMLAB_BUILD_WAIT", "900"))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder(fd)
                if time.monotonic() - start >= wait:
                    yield (f"process {holder} has been building the C++ kernels for over {wait:.0f} s "
                           f"(lock {path}; NORMLAB_BUILD_WAIT sets the wait)")
                    return
                if not told:
                    _say(f"waiting for process {holder}, which is building the fused CPU kernels ...")
                    told = True
                time.sleep(0.2)
        holder = _holder(fd)
        if holder is not None and holder != os.getpid() and not _alive(holder):
            _say(f"process {holder} started building the kernels and is gone; taking over its lock ({path})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or "x")
    except (OSError, ValueError):
        return None


def _put_ninja_on_path(env: dict) -> None:
    """torch runs ``ninja`` from PATH; the PyPI package's binary is not there when the venv is not activated."""
    try:
        import ninja

        where = getattr(ninja, "BIN_DIR", None)
    except ImportError:
        return
    if where and where not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = where + os.pathsep + env.get("PATH", "")


# the child process that compiles and loads the library: a crash at load ends it, not the caller
_CHILD = """
import json, sys
from torch.utils import cpp_extension
import torch
a = json.loads(sys.argv[1])
cpp_extension.load(name=a["name"], sources=a["sources"], extra_cflags=a["cflags"], extra_ldflags=a["ldflags"],
                   extra_include_paths=[a["include"]], build_directory=a["dir"], is_python_module=False,
                   verbose=False)
torch.ops.normlab.rows_fwd.default  # the ops are registered
"""


def _sweep(place: str) -> None:
    """Remove build directories left by processes that are gone (called with the lock held)."""
    for name in os.listdir(place):
        if name.startswith(".build-"):
            try:
                pid = int(name.split("-")[1])
            except (IndexError, ValueError):
                continue
            if not _alive(pid):
                shutil.rmtree(os.path.join(place, name), ignore_errors=True)


def _build(place: str, key: str) -> str | None:
    """Compile into a private directory, check it loads (in the child), stamp it, rename it into place."""
    _sweep(place)
    tmp = tempfile.mkdtemp(dir=place, prefix=f".build-{os.getpid()}-")
    t0 = time.perf_counter()
    _say("compiling the fused CPU kernels for this machine (once; about 20-90 s) ...")
    try:
        env = dict(os.environ)
        _put_ninja_on_path(env)
        args = {"name": _NAME, "sources": sources(), "cflags": _FLAGS, "ldflags": _LDFLAGS, "include": _HERE,
                "dir": tmp}
        p = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], env=env, capture_output=True,
                           text=True)
        built = os.path.join(tmp, _LIB)
        if p.returncode != 0 or not os.path.exists(built):
            return f"the C++ kernels failed to build or load ({_child_error(p)})"
        stamp = _digest(built)
        final = os.path.join(place, key, _LIB)
        os.replace(built, final)  # atomic: a reader sees the old file or the whole new one
        with open(os.path.join(tmp, _STAMP), "w", encoding="utf-8") as f:
            json.dump(stamp, f)
        os.replace(os.path.join(tmp, _STAMP), final + ".stamp")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _state["seconds"] = time.perf_counter() - t0
    _say(f"CPU kernels ready ({_state['seconds']:.0f} s, cached in {os.path.dirname(final)})")
    return None


def _child_error(p: subprocess.CompletedProcess) -> str:
    """The line of the child's output that says what went wrong."""
    if p.returncode < 0:
        return f"the build process was killed by signal {-p.returncode}"
    lines = [ln.strip() for ln in (p.stderr or "").splitlines() if ln.strip()]
    for ln in lines:  # the compiler's own message ("x.cpp:12:3: error: ...") before the traceback's summary
        if "error:" in ln.lower() and not ln.startswith(("Traceback", "File ", "raise ")):
            return ln[:300]
    return lines[-1][:300] if lines else f"exit status {p.returncode}"

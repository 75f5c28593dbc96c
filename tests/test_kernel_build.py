"""The kernels' build and cache where a user's machine differs from the developer's.

Each test runs real processes against their own cache directory, made from the build of this
test session (copied, so nothing compiles for real): a cut-short library, an unwritable home, a
build killed half-way, a lock held by a live process, a second checkout of the same sources.
Where a build would start, the compiler is a script that records the call and fails at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from normlab._cache import cache_dir
from normlab.kernels import build

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(build.__file__))))  # the dir above normlab/

# a layer call in a fresh process: its output against torch's, the path it took, and why (if not the kernel)
CALL = """
import warnings
warnings.simplefilter("always")
import torch, normlab as nl
ln = nl.LayerNorm(64)
x = torch.randn(4, 64)
for _ in range(2):  # every call works, not only the first
    y = ln(x)
torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (64,), ln.weight, ln.bias, 1e-5))
print("IMPL", nl.kernels.implementation(ln, x))
print("FAILURE", nl.kernels.build.failure())
print("FROM", nl.kernels.build.library())
"""


@pytest.fixture(scope="module")
def built():
    """The directory of this session's finished build (it is built here once if the cache has none)."""
    if not build.load():
        pytest.skip(f"normlab's C++ kernels are not available here: {build.failure()}")
    return os.path.join(cache_dir(), "kernels", build.build_key())


@pytest.fixture
def fake_cxx(tmp_path):
    """A 'compiler' that records each call and fails at once (a build attempt costs a second, not a minute)."""
    marker = tmp_path / "compiler-calls"
    cxx = tmp_path / "fakecc"
    cxx.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\necho 'fakecc: error: no compiler here' >&2\nexit 1\n")
    cxx.chmod(0o755)
    return cxx, marker


def _cache_with(built_dir: str, root) -> str:
    """A cache directory holding a copy of the session's build (times kept, as a real cache's)."""
    cache = os.path.join(root, "cache")
    shutil.copytree(built_dir, os.path.join(cache, "kernels", os.path.basename(built_dir)), symlinks=True)
    return cache


def _run(tmp_path, fake_cxx, *, cache: str | None, home: str | None = None, pythonpath: str | None = None,
         timeout: float = 60, extra_env: dict | None = None, code: str = CALL) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("NORMLAB_CACHE", "XDG_CACHE_HOME", "NORMLAB_KERNELS")}
    env["CXX"] = str(fake_cxx[0])
    tmp = tmp_path / "tmpdir"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)  # this test's own temporary cache
    if cache is not None:
        env["NORMLAB_CACHE"] = cache
    if home is not None:
        env["HOME"] = home
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def _field(p: subprocess.CompletedProcess, name: str) -> str:
    for line in p.stdout.splitlines():
        if line.startswith(name + " "):
            return line[len(name) + 1:]
    raise AssertionError(f"no {name} line: rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")


def _ok(p: subprocess.CompletedProcess) -> None:
    assert p.returncode == 0, f"the process failed (rc={p.returncode}, {_signal(p)})\nstderr:\n{p.stderr[-3000:]}"


def _signal(p: subprocess.CompletedProcess) -> str:
    return f"signal {signal.Signals(-p.returncode).name}" if p.returncode < 0 else "no signal"


def _library(cache: str) -> str:
    return os.path.join(cache, "kernels", build.build_key(), "normlab_kernels.so")


def test_a_copied_cache_loads_without_compiling(built, tmp_path, fake_cxx):
    cache = _cache_with(built, tmp_path)
    p = _run(tmp_path, fake_cxx, cache=cache)
    _ok(p)
    assert _field(p, "IMPL") == "cpp:rows"
    assert not fake_cxx[1].exists(), "a finished build was compiled again"


def test_a_truncated_library_is_not_loaded(built, tmp_path, fake_cxx):
    """Half a library (a copy cut short) maps past its end: it must be refused before loading, not crash (SIGBUS)."""
    cache = _cache_with(built, tmp_path)
    lib = _library(cache)
    size = os.path.getsize(lib)
    mtime = os.stat(lib).st_mtime_ns
    with open(lib, "r+b") as f:
        f.truncate(size // 2)
    os.utime(lib, ns=(mtime, mtime))  # as new as it was: a build tool would see nothing to redo
    for _ in range(2):  # and every later process too
        p = _run(tmp_path, fake_cxx, cache=cache)
        _ok(p)
        assert _field(p, "IMPL") == "reference"
        assert "failed to build" in _field(p, "FAILURE")  # it tried to build a whole one, which failed here
        assert fake_cxx[1].exists()


def test_a_library_that_fails_to_load_is_rebuilt_once_then_the_fallback(built, tmp_path, fake_cxx):
    cache = _cache_with(built, tmp_path)
    lib = _library(cache)
    for name in os.listdir(os.path.dirname(lib)):  # whatever else the build left there: objects, ninja files
        if name != "normlab_kernels.so":
            os.remove(os.path.join(os.path.dirname(lib), name))
    with open(lib, "wb") as f:
        f.write(b"not a shared library\n")
    with open(lib + ".stamp", "w", encoding="utf-8") as f:  # a stamp that matches: the file passes its check
        import json

        json.dump(build._digest(lib), f)
    p = _run(tmp_path, fake_cxx, cache=cache)
    _ok(p)
    assert "failed to load" in p.stderr and "building them again" in p.stderr
    assert _field(p, "IMPL") == "reference" and "failed to build" in _field(p, "FAILURE") and fake_cxx[1].exists()


def _unwritable_home(tmp_path) -> str:
    """A home where nothing can be made, even by root: a path below a regular file (NotADirectoryError)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    return str(blocker / "home")


def test_an_unwritable_home_without_a_cache_falls_back_on_every_call(built, tmp_path, fake_cxx):
    """No cache and a home that cannot be written: the build goes to the temporary cache (said once)."""
    p = _run(tmp_path, fake_cxx, cache=None, home=_unwritable_home(tmp_path))
    _ok(p)
    assert _field(p, "IMPL") == "reference"
    assert p.stderr.count("cannot be written") == 1, p.stderr
    assert str(tmp_path / "tmpdir") in p.stderr  # where it tried to build instead
    assert "failed to build" in _field(p, "FAILURE") and fake_cxx[1].exists()


def test_an_unwritable_home_uses_a_build_in_the_temporary_cache(built, tmp_path, fake_cxx):
    tmp = tmp_path / "tmpdir"
    uid = os.getuid()
    shutil.copytree(built, tmp / f"normlab-cache-{uid}" / "kernels" / os.path.basename(built))
    p = _run(tmp_path, fake_cxx, cache=None, home=_unwritable_home(tmp_path))
    _ok(p)
    assert _field(p, "IMPL") == "cpp:rows" and not fake_cxx[1].exists()


def _listing(root: str) -> dict:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_a_read_only_cache_with_a_build_is_used_without_writing(built, tmp_path, fake_cxx):
    """Nothing is written to a cache that holds a finished build (read-only for a non-root user; root is
    only checked to write nothing)."""
    cache = _cache_with(built, tmp_path)
    for d, dirs, files in os.walk(cache):
        for name in dirs + files:
            os.chmod(os.path.join(d, name), os.stat(os.path.join(d, name)).st_mode & ~0o222)
    os.chmod(cache, 0o555)
    before = _listing(cache)
    try:
        p = _run(tmp_path, fake_cxx, cache=cache)
    finally:
        for d, dirs, _ in os.walk(cache):
            for name in dirs:
                os.chmod(os.path.join(d, name), 0o755)
        os.chmod(cache, 0o755)
    _ok(p)
    assert _field(p, "IMPL") == "cpp:rows" and not fake_cxx[1].exists()
    assert _listing(cache) == before


def test_a_lock_left_by_a_killed_build_blocks_nobody(built, tmp_path, fake_cxx):
    """A build killed by SIGTERM half-way: later processes load a finished build, or take the lock over."""
    cache = _cache_with(built, tmp_path)
    key = build.build_key()
    lock = os.path.join(cache, "kernels", key + ".lock")
    # the lock files a killed build leaves (torch's in its build directory, normlab's beside it) next to a
    # finished build: nothing waits at all
    open(os.path.join(cache, "kernels", key, "lock"), "w").close()
    with open(lock, "w") as f:
        f.write("999999999")
    p = _run(tmp_path, fake_cxx, cache=cache, timeout=30)
    _ok(p)
    assert _field(p, "IMPL") == "cpp:rows"
    # no finished build: the first build, killed while its compiler runs
    lib = _library(cache)
    shutil.move(lib, str(tmp_path / "saved.so"))
    slow = tmp_path / "slowcc"
    slow.write_text("#!/bin/sh\nsleep 60\nexit 1\n")
    slow.chmod(0o755)
    first = subprocess.Popen([sys.executable, "-c", CALL], env={**os.environ, "NORMLAB_CACHE": cache,
                                                                "CXX": str(slow), "TMPDIR": str(tmp_path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (os.path.exists(lock) and open(lock).read().strip() == str(first.pid)):
            assert time.monotonic() < deadline and first.poll() is None, "the first build never took the lock"
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # its orphaned compiler, started in its own session
        except ProcessLookupError:
            pass
        first.wait()
    assert os.path.exists(lock)  # left behind
    p = _run(tmp_path, fake_cxx, cache=cache, timeout=30)
    _ok(p)
    assert f"process {first.pid} started building the kernels and is gone" in p.stderr, p.stderr
    assert _field(p, "IMPL") == "reference"


def test_a_lock_held_by_a_live_process_is_waited_on_for_a_bounded_time(built, tmp_path, fake_cxx):
    cache = str(tmp_path / "cache")
    key = build.build_key()
    os.makedirs(os.path.join(cache, "kernels", key))
    lock = os.path.join(cache, "kernels", key + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys, time
fd = os.open({lock!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(120)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        p = _run(tmp_path, fake_cxx, cache=cache, timeout=60, extra_env={"NORMLAB_BUILD_WAIT": "2"})
        took = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    _ok(p)
    assert p.stderr.count(f"waiting for process {holder.pid}") == 1
    assert _field(p, "IMPL") == "reference" and "NORMLAB_BUILD_WAIT" in _field(p, "FAILURE")
    assert took < 30


def _checkout(tmp_path, name: str) -> str:
    """A second copy of normlab's sources (another checkout or virtual environment of the same version)."""
    root = tmp_path / name
    shutil.copytree(os.path.join(SRC, "normlab"), root / "normlab", ignore=shutil.ignore_patterns("__pycache__"))
    return str(root)


def test_two_checkouts_share_one_build(built, tmp_path, fake_cxx):
    """The cache key is the sources' content: checkouts used in turn load the same build, none recompiles."""
    cache = _cache_with(built, tmp_path)
    first, second = _checkout(tmp_path, "one"), _checkout(tmp_path, "two")
    for where in (first, second, first, None):
        p = _run(tmp_path, fake_cxx, cache=cache, pythonpath=where)
        _ok(p)
        assert _field(p, "IMPL") == "cpp:rows", p.stderr
        assert not fake_cxx[1].exists(), f"checkout {where} compiled again"
    assert stat.S_ISDIR(os.stat(cache).st_mode)

"""The Ray backend against a real local Ray (ray.init(num_cpus=2)): same records as the pool, resume, a
killed worker loses nothing.  The fake claims C99 (fast) and C97 (slow, marks its starts) live in
tests/fake_claims.py and tests/fake_slow_claims.py and reach the Ray workers through NORMLAB_EXPERIMENTS
and PYTHONPATH (passed on in the tasks' runtime environment)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend's tests need ray (pip install 'normlab[ray]')")

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A real local Ray with 2 CPUs; its workers see the fake claims and where C97 marks its starts."""
    import sys

    marks = tmp_path_factory.mktemp("marks")
    env = {"NORMLAB_EXPERIMENTS": "fake_claims,fake_slow_claims",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "FAKE_SLOW_MARKS": str(marks), "FAKE_SLOW_SLEEP": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.path.insert(0, str(TESTS))
    import fake_claims  # noqa: F401  (C99, registered in this process too)
    import fake_slow_claims  # noqa: F401  (C97)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": env})
    yield marks
    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    sys.path.remove(str(TESTS))


def _run(out, claim, backend, workers=2):
    from normlab.experiments import get
    from normlab.experiments.suite import run_missing

    exp = get(claim)
    progress = []
    summaries = run_missing([exp], "quick", str(out), workers=workers, backend=backend,
                            log=lambda s, i, n: progress.append((i, n)))
    return exp, summaries, progress


def _records(out, claim):
    return {f.name: json.loads(f.read_text()) for f in (Path(out) / "records" / claim).glob("*.json")}


def test_ray_gives_the_same_records_and_verdict_as_the_pool(local_ray, tmp_path):
    from normlab.experiments.suite import judge

    exp, summaries, progress = _run(tmp_path / "ray", "C99", "ray")
    assert len(summaries) == 6 and all(s["status"] == "ok" for s in summaries)
    assert progress[-1] == (6, 6)
    _run(tmp_path / "pool", "C99", "local")
    by_ray, by_pool = _records(tmp_path / "ray", "C99"), _records(tmp_path / "pool", "C99")
    assert set(by_ray) == set(by_pool)  # the same keys: claim, config, seed, code version
    for name in by_ray:
        assert by_ray[name]["result"]["value"] == by_pool[name]["result"]["value"]
        assert by_ray[name]["config"] == by_pool[name]["config"]
    pids = {r["result"]["pid"] for r in by_ray.values()}
    assert os.getpid() not in pids  # the runs ran in Ray's workers, not in the driver
    v_ray = judge(exp, "quick", str(tmp_path / "ray"))["verdict"]
    v_pool = judge(exp, "quick", str(tmp_path / "pool"))["verdict"]
    assert v_ray["status"] == v_pool["status"] == "supported" and v_ray["tests"] == v_pool["tests"]
    # resume: nothing is redone
    assert _run(tmp_path / "ray", "C99", "ray")[1] == []


def test_a_failed_run_is_recorded_and_retried_next_time(local_ray, tmp_path, monkeypatch):
    from normlab.experiments import get

    exp = get("C99")
    grid = exp.grid
    monkeypatch.setattr(exp, "grid", lambda mode: [(n, dict(c, fail_seed=1)) for n, c in grid(mode)])
    _, summaries, _ = _run(tmp_path, "C99", "ray")
    failed = [s for s in summaries if s["status"] == "failed"]
    assert len(failed) == 2 and all("planned failure" in s["error"] for s in failed)
    bad = [r for r in _records(tmp_path, "C99").values() if r["status"] == "failed"]
    assert len(bad) == 2 and "ZeroDivisionError" in bad[0]["error"]
    _, again, _ = _run(tmp_path, "C99", "ray")
    assert len(again) == 2  # only the failed runs are retried


def test_a_worker_killed_mid_run_loses_nothing(local_ray, tmp_path):
    import threading

    marks = local_ray
    killed = []

    def killer():
        deadline = time.time() + 60
        while time.time() < deadline:
            started = sorted(marks.iterdir())
            if started:
                pid = int(started[0].name.rsplit("-", 1)[1])
                os.kill(pid, signal.SIGKILL)  # the worker running that run dies mid-run
                killed.append(started[0].name)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    _, summaries, _ = _run(tmp_path / "out", "C97", "ray")
    t.join()
    assert killed, "no run started"
    assert [s["status"] for s in summaries] == ["ok"] * 9  # 3 configs x 3 seeds, the killed one retried by Ray
    recs = _records(tmp_path / "out", "C97")
    assert len(recs) == 9 and all(r["status"] == "ok" for r in recs.values())
    name, seed = killed[0].split("-")[:2]
    assert len([m for m in marks.iterdir() if m.name.startswith(f"{name}-{seed}-")]) >= 2  # it ran again


def test_the_cli_runs_a_report_on_ray(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "NORMLAB_EXPERIMENTS": "fake_claims",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "normlab.cli", "report", "--quick", "--claims", "C99", "--backend", "ray",
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "1 claim (quick mode): 1 supported, 0 not supported, 0 inconclusive" in p.stdout
    assert len(_records(tmp_path / "out", "C99")) == 6

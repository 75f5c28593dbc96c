"""Issue 27: the CLI as a newcomer meets it (usage of the right command, pipes, tallies, hints, Ray, kernels)."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlab.cli import _ray_address_error, build_parser, main, tally

TESTS = Path(__file__).parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_a_misspelt_option_prints_the_usage_of_its_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["report", "--quik"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: normlab report" in err and "normlab report: error: unrecognized arguments: --quik" in err
    with pytest.raises(SystemExit):
        main(["show", "C22", "--verbose"])  # --verbose is report's, not show's
    assert "usage: normlab show" in capsys.readouterr().err


def test_every_command_has_a_description():
    for name, sub in _subparsers(build_parser()).items():
        assert sub.description and len(sub.description) > 40, f"normlab {name} --help has no description"
        assert sub.description.split()[0] in sub.format_help()


def _with_closed_stdout(args: list[str], tmp_path: Path, **env_extra: str) -> subprocess.CompletedProcess:
    """Run the CLI with stdout a pipe whose reader is already gone (what `| head -1` leads to)."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           **env_extra}
    try:
        return subprocess.run([sys.executable, "-m", "normlab.cli", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path, timeout=240)
    finally:
        os.close(write)


def test_list_into_a_closed_pipe_ends_quietly(tmp_path):
    proc = _with_closed_stdout(["list", "--out", str(tmp_path / "out")], tmp_path)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


def test_report_into_a_closed_pipe_ends_quietly_and_writes_the_report(tmp_path):
    out = tmp_path / "out"
    proc = _with_closed_stdout(["report", "--quick", "--claims", "C99", "--workers", "2", "--out", str(out)],
                               tmp_path, NORMLAB_EXPERIMENTS="fake_claims")
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141
    assert (out / "index.html").is_file()


def test_report_ends_with_a_tally_and_prints_verdicts_only_when_verbose(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["report", "--quick", "--claims", "C08", "--workers", "1", "--out", out]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "1 claim (quick mode): 1 supported, 0 not supported, 0 inconclusive"
    assert lines[1].startswith(f"report: {os.path.join(out, 'index.html')}  (")
    assert f"normlab show CLAIM --quick --out {out}" in lines[1]
    assert len(lines) == 2
    assert main(["report", "--quick", "--claims", "C08", "--out", out, "--verbose"]) == 0  # nothing left to run
    verbose = capsys.readouterr().out
    assert "C08 [supported]" in verbose and "rule:" in verbose
    assert verbose.strip().splitlines()[-2] == lines[0]


def test_tally_names_the_claims_that_are_not_supported():
    def result(claim, status):
        return {"claim": claim, "verdict": {"status": status}}

    results = [result("C01", "not supported"), result("C02", "supported"), result("C03", "inconclusive"),
               result("C09", "inconclusive"), result("C04", "supported")]
    assert tally(results, "full", failed_runs=2) == (
        "5 claims (full mode): 2 supported, 1 not supported (C01), 2 inconclusive (C03, C09); "
        "2 runs failed (run the same command again to retry)")


def test_show_in_full_mode_points_at_quick_records(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["run", "C08", "--quick", "--out", out]) == 0
    capsys.readouterr()
    assert main(["show", "C08", "--out", out]) == 1
    err = capsys.readouterr().err
    assert f"C08: no records yet in {out} (full mode): run `normlab run C08 --out {out}` first" in err
    assert f"(quick-mode records are there: `normlab show C08 --quick --out {out}`)" in err
    assert main(["show", "C08", "--quick", "--out", out]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_ray_address_is_one_line_in_seconds(tmp_path, capsys):
    pytest.importorskip("ray")
    pytest.importorskip("grpc")
    address = f"ray://127.0.0.1:{_free_port()}"  # nothing listens there: refused at once
    start = time.perf_counter()
    rc = main(["run", "C08", "--quick", "--backend", "ray", "--address", address, "--out", str(tmp_path / "o")])
    took = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert rc == 2 and took < 15
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"normlab run: cannot reach the Ray cluster at {address} (connection refused within")


def test_ray_address_forms(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert _ray_address_error(None) is None  # a local Ray
    assert "expected ray://HOST:PORT or HOST:PORT, got the port 'x'" in _ray_address_error("ray://head:x")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{_free_port()}")  # a GCS address, from the environment
    assert _ray_address_error(None).startswith("cannot reach the Ray cluster at 127.0.0.1:")
    monkeypatch.setitem(sys.modules, "grpc", None)  # Ray Client without its gRPC package
    assert _ray_address_error("ray://head:10001") == (
        "--address ray://head:10001 is a Ray Client address, which needs ray[client] (its gRPC package, grpcio, "
        "is not installed): pip install 'normlab[ray]'")
    monkeypatch.setitem(sys.modules, "ray", None)
    assert _ray_address_error(None) == "--backend ray needs Ray, which is not installed: pip install 'normlab[ray]'"


def test_kernels_command_prints_the_cache(tmp_path, capsys):
    from normlab._cache import cache_dir

    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {os.path.join(cache_dir(), 'kernels')}" in out
    import normlab as nl

    rc = main(["kernels", "--build"])
    captured = capsys.readouterr()
    if nl.kernels.cpp_available():
        assert rc == 0 and "the C++ CPU kernels are built and load; cache: " in captured.out
        assert captured.out.strip().endswith(".so")
    else:  # no compiler here: the reason, exit 1
        assert rc == 1 and captured.err.startswith("normlab kernels: ")

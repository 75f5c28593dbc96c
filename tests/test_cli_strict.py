"""Issue 16: a strict, self-explaining CLI (empty claim lists, missing records, wrong path kinds, help)."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from normlab import bench
from normlab.cli import build_parser, main

ROOT = Path(__file__).parents[1]


@pytest.fixture
def no_runs(monkeypatch):
    """Running or judging anything is a failure here (an empty --claims used to run all 34 claims)."""
    import normlab.experiments.suite as suite

    def refuse(*args, **kwargs):
        raise AssertionError("the command went on to run or judge claims")

    monkeypatch.setattr(suite, "run_missing", refuse)
    monkeypatch.setattr(suite, "judge", refuse)


@pytest.mark.parametrize("argv", [["report", "--claims", ""], ["report", "--claims", " "],
                                  ["report", "--claims", ","], ["run", ""], ["run", " , "], ["show", ","]])
def test_an_empty_claim_list_is_an_error(argv, tmp_path, capsys, no_runs):
    assert main([*argv, "--quick", "--out", str(tmp_path / "out")]) == 2
    assert "no claim ids in" in capsys.readouterr().err


def test_show_without_records_says_how_to_make_them(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["show", "C22", "--quick", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"C22: no records yet in {out} (quick mode): run `normlab run C22 --quick --out {out}` first" \
        in captured.err
    assert "inconclusive" not in captured.out


def test_text_that_is_a_directory_is_named(tmp_path, capsys):
    assert main(["show", "C21", "--quick", "--text", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path} is a directory; expected a UTF-8 text file" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", [["list"], ["show", "C22", "--quick"], ["report", "--claims", "C22", "--quick"],
                                 ["run", "C22", "--quick"]])
def test_out_that_is_a_file_is_named(cmd, tmp_path, capsys, no_runs):
    f = tmp_path / "a-file"
    f.write_text("not a directory")
    assert main([*cmd, "--out", str(f)]) == 2
    assert f"--out {f} is a file; expected" in capsys.readouterr().err


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", h) for a, h in _actions(sub))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_help_and_bench_cases_lists_the_names():
    undocumented = [name for name, text in _actions(build_parser()) if not text]
    assert not undocumented, f"options without help: {undocumented}"
    cases_help = build_parser()._subparsers._group_actions[0].choices["bench"].format_help()
    for name in bench.case_names():
        assert name in " ".join(cases_help.split())
    quick_help = build_parser()._subparsers._group_actions[0].choices["report"].format_help()
    assert "2 seeds" not in quick_help  # the seed count is each claim's own


def test_bench_labels_match_their_shapes():
    for case in bench.CASES:
        for size in re.findall(r"(\d{3,})", case.name):  # a size in a label must be the input's size
            assert int(size) in case.shape and int(size) in case.quick_shape, (case.name, case.quick_shape)


def test_claims_ship_with_the_package_and_list_prints_them(tmp_path, capsys):
    assert main(["list", "--document"]) == 0
    doc = capsys.readouterr().out
    assert all(f"**C{i:02d}**" in doc for i in range(1, 35))
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "claims.md" in data["normlab.experiments"] and "py.typed" in data["normlab"]
    assert main(["list", "--out", str(tmp_path / "none-yet")]) == 0
    listing = capsys.readouterr().out
    assert "C22  " in listing and "claim: At initialization, post-LN's gradient norm" in listing


def test_mode_device_and_backend_options_are_checked(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["run", "C04", "--quick", "--mode", "paper", "--out", out]) == 2
    assert "--quick and --mode paper contradict each other" in capsys.readouterr().err
    if not __import__("torch").cuda.is_available():
        assert main(["run", "C04", "--device", "cuda", "--out", out]) == 2
        assert "CUDA is not available on this machine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "C04", "--backend", "slurm", "--out", out])
    assert "invalid choice: 'slurm'" in capsys.readouterr().err


def test_paper_mode_prints_an_estimate_before_it_starts(tmp_path, capsys):
    assert main(["run", "C05", "--mode", "paper", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "paper mode: sizes close to the papers'" in err and "C05: ~" in err and "of wall time" in err


def test_readme_points_only_at_files_in_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "shared/" not in readme and "../" not in readme  # nothing outside the repository
    paths = set(re.findall(r"`((?:src|tests|benchmarks|\.ci)/[A-Za-z0-9_./-]+)`", readme))
    paths |= {m for m in re.findall(r"\]\(([^)#:]+)\)", readme)}  # relative markdown links
    assert "benchmarks/folding.py" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"README names files that are not in the repository: {missing}"

"""The evidence engine: specs, verdict rules on synthetic records, resumable runner, CLI errors, report."""

from __future__ import annotations

import base64
import importlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normlab.cli import main
from normlab.experiments import Verdict, compare, experiment, get
from normlab.report import render

TESTS = Path(__file__).parent


def rec(name, seed, result):
    return {"name": name, "seed": seed, "status": "ok", "result": result}


# ----------------------------------------------------------------------- specs
def test_unknown_and_missing_spec_keys_are_rejected():
    good = dict(claim="C98", title="t", statement="s", setup="x", grid=lambda m: [], seeds={"quick": 1, "full": 1},
                run=print, verdict=print)
    with pytest.raises(ValueError, match=r"unknown experiment spec key\(s\) \['budget'\]"):
        experiment(**good, budget=3)
    with pytest.raises(ValueError, match=r"missing \['verdict'\]"):
        experiment(**{k: v for k, v in good.items() if k != "verdict"})
    with pytest.raises(ValueError, match="a number for quick and full mode"):
        experiment(**{**good, "seeds": {"quick": 2}})
    with pytest.raises(ValueError, match="a number for quick and full mode"):
        experiment(**{**good, "seeds": {"quick": 2, "full": 2, "huge": 9}})
    # paper mode (sizes close to the papers') takes full's seeds and sizes unless a spec names its own
    exp = experiment(**{**good, "grid": lambda m: [("a", {"m": m})]})
    assert [r.config["mode"] for r in exp.runs("paper")] == ["paper"]
    assert len(experiment(**{**good, "seeds": {"quick": 1, "full": 2, "paper": 5}}).runs("paper")) == 0
    with pytest.raises(ValueError, match="verdict status must be one of"):
        Verdict("probably", "", "")


CASE_MODULES = ("cases_axes", "cases_batchnorm", "cases_numerics", "cases_placement", "cases_stability",
                "cases_transformer", "cases_vision", "cases_family")
CLAIM_CASES = {}
for _m in CASE_MODULES:
    CLAIM_CASES.update(importlib.import_module(_m).CASES)


@pytest.mark.parametrize("claim,records,expected",
                         [(c, r, e) for c, cases in CLAIM_CASES.items() for r, e in cases],
                         ids=[f"{c}-{e}" for c, cases in CLAIM_CASES.items() for _, e in cases])
def test_claim_verdicts_follow_their_rule(claim, records, expected):
    v = get(claim).verdict(records)
    assert v.status == expected, v.summary
    assert v.rule and v.summary
    assert v.tests, "every verdict records the intervals it was computed from"
    for t in v.tests:
        assert {"estimate", "lo", "hi", "level", "n", "method", "status", "rule"} <= set(t)


def test_every_registered_claim_has_a_case_for_each_outcome():
    from normlab.experiments import all_experiments

    claims = set(all_experiments()) - {"C99"}
    assert claims <= set(CLAIM_CASES)
    missing = {c: sorted({"supported", "not supported", "inconclusive"} - {e for _, e in CLAIM_CASES[c]})
               for c in claims}
    assert not {c: m for c, m in missing.items() if m}, "claims without a case for some outcome"


# ------------------------------------------------------------------------ runner
def _cli(args, out, env_extra=None, **kw):
    env = {**os.environ, "NORMLAB_EXPERIMENTS": "fake_claims",
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "normlab.cli", *args, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_then_resume_loses_and_redoes_nothing(tmp_path):
    out = tmp_path / "out"
    p = _cli(["report", "--quick", "--claims", "C99", "--workers", "2"], out, start_new_session=True)
    records = out / "records" / "C99"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(records.glob("*.json"))) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the CLI and its workers, mid-suite
    p.communicate()
    done = {f.name: f.stat().st_mtime_ns for f in records.glob("*.json")}
    assert 2 <= len(done) < 6, done
    for f in records.glob("*.json"):  # every record is whole
        assert json.loads(f.read_text())["status"] == "ok"
    p = _cli(["report", "--quick", "--claims", "C99", "--workers", "2"], out)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    progress = re.findall(r"\[(\d+)/(\d+)\]", stderr)
    assert progress and int(progress[-1][1]) == 6 - len(done)  # only the missing runs ran
    for name, mtime in done.items():
        assert (records / name).stat().st_mtime_ns == mtime  # finished records untouched
    assert len(list(records.glob("*.json"))) == 6
    assert not list(records.glob(".tmp-*"))  # a temp file left by the kill is cleaned up on resume
    assert "1 claim (quick mode): 1 supported, 0 not supported, 0 inconclusive" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["claims"][0]["runs_finished"] == 6


def test_failed_runs_are_recorded_and_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_EXPERIMENTS", "fake_claims")
    monkeypatch.syspath_prepend(str(TESTS))
    from normlab.experiments.runner import execute_runs, load_records, pending_runs

    import fake_claims  # noqa: F401  (registers C99 here as well)

    exp = get("C99")
    monkeypatch.setattr(exp, "grid", lambda mode: [("a", {"base": 2.0, "sleep": 0.0, "fail_seed": 1})])
    summaries = execute_runs(str(tmp_path), [(exp, r) for r in exp.runs("quick")], workers=1)
    # the child process registered the original grid; the failure comes from the config we sent
    assert sorted(s["status"] for s in summaries) == ["failed", "ok", "ok"]
    failed = next(s for s in summaries if s["status"] == "failed")
    assert "planned failure" in failed["error"]
    assert len(load_records(str(tmp_path), exp, "quick")) == 2
    assert [r.seed for r in pending_runs(str(tmp_path), exp, "quick")] == [1]


# --------------------------------------------------------------------------- CLI
def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(["run", "C77", "--quick", "--out", str(tmp_path)]) == 2
    assert "unknown claim id 'C77'; implemented: C01, C02" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", "--quick", "--claims", "C18", "--out", str(blocker / "sub")]) == 2
    assert "cannot create" in capsys.readouterr().err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    assert main(["run", "C18", "--quick", "--text", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_list_and_show_without_records(tmp_path, capsys):
    c18 = get("C18")
    quick, full = len(c18.runs("quick")), len(c18.runs("full"))
    assert main(["list", "--out", str(tmp_path)]) == 0
    assert re.search(rf"C18 .*\n(.*\n)*?\s+records in .*: quick 0/{quick}, full 0/{full}", capsys.readouterr().out)
    assert main(["show", "C18", "--quick", "--out", str(tmp_path)]) == 1
    assert "no records yet" in capsys.readouterr().err


# ------------------------------------------------------------------------ report
def test_report_is_self_contained_and_images_decode(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    png = tmp_path / "p.png"
    fig.savefig(png)
    results = [{"claim": "C18", "title": "t <b>", "statement": "s", "setup": "x", "paper": "Zhang & Sennrich",
                "mode": "quick", "runs_finished": 4, "runs_expected": 4, "seeds": 2, "wall_time_s": 3.0,
                "plots": [str(png)], "plot_error": None,
                "verdict": Verdict("supported", "sum", "rule", {"x": math.pi}, "k",
                                   tests=[compare([2.0, 2.1, 2.2], [1.0, 1.1, 1.0], expect="greater", what="loss",
                                                  label_a="a", label_b="b").tests[0]],
                                   versus_paper="paper: 26.8 vs 26.6 BLEU; here: 1.52 vs 1.53 nats").to_dict()}]
    path = render(results, str(tmp_path / "report"), mode="quick", wall_time_s=12.0)
    page = Path(path).read_text()
    assert "<b>" not in page.split("<h1>")[1].split("</table>")[0].replace("<b>quick</b>", "")  # escaped
    assert "t &lt;b&gt;" in page and "Mode: <b>quick</b>" in page
    assert re.search(r"<td>loss: a - b</td><td>1.07</td><td>\[0\.\d+, 1\.\d+\]</td><td>95%</td><td>3\+3</td>"
                     r"<td>Welch t</td>", page)
    assert "Paper vs here:</b> paper: 26.8 vs 26.6 BLEU" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1
    Image.open(io.BytesIO(base64.b64decode(images[0]))).verify()
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["claims"][0]["verdict"]["status"] == "supported"


# ------------------------------------------------------------ record keys
_PLUGIN = '''
SIZES = {"quick": 3}


def _helper(x):
    return x + SIZES["quick"]


def run(config, seed):
    return {"v": _helper(seed)}


def verdict(records):
    return "rule version 1"
'''


def test_record_key_follows_the_run_code_not_the_verdict(tmp_path, monkeypatch):
    from normlab.experiments.fingerprint import run_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))

    def fingerprint(source: str) -> str:
        (tmp_path / "keyed_plugin.py").write_text(source)
        sys.modules.pop("keyed_plugin", None)
        return run_fingerprint(importlib.import_module("keyed_plugin").run)

    base = fingerprint(_PLUGIN)
    assert fingerprint(_PLUGIN.replace("rule version 1", "rule version 2")) == base  # verdict fixed: re-judge
    assert fingerprint(_PLUGIN.replace("x + SIZES", "x * SIZES")) != base  # a helper the run calls
    assert fingerprint(_PLUGIN.replace('{"quick": 3}', '{"quick": 4}')) != base  # a size table it reads


def test_exclusive_runs_go_last_and_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_EXPERIMENTS", "fake_claims")
    monkeypatch.syspath_prepend(str(TESTS))
    import dataclasses

    from normlab.experiments.runner import execute_runs

    import fake_claims  # noqa: F401

    exp = get("C99")
    alone = dataclasses.replace(exp, exclusive=True)
    jobs = [(alone, r) for r in exp.runs("quick")[:2]] + [(exp, r) for r in exp.runs("quick")[2:]]
    order = []
    execute_runs(str(tmp_path), jobs, workers=2, log=lambda s, i, n: order.append(s))
    shared = [s for s in order if (s["name"], s["seed"]) not in {(r.name, r.seed) for _, r in jobs[:2]}]
    assert order[:len(shared)] == shared  # every shared run finished before the exclusive ones began
    assert all(s["status"] == "ok" for s in order) and len(order) == len(jobs)

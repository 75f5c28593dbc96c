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

    claims = {c for c in all_experiments() if int(c[1:]) <= 38}  # not the test suite's fakes (C96-C99)
    assert claims <= set(CLAIM_CASES)
    missing = {c: sorted({"supported", "not supported", "inconclusive"} - {e for _, e in CLAIM_CASES[c]})
               for c in claims}
    assert not {c: m for c, m in missing.items() if m}, "claims without a case for some outcome"


def test_each_claim_is_one_module_found_by_walking_the_claims_package():
    import pkgutil

    from normlab.experiments import all_experiments, claims

    modules = sorted(m.name for m in pkgutil.iter_modules(claims.__path__))
    assert len(modules) == 38 and all(re.fullmatch(r"c\d\d_[a-z0-9_]+", m) for m in modules), modules
    registered = {c: e for c, e in all_experiments().items() if int(c[1:]) <= 38}  # not the fakes (C96-C99)
    assert sorted(registered) == [f"C{i:02d}" for i in range(1, 39)]
    for name in modules:
        spec = importlib.import_module(f"normlab.experiments.claims.{name}").SPEC
        assert spec.claim == "C" + name[1:3] and registered[spec.claim] is spec
        assert spec.verdict.__module__.endswith(name), "a claim's verdict lives in its own file"


def test_a_plugin_module_may_define_a_spec_instead_of_registering(tmp_path, monkeypatch):
    from normlab.experiments import registry

    (tmp_path / "plugin_with_spec.py").write_text(
        "from normlab.experiments import experiment\n"
        "SPEC = experiment(claim='C96', title='t', statement='s', setup='x', grid=lambda m: [], "
        "seeds={'quick': 1, 'full': 1}, run=print, verdict=print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NORMLAB_EXPERIMENTS", "plugin_with_spec")
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", False)
    exps = registry.all_experiments()
    assert "C96" in exps and "C22" in exps and len(exps) == 39


def test_the_record_helpers_import_neither_backend():
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "normlab" / "experiments"

    def imports(name):
        tree = ast.parse((src / f"{name}.py").read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}

    assert not imports("records") & {"runner", "ray_backend"}
    assert "records" in imports("runner") and "records" in imports("ray_backend")
    assert "runner" not in imports("ray_backend")


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
    from normlab.experiments.records import load_records, pending_runs
    from normlab.experiments.runner import execute_runs

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
    head = page.split("<h1>")[1].split("</table>")[0]
    assert "<b>" not in head.replace("<b>quick</b>", "").replace("<b>Quick mode.</b>", "")  # escaped
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


# ------------------------------------------------------- what the reader sees (issue 27)
def _first_case(claim, status="supported"):
    return next(r for r, e in CLAIM_CASES[claim] if e == status)


_NEGATIVE_ZERO = re.compile(r"(?<![\w.])-0(?![\d.eE])|(?<![\w.])-0\.0+(?![\d1-9])")


@pytest.mark.parametrize("claim", sorted(CLAIM_CASES))
def test_no_rule_summary_or_key_number_prints_minus_zero(claim):
    for records, _ in CLAIM_CASES[claim]:
        v = get(claim).verdict(records)
        for text in (v.rule, v.summary, v.key_number, *(t["rule"] for t in v.tests)):
            assert not _NEGATIVE_ZERO.search(text), text


def _overlapping_tick_labels(ax) -> bool:
    """Neighbouring x tick labels collide: boxes overlap (horizontal labels), or rotated labels sit closer than
    their line height (the boxes of rotated labels always overlap; their glyphs need only the perpendicular
    gap)."""
    import math

    labels = [lab for lab in ax.get_xticklabels() if lab.get_visible() and lab.get_text()]
    for a, b in zip(labels, labels[1:]):
        angle = math.radians(a.get_rotation() % 180)
        if angle == 0:
            if a.get_window_extent().overlaps(b.get_window_extent()):
                return True
            continue
        xa = ax.transData.transform((a.get_position()[0], 0))[0]
        xb = ax.transData.transform((b.get_position()[0], 0))[0]
        lines = max(len(a.get_text().splitlines()), len(b.get_text().splitlines()))
        height = a.get_fontsize() * ax.figure.dpi / 72 * 1.2 * lines
        if abs(xb - xa) * math.sin(angle) < height:
            return True
    return False


def test_plots_have_no_quoted_legends_and_no_overlapping_tick_labels(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    seen: dict[str, list] = {}
    current = {"claim": None}
    real = Figure.savefig

    def inspect(fig, *args, **kwargs):
        fig.canvas.draw()
        for ax in fig.axes:
            legend = ax.get_legend()
            texts = [t.get_text() for t in legend.get_texts()] if legend else []
            seen.setdefault(current["claim"], []).extend(texts)
            for quote in ("'", '"'):
                assert not any(t.startswith(quote) or t.endswith(quote) for t in texts), (current["claim"], texts)
            assert not _overlapping_tick_labels(ax), (current["claim"], [lab.get_text() for lab in ax.get_xticklabels()])
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", inspect)
    drawn = 0
    for claim in sorted(CLAIM_CASES):
        exp = get(claim)
        if exp.plot is None:
            continue
        records = _first_case(claim)
        current["claim"] = claim
        try:
            paths = exp.plot(records, exp.verdict(records), str(tmp_path / claim))
        except (KeyError, IndexError, TypeError, ValueError):  # synthetic records lack what some plots draw
            continue
        drawn += bool(paths)
    assert drawn >= 20, drawn


def test_c17_tick_labels_do_not_overlap_on_its_own_records(tmp_path):
    from normlab.experiments.claims import c17_rmsnorm_speed as c17

    records = _first_case("C17")
    assert c17.plot(records, c17.verdict(records), str(tmp_path / "C17"))  # the overlap check runs in the test above


@pytest.mark.parametrize("claim", sorted(CLAIM_CASES))
def test_every_claim_has_a_short_key_phrase_with_its_estimate_and_interval(claim):
    from normlab.experiments.verdicts import key_phrase

    for records, _ in CLAIM_CASES[claim]:
        phrase = key_phrase(get(claim).verdict(records).to_dict())
        assert len(phrase) <= 100, phrase
        assert re.search(r"\[[^\]]*,[^\]]*\]|\bexact\b|no interval|no CI", phrase), phrase


def test_quick_setups_that_differ_say_how():
    from normlab.experiments.suite import quick_differences

    c09 = quick_differences(get("C09"))
    assert "batch of 8" in c09 and "leaves out" in c09 and "per-worker 2" in c09.split("leaves out")[1]
    assert "another model" in quick_differences(get("C13"))
    assert "16 processes x 2" in quick_differences(get("C16"))  # quick: 8 x 4 only
    assert quick_differences(get("C18")) == ""  # the same configurations, only smaller


_MODE_PLUGIN = """
from normlab.experiments import Verdict, compare, experiment

def run(config, seed):
    return {"value": config["gap"] + 0.01 * seed}

def verdict(records):
    a = [r["result"]["value"] for r in records if r["name"] == "a"]
    return compare(a, [0.0] * len(a), expect="greater", what="value", label_a="a", label_b="zero", paired=True)

SPEC = experiment(claim="C95", title="mode fake", statement="a > 0", setup="none", seeds={"quick": 3, "full": 3},
                  grid=lambda mode: [("a", {"gap": 1.0 if mode == "quick" else -1.0})], run=run, verdict=verdict)
"""


def _write_records(out, exp, mode, wall=30.0):
    from normlab.experiments.records import record_path
    from normlab.train.record import write_record

    for run in exp.runs(mode):
        write_record(record_path(str(out), run, exp.code_version()),
                     {"claim": run.claim, "name": run.name, "seed": run.seed, "config": run.config, "mode": mode,
                      "status": "ok", "result": exp.run(run.config, run.seed), "wall_time_s": wall})


def test_a_quick_report_says_so_shows_full_mode_beside_it_and_marks_a_flip(tmp_path, monkeypatch):
    from normlab.experiments import registry
    from normlab.experiments.suite import judge

    (tmp_path / "mode_plugin.py").write_text(_MODE_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NORMLAB_EXPERIMENTS", "mode_plugin")
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_loaded", False)
    exp, out = get("C95"), tmp_path / "out"
    _write_records(out, exp, "quick")
    page = Path(render([judge(exp, "quick", str(out))], str(out), mode="quick", wall_time_s=2.0)).read_text()
    assert "Quick mode." in page and "(quick mode)</h1>" in page
    assert "full:</span>" not in page and "a flip" not in page  # no full-mode records yet: nothing beside
    # the header counts the compute of the runs it holds (3 x 30 s), not this invocation's 2 s
    assert "3 runs, 1.5 min of compute" in page and "this invocation took 0.0 min" in page
    _write_records(out, exp, "full")
    page = Path(render([judge(exp, "quick", str(out))], str(out), mode="quick", wall_time_s=2.0)).read_text()
    assert "full:</span>" in page and "a flip: the quick verdict differs" in page
    assert page.count("class=\"v not-supported\"") + page.count("class='v not-supported'") >= 1
    results = json.loads((out / "results.json").read_text())
    assert results["full_mode_beside"]["C95"]["verdict"]["status"] == "not supported"
    assert results["compute_s"] == pytest.approx(90.0)
    # paper column: a claim without a paper line says the source gives no figure
    assert "the source gives no figure" in page


def test_a_corrupted_record_is_reported_set_aside_and_redone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NORMLAB_EXPERIMENTS", "fake_claims")
    monkeypatch.syspath_prepend(str(TESTS))
    from normlab.experiments.records import load_records
    from normlab.experiments.suite import run_missing

    out = tmp_path / "out"
    exp = get("C99")
    assert len(run_missing([exp], "quick", str(out), workers=2)) == 6
    victim = sorted((out / "records" / "C99").glob("*.json"))[0]
    victim.write_text('{"claim": "C99", "status": "o')  # cut short
    capsys.readouterr()
    done = run_missing([exp], "quick", str(out), workers=2)
    err = capsys.readouterr().err
    assert len(done) == 1  # only that run again
    assert f"record {victim}" in err and "cannot be read" in err and "will be done again" in err
    assert (victim.parent / (victim.name + ".corrupt")).exists()
    assert json.loads(victim.read_text())["status"] == "ok" and len(load_records(str(out), exp, "quick")) == 6


def test_two_runs_on_one_output_directory_take_turns_and_say_so(tmp_path):
    import threading

    from normlab.experiments.records import output_lock

    held, release, said, order = threading.Event(), threading.Event(), [], []

    def first():
        with output_lock(str(tmp_path), say=said.append):
            held.set()
            release.wait(10)
            order.append("first done")

    def second():
        with output_lock(str(tmp_path), say=said.append):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.5)
    assert order == [] and len(said) == 1
    assert f"pid {os.getpid()}" in said[0] and "waiting for it to finish" in said[0] and str(tmp_path) in said[0]
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first done", "second in"]


def test_record_keys_cover_the_text_files_content_and_the_versions(tmp_path, monkeypatch):
    import torch

    from normlab.experiments import fingerprint
    from normlab.experiments.records import record_path
    from normlab.experiments.spec import Run

    f = tmp_path / "corpus.txt"
    f.write_text("a" * 200)
    run = Run("C18", "layernorm", {"text": str(f)}, 0)
    before = record_path("out", run, "v1")
    assert record_path("out", run, "v1") == before
    f.write_text("b" * 200)
    os.utime(f, ns=(1, 1))  # a new modification time, whatever the clock's resolution
    assert record_path("out", run, "v1") != before  # the same path, another text: another record
    plain = Run("C18", "layernorm", {}, 0)
    assert record_path("out", plain, "v1") == record_path("out", plain, "v1")

    monkeypatch.setattr(fingerprint, "_environment_cache", None)
    here = fingerprint.environment_fingerprint()
    monkeypatch.setattr(fingerprint, "_environment_cache", None)
    monkeypatch.setattr(torch, "__version__", "0.0.0+another")
    assert fingerprint.environment_fingerprint() != here
    monkeypatch.setattr(fingerprint, "_environment_cache", None)
    monkeypatch.setattr(importlib.import_module("normlab.data.text"), "default_text", lambda: "another corpus")
    other = fingerprint.environment_fingerprint()
    assert other != here
    import dataclasses

    assert dataclasses.replace(get("C18")).code_version().endswith("." + other)  # a fresh spec: no cached version

"""The evidence engine: specs, verdict rules on synthetic records, resumable runner, CLI errors, report."""

from __future__ import annotations

import base64
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
from normlab.experiments import Verdict, compare, equivalent, experiment, get
from normlab.report import render
from verdict_cases import CASES as MORE_CASES

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
    with pytest.raises(ValueError, match="a number for each mode"):
        experiment(**{**good, "seeds": {"quick": 2}})
    with pytest.raises(ValueError, match="verdict status must be one of"):
        Verdict("probably", "", "")


def test_compare_gives_each_outcome():
    assert compare([2, 2.1], [1, 1.1], expect="greater", what="x", label_a="a", label_b="b").status == "supported"
    assert compare([1, 1.1], [2, 2.1], expect="greater", what="x", label_a="a", label_b="b").status == "not supported"
    assert compare([1, 2], [1.2, 1.3], expect="greater", what="x", label_a="a", label_b="b").status == "inconclusive"
    v = compare([2, 2.1], [1, 1.1], expect="less", what="x", label_a="a", label_b="b", min_effect=5)
    assert v.status == "inconclusive" and "5" in v.rule


def test_equivalent_gives_each_outcome():
    assert equivalent([1.0, 1.02], [1.01, 1.03], what="l", label_a="a", label_b="b", tolerance=0.01).status == "supported"
    assert equivalent([1.0, 1.01], [1.5, 1.51], what="l", label_a="a", label_b="b", tolerance=0.01).status == \
        "not supported"
    assert equivalent([], [1.0], what="l", label_a="a", label_b="b", tolerance=0.01).status == "inconclusive"


# -------------------------------------------- claim verdicts on synthetic records
def _c18(ln, rms):
    return [rec("layernorm", i, {"status": "ok", "final": {"val_loss": v}}) for i, v in enumerate(ln)] + \
           [rec("rmsnorm", i, {"status": "ok", "final": {"val_loss": v}}) for i, v in enumerate(rms)]


def _c19(ratios_per_seed):
    return [rec("pre-LN LayerNorm", i, {"instruments": [{"norm_inputs": {f"blocks.{k}.norms.ln_1": v
                                                                          for k, v in enumerate(rs)}}]})
            for i, rs in enumerate(ratios_per_seed)]


def _profile(last_over_first, n=6):
    return [1.0 * last_over_first ** (k / (n - 1)) for k in range(n)]


def _c22(post, pre):
    out = []
    for group, ratios in (("post (xavier init)", post), ("pre (xavier init)", pre)):
        out += [rec(group, i, {"ffn_out": _profile(r)}) for i, r in enumerate(ratios)]
    return out


def _stream_recs(groups):
    out = []
    for name, ratios in groups.items():
        for i, r in enumerate(ratios):
            rms = [0.1] + _profile(r)
            out.append(rec(name, i, {"instruments": [{"residual_rms": {"rms": rms}}] * 2}))
    return out


def _lm(name, seed, loss, status="ok", first=4.6, **extra):
    return rec(name, seed, {"status": status, "final": {"val_loss": loss} if status == "ok" else {},
                            "first_loss": first, **extra})


def _c21(post_cost, pre_cost):
    out = []
    for placement, costs in (("post", post_cost), ("pre", pre_cost)):
        for seed, cost in enumerate(costs):
            for lr in (1e-3, 3e-3):
                out.append(_lm(f"{placement}-warmup-lr{lr:g}", seed, 2.0))
                out.append(_lm(f"{placement}-nowarmup-lr{lr:g}", seed, 2.0 + cost))
    return out


def _c20(kept_plain, kept_clip, kept_eps):
    kept = {}
    for norm in ("rmsnorm", "layernorm"):
        for eps in (1e-5, 1.0, 1e3):
            kept[f"{norm} eps={eps:g} clip=none"] = kept_plain if eps == 1e-5 else kept_eps
            kept[f"{norm} eps={eps:g} clip=10"] = kept_clip
    return [rec("outlier 1e3", s, {"kept": kept}) for s in range(2)]


def _c26(sens_none, sens_qk):
    out = []
    lrs = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    for qk, sens in (("none", sens_none), ("layernorm", sens_qk)):
        for seed, extra in enumerate(sens):
            for i, lr in enumerate(lrs):
                loss = 2.0 + (extra * len(lrs) if i == len(lrs) - 1 else 0.0)  # the mean excess equals `extra`
                out.append(_lm(f"qk-{qk}-lr{lr:g}", seed, loss, first=10.0,
                               instruments=[{"attn_logits": {"blocks.0.attn": 5.0}}]))
    return out


def _c31(pre_ok, none_ok):
    out = []
    for prefix, ok in (("pre-LN", pre_ok), ("no norm", none_ok)):
        for seed, largest in enumerate(ok):
            for sc in (1.0, 4.0, 16.0, 64.0):
                out.append(_lm(f"{prefix} x{sc:g}", seed, 2.0 if sc <= largest else 4.0))
    return out


def _c34(dyt, deepnorm):
    return [_lm("pre-LN", s, 2.0 + 0.005 * s) for s in range(2)] + \
        [_lm("DyT (pre placement)", s, dyt) for s in range(2)] + [_lm("DeepNorm post-LN", s, deepnorm) for s in range(2)]


def _c32(mup_slope, sp_slope, jitter=0.0):
    out = []
    for seed in range(2):
        for param, slope in (("muP", mup_slope + jitter * seed), ("standard", sp_slope)):
            for w in (32, 64, 128):
                r = rec(f"{param} d={w}", seed, {"logit_rms": 2.0 * (w / 32) ** slope, "stream_rms": 1.0})
                r["config"] = {"width": w}
                out.append(r)
    return out


def _groups(losses: dict[str, list[float]]):
    return [_lm(name, seed, v) for name, vals in losses.items() for seed, v in enumerate(vals)]


CLAIM_CASES = {
    "C18": [(_c18([1.50, 1.51], [1.505, 1.512]), "supported"), (_c18([1.50, 1.51], [1.70, 1.71]), "not supported")],
    "C19": [(_c19([[0.02, 0.05], [0.03, 0.04]]), "supported"), (_c19([[0.6, 0.7], [0.65, 0.5]]), "not supported"),
            (_c19([[0.05, 0.3], [0.05, 0.1]]), "inconclusive")],
    "C22": [(_c22([1.8, 1.9], [1.0, 1.05]), "supported"), (_c22([1.0, 1.02], [0.3, 0.32]), "not supported"),
            (_c22([1.3, 1.9], [1.0, 1.05]), "inconclusive")],
    "C23": [(_stream_recs({"pre": [3.0, 3.2], "post": [1.0, 1.05]}), "supported"),
            (_stream_recs({"pre": [1.0, 1.05], "post": [3.0, 3.2]}), "not supported"),
            (_stream_recs({"pre": [1.5, 3.0], "post": [1.4, 1.45]}), "inconclusive")],
    "C25": [(_stream_recs({"none": [30, 35], "pre": [2, 2.2]}), "supported"),
            (_stream_recs({"none": [1.0, 1.1], "pre": [2, 2.2]}), "not supported"),
            (_stream_recs({"none": [2.0, 9.0], "pre": [2, 2.2]}), "inconclusive")],
    "C20": [(_c20(0.01, 0.9, 0.01), "supported"), (_c20(0.8, 0.9, 0.8), "not supported")],
    "C21": [(_c21([0.5, 0.6], [0.0, 0.01]), "supported"), (_c21([0.0, 0.01], [0.5, 0.6]), "not supported"),
            (_c21([0.0, 0.5], [0.1, 0.11]), "inconclusive")],
    "C24": [(_groups({"pre": [2.2, 2.21], "post": [2.0, 2.01]}), "supported"),
            (_groups({"pre": [2.0, 2.01], "post": [2.2, 2.21]}), "not supported"),
            (_groups({"pre": [2.0, 2.3], "post": [2.1, 2.11]}), "inconclusive")],
    "C26": [(_c26([0.5, 0.6], [0.05, 0.06]), "supported"), (_c26([0.05, 0.06], [0.5, 0.6]), "not supported"),
            (_c26([0.1, 0.6], [0.2, 0.21]), "inconclusive")],
    "C27": [(_groups({"mixed pre/post": [2.5, 2.51], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}), "supported"),
            (_groups({"mixed pre/post": [1.8, 1.81], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}),
             "not supported"),
            (_groups({"mixed pre/post": [1.9, 2.2], "all pre": [2.0, 2.01], "all post": [2.2, 2.2]}),
             "inconclusive")],
    "C31": [(_c31([64.0, 64.0], [1.0, 4.0]), "supported"), (_c31([1.0, 1.0], [16.0, 64.0]), "not supported"),
            (_c31([4.0, 64.0], [4.0, 4.0]), "inconclusive")],
    "C34": [(_c34(2.01, 2.02), "supported"), (_c34(2.5, 2.0), "not supported")],
    "C32": [(_c32(0.0, 0.5), "supported"), (_c32(0.8, 0.9), "not supported"), (_c32(0.2, 0.5, jitter=0.2), "inconclusive")],
    **MORE_CASES,
}


@pytest.mark.parametrize("claim,records,expected",
                         [(c, r, e) for c, cases in CLAIM_CASES.items() for r, e in cases],
                         ids=[f"{c}-{e}" for c, cases in CLAIM_CASES.items() for _, e in cases])
def test_claim_verdicts_follow_their_rule(claim, records, expected):
    v = get(claim).verdict(records)
    assert v.status == expected, v.summary
    assert v.rule and v.summary


def test_c34_key_number_names_each_variant_with_its_loss():
    key = get("C34").verdict(_c34(2.5, 2.0)).key_number
    assert key == "DyT 2.5, DeepNorm post-LN 2 vs pre-LN 2"


def test_every_registered_claim_has_verdict_cases():
    from normlab.experiments import all_experiments

    assert set(all_experiments()) <= set(CLAIM_CASES) | {"C99"}


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
    assert "C99 [supported]" in stdout
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
    assert main(["list", "--out", str(tmp_path)]) == 0
    assert re.search(r"C18 .*\n\s+records in .*: quick 0/4, full 0/6", capsys.readouterr().out)
    assert main(["show", "C18", "--quick", "--out", str(tmp_path)]) == 0
    assert "C18 [inconclusive]" in capsys.readouterr().out


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
                "verdict": Verdict("supported", "sum", "rule", {"x": math.pi}, "k").to_dict()}]
    path = render(results, str(tmp_path / "report"), mode="quick", wall_time_s=12.0)
    page = Path(path).read_text()
    assert "<b>" not in page.split("<h1>")[1].split("</table>")[0].replace("<b>quick</b>", "")  # escaped
    assert "t &lt;b&gt;" in page and "Mode: <b>quick</b>" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 1
    Image.open(io.BytesIO(base64.b64decode(images[0]))).verify()
    data = json.loads((tmp_path / "report" / "results.json").read_text())
    assert data["claims"][0]["verdict"]["status"] == "supported"

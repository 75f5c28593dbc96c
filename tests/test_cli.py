"""The normlab command line: bench runs and prints its table; bad arguments get clear errors."""

from __future__ import annotations

import json

import pytest

from normlab.cli import main


def test_bench_quick_prints_ratios_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-compile", "--repeats", "2", "--cases", "LayerNorm,RMSNorm",
                 "--silent", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/torch" in text and "LayerNorm" in text and "RMSNorm vs LayerNorm, side by side" in text
    result = json.loads(out.read_text())
    assert {r["case"] for r in result["rows"]} == {"LayerNorm", "RMSNorm"}
    for r in result["rows"]:
        assert r["normlab_ms"] > 0 and r["torch_ms"] > 0 and r["copy_ms"] > 0
        assert r["vs_torch"] == pytest.approx(r["normlab_ms"] / r["torch_ms"])
    # the side-by-side group: both dtypes, both passes, the ratios from its own three times
    pairs = result["rms_vs_ln"]
    assert sorted((q["dtype"], q["passes"]) for q in pairs) == [("bfloat16", "fwd"), ("bfloat16", "fwd+bwd"),
                                                                ("float32", "fwd"), ("float32", "fwd+bwd")]
    for q in pairs:
        assert q["rms_vs_torch_ln"] == pytest.approx(q["normlab_rms_ms"] / q["torch_ln_ms"])
        assert q["rms_vs_normlab_ln"] == pytest.approx(q["normlab_rms_ms"] / q["normlab_ln_ms"])
        assert f"{q['rms_vs_torch_ln']:.2f}x torch LayerNorm" in text


def test_bench_unknown_case_and_bad_json_dir(tmp_path, capsys):
    assert main(["bench", "--quick", "--no-compile", "--cases", "Nope", "--silent"]) == 2
    assert "unknown bench case(s) ['Nope']" in capsys.readouterr().err
    assert main(["bench", "--quick", "--json", str(tmp_path / "missing" / "x.json")]) == 2
    assert "not a writable directory" in capsys.readouterr().err


def test_bad_numbers_are_refused(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--repeats", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_with_compile_anchor(capsys):
    assert main(["bench", "--quick", "--repeats", "2", "--cases", "RMSNorm", "--silent"]) == 0
    text = capsys.readouterr().out
    row = next(line for line in text.splitlines() if line.startswith("RMSNorm") and "fwd+bwd" in line)
    assert row.split()[5] != "-"  # the compiled column holds a time


def _fake_result(ratios: list[float]) -> dict:
    rows = [{"case": "LayerNorm", "shape": [2, 3], "dtype": "float32", "passes": "fwd", "path": "cpp:rows",
             "copy_ms": 1.0, "torch_ms": 2.0, "compiled_ms": None, "normlab_ms": 2.0 * r, "spread": {},
             "vs_torch": r, "vs_compiled": None, "vs_copy": 2.0 * r} for r in ratios]
    return {"env": {"torch": "x", "threads": 2, "repeats": 3, "quick": True, "dtypes": ["float32"]}, "rows": rows}


def test_combine_takes_medians_over_processes_and_keeps_the_range():
    from normlab import bench

    combined = bench.combine([_fake_result([r]) for r in (0.9, 1.3, 1.0)])
    (row,) = combined["rows"]
    assert row["vs_torch"] == pytest.approx(1.0)  # the median ratio, not the mean (1.067) nor the first
    assert row["vs_torch_range"] == [0.9, 1.3] and row["per_process"] == [0.9, 1.3, 1.0]
    assert row["normlab_ms"] == pytest.approx(2.0) and combined["env"]["processes"] == 3
    assert "medians over 3 fresh processes" in bench.format_table(combined)
    assert "0.90-1.30" in bench.format_table(combined)


def test_combine_takes_the_side_by_side_group_over_processes():
    from normlab import bench

    def one(r):
        res = _fake_result([1.0])
        res["rms_vs_ln"] = [{"dtype": "float32", "shape": [2, 3], "passes": "fwd+bwd", "torch_ln_ms": 2.0,
                             "normlab_ln_ms": 2.0, "normlab_rms_ms": 2.0 * r, "rms_vs_torch_ln": r,
                             "rms_vs_normlab_ln": r}]
        return res
    combined = bench.combine([one(r) for r in (0.8, 1.1, 0.9)])
    (q,) = combined["rms_vs_ln"]
    assert q["rms_vs_torch_ln"] == pytest.approx(0.9) and q["rms_vs_torch_ln_range"] == [0.8, 1.1]
    assert q["passes"] == "fwd+bwd" and q["shape"] == [2, 3]
    assert "0.90x torch LayerNorm (0.80-1.10)" in bench.format_table(combined)


def test_bench_in_fresh_processes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--no-compile", "--repeats", "1", "--cases", "LayerNorm", "--dtypes", "float32",
                 "--processes", "2", "--threads", "1", "--silent", "--json", str(out)]) == 0
    assert "/torch range" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["env"]["processes"] == 2 and result["env"]["threads"] == 1
    assert all(len(r["per_process"]) == 2 for r in result["rows"])


def test_bench_rounds_vary_each_variants_predecessor():
    """Each round times every variant once in a fresh order, so no variant always follows the same one."""
    from normlab.bench import _interleaved

    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in ("copy", "torch", "normlab", "compiled")}
    out = _interleaved(fns, repeats=24, warmup=1)
    assert set(out) == set(fns)
    timed = calls[len(fns):]  # after the warm-up round
    assert len(timed) == 24 * len(fns)
    rounds = [timed[i:i + len(fns)] for i in range(0, len(timed), len(fns))]
    assert all(sorted(r) == sorted(fns) for r in rounds), "a round must time every variant once"
    before = {n: {timed[i - 1] for i in range(1, len(timed)) if timed[i] == n} for n in fns}
    assert all(p >= set(fns) - {n} for n, p in before.items()), before  # every other variant precedes it

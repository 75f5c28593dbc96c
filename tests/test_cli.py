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
    assert "/torch" in text and "LayerNorm" in text and "torch RMSNorm / torch LayerNorm" in text
    result = json.loads(out.read_text())
    assert {r["case"] for r in result["rows"]} == {"LayerNorm", "RMSNorm"}
    for r in result["rows"]:
        assert r["normlab_ms"] > 0 and r["torch_ms"] > 0 and r["copy_ms"] > 0
        assert r["vs_torch"] == pytest.approx(r["normlab_ms"] / r["torch_ms"])


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

"""The side-by-side mode of the bench (one process, torch's layer and normlab's interleaved): its shape, not its speed."""

from __future__ import annotations

import pytest

from normlab import bench


def test_side_by_side_rows_and_table():
    result = bench.run_bench_processes(1, side_by_side=True, quick=True, repeats=2,
                                       cases=["LayerNorm-wide", "RMSNorm-wide", "GroupNorm(32)"], dtypes=["float32"])
    assert result["env"]["mode"] == "side-by-side"
    rows = {(r["case"], r["passes"]) for r in result["rows"]}
    assert rows == {(c, p) for c in ("LayerNorm-wide", "RMSNorm-wide", "GroupNorm(32)") for p in ("fwd", "fwd+bwd")}
    for r in result["rows"]:
        assert r["torch_ms"] > 0 and r["normlab_ms"] > 0
        assert r["vs_torch"] == pytest.approx(r["normlab_ms"] / r["torch_ms"])
    assert [(q["shape"], q["passes"]) for q in result["rms_vs_ln"]] == [([256, 1024], "fwd"), ([256, 1024], "fwd+bwd")]
    table = bench.format_table(result)
    assert "side by side in one process" in table and "normlab RMSNorm vs torch LayerNorm" in table
    assert "LayerNorm-wide" in table and "256x1024" in table


def test_side_by_side_refuses_several_processes():
    with pytest.raises(ValueError, match="side-by-side mode times one process"):
        bench.run_bench_processes(3, side_by_side=True, quick=True, cases=["LayerNorm"])

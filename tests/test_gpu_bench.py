"""The GPU bench's parts that need no GPU: shapes, the byte formula, the table, the refusal without CUDA.

The timing loop itself runs here on CPU tensors at a tiny size (the triton variant then takes the CPU
path: this checks the plumbing, not a speed).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from normlab import bench_gpu as gpu_norms
from normlab.cli import main as cli_main

ROOT = Path(__file__).parents[1]


def test_shapes_cover_the_issue_widths_at_2_to_the_28_elements():
    got = gpu_norms.shapes()
    assert [n for _, n in got] == [1024, 4096, 8192, 16384, 32768, 65536, 131072, 262144]
    assert all(m * n == 2 ** 28 for m, n in got)
    assert gpu_norms.shapes([3], total=2) == [(1, 3)]  # at least one row


def test_bytes_moved_formula():
    M, N = 1000, 4096
    big = M * N * 2
    assert gpu_norms.bytes_moved("LayerNorm", "fwd", M, N) == 2 * big + 2 * N * 2
    assert gpu_norms.bytes_moved("LayerNorm", "bwd", M, N) == 3 * big + 3 * N * 2
    assert gpu_norms.bytes_moved("RMSNorm", "fwd", M, N) == 2 * big + N * 2
    assert gpu_norms.bytes_moved("RMSNorm", "bwd", M, N) == 3 * big + 2 * N * 2
    assert gpu_norms.bytes_moved("add+RMSNorm", "fwd", M, N) == 4 * big + N * 2
    assert gpu_norms.bytes_moved("add+RMSNorm", "bwd", M, N) == 4 * big + 2 * N * 2
    assert gpu_norms.bytes_moved("RMSNorm", "fwd", M, N, elem=4, param_elem=4) == 2 * M * N * 4 + N * 4
    with pytest.raises(ValueError, match="case must be one of"):
        gpu_norms.bytes_moved("BatchNorm", "fwd", M, N)


def test_table_ratios_and_missing_anchors():
    row = {"case": "RMSNorm", "N": 4096, "M": 65536, "pass": "fwd",
           "tbps": {"copy": 3.0, "torch": 1.5, "compile": 2.0, "normlab": 2.4},
           "normlab_vs_torch_max_abs_diff": 0.0078}
    result = {"env": {"device": "X", "torch": "t", "triton": "3.9.0", "dtype": "torch.bfloat16", "total": 2 ** 28,
                      "rounds": 3, "reps": 10}, "rows": [row]}
    table = gpu_norms.format_table(result)
    line = table.splitlines()[-1].split()
    assert line[:4] == ["RMSNorm", "fwd", "4096", "65536"]
    assert line[4:9] == ["3.00", "1.50", "2.00", "-", "2.40"]  # no liger: a dash, not a number
    assert line[9:12] == ["1.60", "1.20", "-"]  # normlab's bandwidth over torch's and compile's
    assert line[12] == "7.8e-03"
    assert "bytes a pass must move" in table


def test_the_timing_loop_runs_on_cpu_at_a_tiny_size():
    logged = []
    result = gpu_norms.run(ns=[64], cases=["LayerNorm", "add+RMSNorm"], total=256, rounds=1, reps=1,
                           compile_=False, device="cpu", dtype=torch.float32, log=logged.append)
    rows = result["rows"]
    assert [(r["case"], r["pass"]) for r in rows] == [("LayerNorm", "fwd"), ("LayerNorm", "bwd"),
                                                      ("add+RMSNorm", "fwd"), ("add+RMSNorm", "bwd")]
    for r in rows:
        assert set(r["tbps"]) == {"copy", "torch", "normlab"}  # no liger on CPU, no compile asked
        assert all(v > 0 for v in r["tbps"].values())
        assert r["bytes"] == gpu_norms.bytes_moved(r["case"], r["pass"], 4, 64, 4, 4)
    assert rows[0]["normlab_vs_torch_max_abs_diff"] < 1e-5  # the same numbers as torch's layer
    assert len(logged) == 4


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_main_refuses_without_cuda(capsys):
    assert gpu_norms.main(["--ns", "1024"]) == 2
    assert "needs a CUDA device: torch.cuda.is_available() is False" in capsys.readouterr().err


def test_static_table_compiles_without_a_gpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    pytest.importorskip("triton")
    rows = gpu_norms.static_rows(ns=[8192])
    assert [(r["pass"], r["case"]) for r in rows] == [(p, c) for p in ("fwd", "bwd") for c in gpu_norms.CASES]
    assert all(r["held"] and r["block"] == 8192 and r["warps"] == 32 for r in rows)
    table = gpu_norms.format_static(rows)
    assert "| fwd | 8192 | registers | 8192 | 32 |" in table
    if rows[0]["reg"] is not None:  # cuobjdump found: the forward does not spill
        assert all(r["stack"] == 0 for r in rows if r["pass"] == "fwd")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cli_bench_device_cuda_refuses_without_cuda_and_names_cpu_only_options(capsys):
    assert cli_main(["bench", "--device", "cuda", "--quick"]) == 2
    assert "the GPU bench needs a CUDA device" in capsys.readouterr().err
    assert cli_main(["bench", "--device", "cuda", "--cases", "LayerNorm", "--processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "normlab bench: --cases, --processes apply to the CPU bench; with --device cuda give --quick" in err


def test_the_script_is_the_module():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_norms.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--static" in out and "--no-compile" in out

"""The scripts in examples/ run as their docstrings say, and do what they claim."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {"convert_and_fold", "my_train", "doctor_my_model", "my_claims"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_convert_and_fold(capsys):
    result = _load("convert_and_fold").main(steps=5)
    assert result["convert_difference"] == 0.0  # the same tensors, the same outputs
    assert result["folded"] == 5 and result["left"] == 0  # every BatchNorm follows a conv
    assert result["folded_difference"] < 1e-4
    assert result["kept"] == []  # nothing of normlab left after to_torch
    out = capsys.readouterr().out
    assert "fold_batchnorm: 5 of 5 BatchNorms folded" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_with_syncbatchnorm_matches_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torch installs the torchrun command"
    steps = ["--steps", "6", "--batch", "32"]
    alone = _load("my_train").main([*steps, "--record", str(tmp_path / "one.json")])
    proc = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_port", str(_free_port()),
                           str(EXAMPLES / "my_train.py"), *steps, "--record", str(tmp_path / "two.json")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es), per-process batch 16, SyncBatchNorm: ok" in proc.stdout
    two = json.loads((tmp_path / "two.json").read_text())
    assert two["config"]["train"]["sync_batchnorm"] is True
    one_losses = [m["loss"] for m in alone["metrics"]]
    two_losses = [m["loss"] for m in two["metrics"]]
    assert len(one_losses) == len(two_losses) > 0
    assert max(abs(a - b) for a, b in zip(one_losses, two_losses)) < 1e-4  # SyncBN: the global batch's stats


def test_doctor_on_a_users_model(capsys):
    from normlab.cli import main

    report = _load("doctor_my_model").main()
    assert {"bn-momentum-convention", "last-dim-trap", "bias-before-norm", "dropout-before-bn"} <= \
        set(report["as written"])
    assert report["fixed"] == []
    capsys.readouterr()
    assert main(["doctor", f"{EXAMPLES / 'doctor_my_model.py'}:build", "--input-shape", "16,3,32,32"]) == 1
    assert "bn-momentum-convention" in capsys.readouterr().out


def test_a_custom_claim_through_the_plugin_variable(tmp_path):
    env = {**os.environ, "NORMLAB_EXPERIMENTS": "my_claims",
           "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "normlab.cli", "run", "C90", "--quick", "--workers", "1",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "C90 [supported] RMSNorm does not re-center" in proc.stdout
    assert "RMSNorm - LayerNorm = 0.9" in proc.stdout  # the offset survives RMSNorm: |row mean| ~ 3 / sqrt(10)
    records = list((tmp_path / "out" / "records").rglob("*.json"))
    assert len(records) == 8  # 2 configurations x 4 quick seeds


@pytest.mark.parametrize("name", ["convert_and_fold", "my_train", "doctor_my_model", "my_claims"])
def test_examples_have_a_usage_docstring(name):
    doc = _load(name).__doc__
    assert doc and ("python examples/" in doc or "normlab " in doc or "torchrun" in doc)

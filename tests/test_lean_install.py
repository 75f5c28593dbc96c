"""The lean install (`pip install normlab`, no extras): the layers work, the suite's commands name their extra.

The core depends on torch, numpy and ninja only.  The first test runs a fresh interpreter whose
only site-packages is a copy (links) of this one's without the packages of the ``suite`` and
``ray`` extras, so it checks what a lean install meets without building one; ``test_a_fresh_venv_without_extras``
(slow) builds a real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXTRAS_ONLY = ["sklearn", "scipy", "mnist1d", "requests", "matplotlib", "rich", "ray", "grpc", "triton", "liger_kernel"]
EXTRA_DISTS = ["scikit_learn", "mpl_toolkits", "grpcio"]  # distribution or package names of the same


def _lean_site(tmp_path: Path) -> Path:
    """A copy of this interpreter's site-packages (as links) without the extras' packages."""
    import site

    lean = tmp_path / "site"
    lean.mkdir()
    for base in site.getsitepackages():
        for entry in Path(base).iterdir():
            top = entry.name.split("-")[0].split(".")[0].lower()
            if top in EXTRAS_ONLY or top in EXTRA_DISTS or entry.suffix == ".pth" or top == "__editable__":
                continue  # the extras' packages, and the .pth files (normlab's sources come by PYTHONPATH)
            if not (lean / entry.name).exists():
                (lean / entry.name).symlink_to(entry)
    return lean


LEAN = """
import contextlib, io, sys
import torch
import normlab as nl

x4 = torch.randn(4, 8, 6, 6, requires_grad=True)
x3 = torch.randn(2, 5, 8, requires_grad=True)
layers = [
    (nl.Norm(8, keep_dims=(1,), param_dims=(1,)), x4), (nl.BatchNorm(8), x4), (nl.BatchNorm2d(8), x4),
    (nl.BatchRenorm(8), x4), (nl.GhostBatchNorm(8, virtual_batch_size=2), x4), (nl.InstanceNorm2d(8), x4),
    (nl.GroupNorm(2, 8), x4), (nl.LayerNorm((8, 6, 6)), x4), (nl.LayerNorm2d(8), x4),
    (nl.FilterResponseNorm(8), x4), (nl.EvoNormS0(8, groups=2), x4), (nl.EvoNormB0(8), x4),
    (nl.SyncBatchNorm(8), x4), (nl.WSConv2d(8, 8, 3), x4),
    (nl.LayerNorm(8), x3), (nl.RMSNorm(8), x3), (nl.DyT(8), x3), (nl.ScaleNorm(8), x3),
    (nl.BatchNorm(8, channel_dim=-1), x3),
]
for layer, x in layers:
    y = layer(x)
    y.square().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all(), type(layer).__name__
    x.grad = None
model = nl.fold_batchnorm(nl.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))).eval())
diagnosis = nl.doctor(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)))
print("diagnosis:", str(diagnosis).splitlines()[0])
print("coloured:", diagnosis.render(color=True).splitlines()[0])  # a terminal without rich: plain text

from normlab.models import GPT, GPTConfig
from normlab.train import LMTask, TrainConfig, train
from normlab.data import digits, text
corpus = text()
gpt = GPT(GPTConfig(n_layer=1, d_model=16, n_head=2, block_size=8, vocab_size=corpus.vocab_size))
record = train(gpt, LMTask(corpus, block_size=8, batch_size=2), TrainConfig(steps=2, lr=1e-3, progress=True))
assert record["status"] == "ok", record["status"]
try:
    digits()
except ImportError as e:
    print("digits:", e)

from normlab.cli import main
for argv in (["report", "--quick"], ["run", "C08", "--quick"], ["show", "C08"]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv + ["--out", "lean-out"])
    print(f"rc {rc}:", err.getvalue().strip())
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in EXTRAS_ONLY))
"""


def test_every_layer_works_without_the_extras_and_the_suite_names_its_extra(tmp_path):
    # -S: no site-packages but the lean copy (PYTHONPATH) and normlab's sources.  The reference path:
    # torch's headers have another path through the links, so ninja would rebuild the C++ kernels
    # into the shared cache (the fresh venv of the slow test builds and uses them)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NORMLAB_KERNELS": "reference",
           "PYTHONPATH": os.pathsep.join([str(_lean_site(tmp_path)), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-S", "-c", f"EXTRAS_ONLY = {EXTRAS_ONLY!r}\n" + LEAN], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "diagnosis: normlab doctor:" in out and "coloured: normlab doctor:" in out
    assert ("digits: normlab.data.digits() needs scikit-learn, which is not installed: pip install 'normlab[suite]'"
            in out)
    for cmd in ("report", "run", "show"):
        assert (f"rc 2: normlab {cmd}: the evidence suite needs packages that are not installed (scikit-learn, scipy, "
                f"mnist1d, requests, matplotlib): pip install 'normlab[suite]'") in out
    assert "loaded: []" in out
    assert not (tmp_path / "lean-out").exists()


def test_the_core_dependencies_are_the_lean_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = sorted(d.split(">")[0].split("=")[0].split("[")[0] for d in project["dependencies"])
    assert names == ["ninja", "numpy", "torch"]
    extras = project["optional-dependencies"]
    suite = {d.split(">")[0].split("[")[0] for d in extras["suite"]}
    assert {"scikit-learn", "scipy", "mnist1d", "requests", "matplotlib", "rich"} <= suite
    assert any(d.startswith("ray[client]") for d in extras["ray"])
    # the lock installs everything (the README's commands): every extra's packages are pinned there
    lock = {line.split("==")[0].lower().replace("_", "-") for line in
            (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    for extra in ("suite", "ray", "docs", "test", "gpu"):
        for dep in extras[extra]:
            name = dep.split(">")[0].split("=")[0].split("[")[0].lower()
            assert name in lock, f"{name} (normlab[{extra}]) is not pinned in requirements.lock"
    assert "grpcio" in lock  # ray[client]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # installs torch and builds the kernels: minutes
def test_a_fresh_venv_without_extras(tmp_path):
    """`pip install .` into a fresh venv (packages from the configured index): import, a layer, the hint."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    # no extras; the lock only as constraints (the versions CI tests, not more packages)
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT), "-c", str(ROOT / "requirements.lock")],
                   check=True, timeout=1200, capture_output=True)
    env = {**os.environ, "NORMLAB_CACHE": str(tmp_path / "cache")}  # its own kernel build (another torch path)
    script = ("import torch, normlab as nl; x = torch.randn(2, 8); layer = nl.LayerNorm(8); y = layer(x); "
              "print('ok', tuple(y.shape), nl.kernels.implementation(layer, x))")
    assert "ok (2, 8) cpp:rows" in subprocess.run([str(py), "-c", script], capture_output=True, text=True,
                                                  check=True, timeout=600, env=env).stdout
    proc = subprocess.run([str(venv / "bin" / "normlab"), "report", "--quick", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "pip install 'normlab[suite]'" in proc.stderr, proc.stderr

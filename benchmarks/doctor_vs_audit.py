"""normlab doctor vs torch-audit on the same planted bugs and the same clean models.

Usage::

    NORMLAB_CACHE=... HF_HUB_OFFLINE=1 python benchmarks/doctor_vs_audit.py [--json out.json] [--fast]

torch-audit (PyPI ``torch-audit``, "The Linter for PyTorch") is not a dependency of normlab: install it by hand
(``pip install torch-audit==0.3.0``); without it the script says so and exits 0 after the doctor's half.

What is compared:

- **Planted bugs**: every case of ``tests/doctor_zoo.py``'s ``BUGS`` (a model with one bug and the same model
  fixed).  A tool *finds* a bug when it gives a finding of severity warning or more on the buggy model that it does
  not give on the fixed twin (compared by (rule or check id, module)): a finding the bug caused.  For the doctor
  the planted (check, module) must also be among them.
- **Clean models**: the Hugging Face architectures of ``tests/doctor_hf.py`` (tiny configs, random weights).  Every
  error and warning there is counted; for the doctor those listed as true in ``doctor_hf.EXPECTED`` are counted
  apart (the Keras momentum of Hugging Face's MobileNetV2 and EfficientNet).

Each tool sees the model in training mode, the example inputs, the optimizer where the case has one, one
forward + backward (+ optimizer step for torch-audit's optimizer phase), on a deep copy of the model.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import warnings
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import doctor_hf  # noqa: E402
import doctor_zoo  # noqa: E402

import normlab as nl  # noqa: E402
from normlab.doctor.trace import primary_output  # noqa: E402


def _doctor_found(case) -> set[tuple[str, str]]:
    d = nl.doctor(case.model, case.inputs, case.kwargs, optimizer=case.optimizer, causal=case.causal,
                  train_step=True, scheduler=case.scheduler)
    return {(f.check, f.module) for f in d.findings if f.severity in ("error", "warning")}


def _audit_found(case) -> set[tuple[str, str]]:
    """torch-audit's static, init, forward, backward and optimizer phases on one step of the case's model."""
    from torch_audit import audit_dynamic

    model = copy.deepcopy(case.model)
    opt = case.optimizer
    if opt is not None:  # the same optimizer settings, on the copy's parameters
        groups = []
        ids = {id(p): p2 for p, p2 in zip(case.model.parameters(), model.parameters())}
        for g in opt.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": [ids[id(p)] for p in g["params"] if id(p) in ids]})
        opt = type(opt)(groups)
    args = case.inputs if isinstance(case.inputs, tuple) else (case.inputs,) if case.inputs is not None else ()
    found: set[tuple[str, str]] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with audit_dynamic(model, optimizer=opt, every_n_steps=1, suppress_internal_errors=True) as auditor:
            out = auditor.forward(*args, **case.kwargs)
            y = primary_output(out)
            if y is not None and y.requires_grad:
                auditor.backward(y.float().square().mean())
                if opt is not None:
                    auditor.optimizer_step()
            result = auditor.finish()
    for f in result.findings:
        if str(f.severity.value) in ("WARN", "ERROR", "FATAL") and not f.suppressed:
            found.add((f.rule_id, f.module_path or ""))
    return found


def _safe(fn, case) -> tuple[set[tuple[str, str]] | None, str]:
    try:
        return fn(case), ""
    except Exception as e:  # noqa: BLE001 -- a tool that crashes on a model finds nothing there
        return None, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def planted(tools: dict) -> list[dict]:
    rows = []
    for name, factory in doctor_zoo.BUGS.items():
        row: dict[str, Any] = {"bug": name, "planted": list(factory(fixed=False).expect)}
        for tool, fn in tools.items():
            bug, err = _safe(fn, factory(fixed=False))
            twin, err2 = _safe(fn, factory(fixed=True))
            caused = sorted((bug or set()) - (twin or set()))
            hit = bool(caused)
            if tool == "doctor":
                hit = tuple(row["planted"][:2]) in set(caused)
            row[tool] = {"found": hit, "caused": caused, "crash": err or err2}
        rows.append(row)
        print(f"{name:36s} " + "  ".join(f"{t}={'yes' if row[t]['found'] else 'no '}" for t in tools), flush=True)
    return rows


def clean(tools: dict, names: list[str]) -> list[dict]:
    import transformers as tf

    tf.logging.set_verbosity_error()
    rows = []
    for name in names:
        model, args, kwargs = doctor_hf.MODELS[name](tf)
        case = doctor_zoo.Case(model, args, kwargs)
        row: dict[str, Any] = {"model": name}
        for tool, fn in tools.items():
            t0 = time.perf_counter()
            got, err = _safe(fn, case)
            true = doctor_hf.EXPECTED.get(name, {}) if tool == "doctor" else {}
            listed = [f for f in sorted(got or set()) if f not in true and (f[0], "*") not in true]
            row[tool] = {"alarms": listed, "true": sorted(set(got or set()) - set(listed)), "crash": err,
                         "seconds": round(time.perf_counter() - t0, 2)}
        rows.append(row)
        print(f"{name:14s} " + "  ".join(f"{t}: {len(row[t]['alarms'])} alarms" + (" CRASH" if row[t]["crash"] else "")
                                          for t in tools), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument("--fast", action="store_true", help="only the clean models of the default test run")
    a = p.parse_args(argv)
    tools: dict = {"doctor": _doctor_found}
    try:
        import torch_audit

        tools["torch-audit"] = _audit_found
        audit_version = torch_audit.__version__
    except ImportError:
        audit_version = None
        print("torch-audit is not installed (pip install torch-audit==0.3.0): only the doctor's half runs")
    torch.manual_seed(0)
    bugs = planted(tools)
    names = list(doctor_hf.FAST) if a.fast else list(doctor_hf.MODELS)
    models = clean(tools, names)
    print()
    print(f"planted bugs found ({len(bugs)} bugs):")
    for t in tools:
        print(f"  {t}: {sum(r[t]['found'] for r in bugs)}; crashed on {sum(bool(r[t]['crash']) for r in bugs)}")
    print(f"clean models ({len(models)}), errors and warnings that are not true:")
    for t in tools:
        bad = [(r["model"], len(r[t]["alarms"])) for r in models if r[t]["alarms"]]
        print(f"  {t}: {sum(n for _, n in bad)} on {len(bad)} models {bad}; crashed on "
              f"{sum(bool(r[t]['crash']) for r in models)}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"normlab": nl.__version__, "torch_audit": audit_version, "planted": bugs, "clean": models},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

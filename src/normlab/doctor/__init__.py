"""``normlab.doctor``: find the normalization bugs in a model, by measuring what its norms compute.

Example::

    >>> import torch, normlab as nl
    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8, momentum=0.99))
    >>> diagnosis = nl.doctor(model, example_inputs=(torch.randn(16, 3, 8, 8),))
    >>> diagnosis.errors
    []
    >>> sorted((f.check, f.module) for f in diagnosis.warnings)
    [('bias-before-norm', '0'), ('bn-momentum-convention', '1')]

Every check has a stable id (``normlab.doctor.CHECKS`` lists them with what
they find and the claim of the evidence suite behind each); the findings carry
the module's dotted name, what was seen with the number, and the fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from .checks import CHECKS, Check, check_ids
from .engine import Context, DoctorInputError
from .report import SEVERITIES, Cause, Diagnosis, Finding

__all__ = ["doctor", "Diagnosis", "Finding", "Cause", "CHECKS", "Check", "check_ids", "DoctorInputError", "SEVERITIES"]

_NEEDS = {"inputs": "needs example inputs", "optimizer": "needs the optimizer",
          "causal": "needs causal=True and example inputs",
          "train": "needs example inputs and the optimizer or the lr scheduler"}


def doctor(model: nn.Module, example_inputs: Any = None, example_kwargs: dict | None = None, optimizer: Any = None,
           train_step: bool = False, causal: bool = False, *, checks: Iterable[str] | None = None,
           skip: Iterable[str] = (), synthetic_inputs: bool = False, scheduler: Any = None) -> Diagnosis:
    """Inspect ``model`` for normalization bugs and return a :class:`Diagnosis`.

    Norm-like modules are found by probing what they compute (which input
    elements share statistics, read off a Jacobian row, and whether the
    output is invariant to scaling and shifting its input), so Hugging Face's
    ``LlamaRMSNorm``, ConvNeXt's channels-first LayerNorm or a user's own
    norm are checked like ``torch.nn``'s and normlab's.

    Args:
        model: any ``torch.nn.Module`` (a ``DistributedDataParallel`` /
            ``DataParallel`` wrapper or a ``torch.compile`` result is looked
            through; module names keep their prefix).
        example_inputs: the positional inputs of one forward: a tensor or a
            tuple (a dict is taken as keyword inputs).  Without them only the
            static checks run (the configuration of each module).
        example_kwargs: keyword inputs of the forward (``attention_mask=...``).
        optimizer: the optimizer to check (weight decay on norm parameters).
        train_step: also run one forward + backward and use the gradients.
        causal: the model is a causal sequence model: check that no norm lets
            later positions change earlier outputs (dim 1 of the first input
            is the sequence).
        checks: run only these check ids; ``skip``: leave these out.
        synthetic_inputs: the inputs are random, not data (the CLI's
            ``--input-shape``): checks that compare with the data's
            statistics (stale running statistics) stay silent.
        scheduler: the learning-rate scheduler (``torch.optim.lr_scheduler``):
            a deep post-norm stack is checked for a warm-up by stepping it
            (on its own state, restored afterwards).  Without it the doctor
            cannot see a warm-up (its train step takes no optimizer step): it
            warns when no torch scheduler is attached to ``optimizer`` (the lr
            is then constant unless the loop sets it), and only notes that it
            needs ``scheduler=`` when one is attached.

    The forward runs on a deep copy of the model (the model itself, its
    parameters, gradients, buffers, running statistics, training flags and
    hooks are left exactly as they were), with the global RNG restored
    afterwards.  The copy keeps the model's own forward hooks, so hooks
    that compute something (spectral norm, device placement) still do;
    hooks that log will see the doctor's forwards.  A forward that fails on the example raises
    :class:`DoctorInputError`.

    Returns:
        a :class:`Diagnosis`: ``.findings`` (``Finding(check, severity,
        module, message, fix, claim)``), ``.errors``, ``print(diagnosis)``
        for the table, ``.to_json()``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"doctor expects a torch.nn.Module, got {type(model).__name__}")
    inputs, kwargs = _as_inputs(example_inputs, example_kwargs)
    wanted = list(CHECKS) if checks is None else list(checks)
    skipped = set(skip)
    unknown = sorted((set(wanted) | skipped) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check id(s) {unknown}; known: {', '.join(CHECKS)}")
    ctx = Context(model, inputs, kwargs, optimizer, train_step=train_step, causal=causal, synthetic=synthetic_inputs,
                  scheduler=scheduler)
    status: dict[str, str] = {}
    findings: list[Finding] = []
    try:
        if inputs is not None:
            ctx.observe()
        ctx.classify()
        if train_step and inputs is not None:
            ctx.run_train_step()
        findings += ctx.findings
        for cid in CHECKS:
            if cid not in wanted or cid in skipped:
                continue
            chk = CHECKS[cid]
            reason = _unavailable(chk, ctx)
            if reason:
                status[cid] = f"skipped: {reason}"
                continue
            try:
                findings += chk.fn(ctx)
                status[cid] = "ran"
            except Exception as e:  # noqa: BLE001 -- one check's failure must not hide the others' findings
                status[cid] = f"failed: {type(e).__name__}: {e}"
    finally:
        ctx.close()
    notes = list(ctx.notes)
    if inputs is None:
        notes.append("static checks only: pass example_inputs to measure (probes, statistics, placement)")
    norms = [n.to_dict(ctx.full(n.name)) for n in ctx.norms.values()]
    return Diagnosis(_dedupe(findings), status, norms, notes)


def _unavailable(chk: Check, ctx: Context) -> str | None:
    if chk.needs == "inputs" and not ctx.has_inputs:
        return _NEEDS["inputs"]
    if chk.needs == "optimizer" and ctx.optimizer is None:
        return _NEEDS["optimizer"]
    if chk.needs == "causal" and not (ctx.causal and ctx.has_inputs):
        return _NEEDS["causal"]
    if chk.needs == "train" and not (ctx.has_inputs and (ctx.optimizer is not None or ctx.scheduler is not None)):
        return _NEEDS["train"]
    return None


def _as_inputs(inputs: Any, kwargs: dict | None) -> tuple[tuple | None, dict]:
    kw = dict(kwargs or {})
    if inputs is None:
        return (None, kw) if not kw else ((), kw)
    if isinstance(inputs, Tensor):
        return (inputs,), kw
    if isinstance(inputs, dict):
        return (), {**inputs, **kw}
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), kw
    raise TypeError(f"example_inputs must be a tensor, a tuple/list of inputs or a dict of keyword inputs, got "
                    f"{type(inputs).__name__}")


def _dedupe(findings: list[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.check, f.module) in seen:
            continue
        seen.add((f.check, f.module))
        out.append(f)
    return out

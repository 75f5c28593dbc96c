"""Fixes the doctor can apply: mechanical, and exact or clearly safe (:meth:`Diagnosis.apply`).

A finding that can be fixed carries an ``autofix`` spec, set by its check:

- ``("set", attr, value)``: set an attribute of the module (BatchNorm momentum in torch's convention, eps).
  Momentum changes only how running statistics are updated: every output of the forward stays the same.
- ``("drop-bias", norm)``: remove the bias of a conv/linear whose only consumer is ``norm``, a norm that
  subtracts every per-channel constant; its running mean (if any) is moved by the same bias, so the outputs
  stay the same in training and in eval mode.
- ``("weight-decay", wd)``: take norm parameters and biases out of weight decay (the groups of
  :func:`normlab.param_groups`), in the optimizer's own groups so its state is kept.
- ``("syncbn",)``: a BatchNorm under DistributedDataParallel becomes :class:`normlab.SyncBatchNorm`, sharing
  its parameter and buffer objects (the wrapper's and the optimizer's references stay valid); with one process,
  and in eval mode, the outputs are the same.
- ``("freeze-bn",)``: a BatchNorm whose gamma/beta are frozen keeps its running statistics frozen too
  (:func:`normlab.freeze_batchnorm`: same parameter and buffer objects; eval outputs unchanged, training
  outputs now use the running statistics, which is the point).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Applied", "apply_fixes", "EXACT"]

#: fixes after which every output of the model is the same as before
EXACT = ("set-momentum", "drop-bias", "syncbn (one process, or eval)", "freeze-bn (eval)")


@dataclass
class Applied:
    """What :meth:`Diagnosis.apply` changed.

    Attributes:
        done: (check, module, what was done) per fix applied.
        skipped: (check, module, why not) per fixable finding left alone.
        param_groups: the optimizer groups without decay on norm parameters and biases (the weight-decay
            fix; with an optimizer they are its own groups, changed in place), else None.
    """

    done: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    param_groups: list[dict] | None = None

    @property
    def checks(self) -> set[str]:
        return {c for c, _, _ in self.done}

    def __str__(self) -> str:
        lines = [f"applied {len(self.done)} fix(es)" + (f", left {len(self.skipped)}" if self.skipped else "")]
        lines += [f"  {c}  {m or '(model)'}: {what}" for c, m, what in self.done]
        lines += [f"  not applied: {c}  {m or '(model)'}: {why}" for c, m, why in self.skipped]
        return "\n".join(lines)


def _resolve(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        return None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = _resolve(model, parent_name)
    assert parent is not None
    setattr(parent, child, new)


def apply_fixes(findings: list, model: nn.Module, optimizer: Any = None) -> Applied:
    """Apply the ``autofix`` of each finding to ``model`` (and ``optimizer``) in place; see the module doc."""
    out = Applied()
    decay: float | None = None
    for f in findings:
        spec = f.autofix
        if not spec:
            continue
        kind = spec[0]
        if kind == "weight-decay":
            decay = float(spec[1])
            continue
        m = _resolve(model, f.module)
        if m is None:
            out.skipped.append((f.check, f.module, "no such module in this model"))
            continue
        if kind == "set":
            _, attr, value = spec
            old = getattr(m, attr, None)
            setattr(m, attr, value)
            out.done.append((f.check, f.module, f"{attr}: {old!r} -> {value!r}"))
        elif kind == "drop-bias":
            norm = _resolve(model, spec[1])
            bias = getattr(m, "bias", None)
            if norm is None or not isinstance(bias, torch.Tensor):
                out.skipped.append((f.check, f.module, "the bias or its norm is gone"))
                continue
            rm = getattr(norm, "running_mean", None)
            with torch.no_grad():
                if isinstance(rm, torch.Tensor) and rm.shape == bias.shape:
                    rm.sub_(bias.detach().to(rm.dtype))  # eval mode subtracts the same mean as before
            m.register_parameter("bias", None)
            if optimizer is not None:  # the optimizer lets go of it too
                for g in optimizer.param_groups:
                    g["params"] = [p for p in g["params"] if p is not bias]
                optimizer.state.pop(bias, None)
            out.done.append((f.check, f.module, f"bias dropped ({bias.numel()} parameters); '{spec[1]}' removes "
                                                 "every per-channel constant" +
                             (", and its running_mean moved by the bias" if isinstance(rm, torch.Tensor) else "")))
        elif kind == "syncbn":
            from .. import SyncBatchNorm

            new = SyncBatchNorm.convert_sync_batchnorm(m)
            if new is not m:
                _replace(model, f.module, new)
            out.done.append((f.check, f.module, "replaced by normlab.SyncBatchNorm (the same parameter and buffer "
                                                "objects, so the DDP wrapper and the optimizer keep working)"))
        elif kind == "freeze-bn":
            from .. import freeze_batchnorm

            new = freeze_batchnorm(m)
            if new is not m:
                _replace(model, f.module, new)
            out.done.append((f.check, f.module, "frozen: stays in eval mode through model.train(), so its running "
                                                "statistics no longer move"))
    if decay is not None:
        out.param_groups = _no_decay_groups(model, decay, optimizer)
        names = [f.module for f in findings if f.autofix and f.autofix[0] == "weight-decay"]
        how = "in the optimizer's groups" if optimizer is not None else "returned as param_groups (build the " \
            "optimizer from them)"
        for name in names:
            out.done.append(("norm-weight-decay", name, f"no weight decay on its parameters, {how}"))
    return out


def _no_decay_groups(model: nn.Module, wd: float, optimizer: Any) -> list[dict]:
    from .. import param_groups

    groups = param_groups(model, weight_decay=wd)
    if optimizer is None:
        return groups
    keep = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    extra = []
    for g in optimizer.param_groups:
        if float(g.get("weight_decay", 0.0) or 0.0) <= 0:
            continue
        moved = [p for p in g["params"] if id(p) in keep]
        if not moved:
            continue
        g["params"] = [p for p in g["params"] if id(p) not in keep]
        extra.append({**{k: v for k, v in g.items() if k != "params"}, "params": moved, "weight_decay": 0.0})
    for g in extra:
        optimizer.add_param_group(g)
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    return optimizer.param_groups

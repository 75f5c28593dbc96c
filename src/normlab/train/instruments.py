"""Opt-in measurements recorded during training (hooks that cost nothing unless asked for).

An instrument is attached to a model once and activated on the steps where
it records (``TrainConfig.instrument_every``).  Each returns a dict of
plain numbers per recorded step.  Names (keys of :data:`INSTRUMENTS`):

- ``grad_norms``: Frobenius norm of each weight matrix's gradient at this step.
- ``expected_grad_norms``: Xiong et al. (2020)'s expected gradient: at the
  current parameters, the gradient averaged over several minibatches (8),
  then its Frobenius norm, per weight matrix.  Extra passes; running
  statistics are restored afterwards, so training is not disturbed.
- ``residual_rms``: RMS of the residual stream after the embedding and after
  each block (``model.blocks``; for a CNN the stem and each stage module).
- ``attn_logits``: the largest pre-softmax attention logit of each layer.
- ``norm_inputs``: for every norm layer, the mean over positions of
  |mean| / RMS of its input across the feature dim(s).
- ``bn_stats``: for every BatchNorm in training, the batch statistics against
  the running ones: mean of max(running_var/batch_var, batch_var/running_var)
  over channels (Li et al. 2019's variance shift) and mean |running_mean -
  batch_mean| / batch_std.
- ``act_stats``: mean, std and max |.| of each Linear/Conv output.
- ``update_ratio``: ||delta W|| / ||W|| of each weight matrix over this step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..layers import BatchNorm, DyT, Norm, ScaleNorm

__all__ = ["Instrument", "INSTRUMENTS", "build_instruments", "expected_grad_norms"]


def _weights(model: nn.Module) -> dict[str, Tensor]:
    seen: set[int] = set()
    out: dict[str, Tensor] = {}
    for name, p in model.named_parameters():
        if p.ndim >= 2 and p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[name] = p
    return out


def _norm_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (Norm, DyT, ScaleNorm))}


def _stream_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    stem: nn.Module
    if hasattr(model, "blocks"):
        return [(f"blocks.{i}", b) for i, b in enumerate(model.blocks)]
    if hasattr(model, "features"):
        stem = model.stem  # an nn.Module attribute: typed Tensor | Module by torch
        return [("stem", stem)] + [(f"features.{i}", m) for i, m in enumerate(model.features)]
    raise ValueError(f"{type(model).__name__} has neither .blocks nor .features to follow the residual stream")


def _rms(t: Tensor) -> float:
    return t.detach().float().square().mean().sqrt().item()


class Instrument:
    """Base class: attach hooks once, record on active steps, return numbers from :meth:`collect`."""

    name = ""

    def __init__(self):
        self.active = False
        self.handles: list = []
        self.values: dict = {}

    def attach(self, model: nn.Module) -> None:
        pass

    def begin(self, model: nn.Module, task, step: int) -> None:
        self.active, self.values = True, {}

    def after_backward(self, model: nn.Module) -> None:
        pass

    def before_step(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass

    def collect(self) -> dict:
        self.active = False
        return self.values

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class GradNorms(Instrument):
    name = "grad_norms"

    def after_backward(self, model):
        self.values = {n: p.grad.norm().item() for n, p in _weights(model).items() if p.grad is not None}


def expected_grad_norms(model: nn.Module, task, n_batches: int = 8, seed: int = 0) -> dict[str, float]:
    """Frobenius norm of each weight's gradient averaged over ``n_batches`` minibatches at fixed parameters.

    Uses its own data generator and restores every buffer (running
    statistics) afterwards, so calling it does not change the training run.
    """
    weights = _weights(model)
    names, params = list(weights), list(weights.values())
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    gen = torch.Generator().manual_seed(seed)
    total = [torch.zeros_like(p) for p in params]
    for _ in range(n_batches):
        loss = task.loss(model, task.train_batch(gen))
        for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
            if g is not None:
                acc.add_(g)
    with torch.no_grad():
        for n, b in model.named_buffers():
            b.copy_(buffers[n])
    return {n: (t / n_batches).norm().item() for n, t in zip(names, total)}


class ExpectedGradNorms(Instrument):
    name = "expected_grad_norms"
    n_batches = 8

    def begin(self, model, task, step):
        super().begin(model, task, step)
        # drawn from a task copy so the training batch order is untouched
        import copy

        self.values = expected_grad_norms(model, copy.copy(task), self.n_batches, seed=10_000 + step)


class ResidualRMS(Instrument):
    name = "residual_rms"

    def attach(self, model):
        self.names = []
        if hasattr(model, "wte"):
            self.handles.append(model.drop.register_forward_hook(self._hook("embedding")))
            self.names.append("embedding")
        for name, m in _stream_modules(model):
            self.handles.append(m.register_forward_hook(self._hook(name)))
            self.names.append(name)

    def _hook(self, name):
        def hook(module, args, out):
            if self.active:
                self.values[name] = _rms(out)
        return hook

    def collect(self):
        self.active = False
        return {"layers": [n for n in self.names if n in self.values], "rms": [self.values[n] for n in self.names
                                                                               if n in self.values]}


class AttnLogits(Instrument):
    name = "attn_logits"

    def attach(self, model):
        self.attn = [(n, m) for n, m in model.named_modules() if hasattr(m, "track_logits")]

    def begin(self, model, task, step):
        super().begin(model, task, step)
        for _, m in self.attn:
            m.track_logits = True

    def collect(self):
        out = {}
        for n, m in self.attn:
            m.track_logits = False
            if m.last_max_logit is not None:
                out[n] = m.last_max_logit.item()
            m.last_max_logit = None
        self.active = False
        return out


class NormInputs(Instrument):
    name = "norm_inputs"

    def attach(self, model):
        for name, m in _norm_modules(model).items():
            self.handles.append(m.register_forward_pre_hook(self._hook(name, m)))

    def _hook(self, name, module):
        if isinstance(module, Norm) and module.param_dims:
            dims = module.param_dims
        else:
            dims = (-1,)

        def hook(mod, args):
            if self.active and args:
                x = args[0].detach().float()
                mean = x.mean(dims, keepdim=True)
                rms = x.square().mean(dims, keepdim=True).sqrt().clamp_min(1e-12)
                self.values[name] = (mean.abs() / rms).mean().item()
        return hook


class BNStats(Instrument):
    name = "bn_stats"

    def attach(self, model):
        for name, m in model.named_modules():
            if isinstance(m, BatchNorm) and m.track_running_stats:
                self.handles.append(m.register_forward_pre_hook(self._hook(name)))

    def _hook(self, name):
        def hook(mod, args):
            if not (self.active and mod.training and args):
                return
            x = args[0].detach().float()
            c = mod.channel_dim % x.ndim
            dims = [d for d in range(x.ndim) if d != c]
            bm, bv = x.mean(dims), x.var(dims, unbiased=False).clamp_min(1e-12)
            rv = mod.running_var.float().clamp_min(1e-12)
            self.values[name] = {
                "var_shift": torch.maximum(rv / bv, bv / rv).mean().item(),
                "mean_shift": ((mod.running_mean.float() - bm).abs() / bv.sqrt()).mean().item(),
            }
        return hook


class ActStats(Instrument):
    name = "act_stats"

    def attach(self, model):
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                self.handles.append(m.register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(mod, args, out):
            if self.active:
                o = out.detach().float()
                self.values[name] = {"mean": o.mean().item(), "std": o.std().item() if o.numel() > 1 else 0.0,
                                     "absmax": o.abs().max().item()}
        return hook


class UpdateRatio(Instrument):
    name = "update_ratio"

    def before_step(self, model):
        if self.active:
            self.before = {n: p.detach().clone() for n, p in _weights(model).items()}

    def after_step(self, model):
        if self.active:
            for n, p in _weights(model).items():
                norm = self.before[n].norm().item()
                self.values[n] = (p.detach() - self.before[n]).norm().item() / norm if norm > 0 else math.inf
            self.before = {}


INSTRUMENTS: dict[str, Callable[[], Instrument]] = {
    cls.name: cls for cls in (GradNorms, ExpectedGradNorms, ResidualRMS, AttnLogits, NormInputs, BNStats, ActStats,
                              UpdateRatio)
}


def build_instruments(names, model: nn.Module) -> list[Instrument]:
    out = []
    for name in names:
        inst = INSTRUMENTS[name]()
        inst.attach(model)
        out.append(inst)
    return out

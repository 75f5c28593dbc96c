"""The training loop: deterministic on CPU, divergence as a result, instruments and a run record."""

from __future__ import annotations

import math
import sys
import time
import traceback
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .instruments import build_instruments
from .record import environment, write_record

__all__ = ["train", "make_optimizer"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the model's parameter groups (its own ``param_groups(lr, wd)`` if it has one)."""
    if hasattr(model, "param_groups"):
        groups = model.param_groups(cfg.lr, cfg.weight_decay)
    else:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    for g in groups:
        g.setdefault("lr", cfg.lr)
        g["base_lr"] = g["lr"]
    if cfg.optimizer == "adamw":
        fused = {"fused": True} if all(p.device.type == "cpu" and p.dtype == torch.float32
                                       for g in groups for p in g["params"]) else {}
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **fused)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def _progress(cfg: TrainConfig):
    show = cfg.progress if cfg.progress is not None else sys.stderr.isatty()
    if not show:
        return None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # rich comes with the suite extra; a lean install trains without the bar
        return None

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[speed]:.1f} it/s"),
                    TimeRemainingColumn(), transient=True)


def train(model: nn.Module, task, cfg: TrainConfig, *, record_path=None, extra: dict | None = None) -> dict:
    """Train ``model`` on ``task`` and return the run record (also written to ``record_path`` if given).

    The record holds the configuration (model, training, data), the seed,
    versions and machine, metrics every ``log_every`` steps (loss, lr,
    gradient norm), evaluations, instrument readings, final metrics, wall time
    and ``status``: ``"ok"``, ``"diverged"`` (NaN/inf loss, or the loss's
    moving average above ``diverge_factor`` x the first loss; training stops
    there and that is a result) or ``"failed"`` (an exception; its traceback
    is kept in ``error``).  Invalid configurations raise before training.

    Under ``torchrun`` (a process group of 2+ processes, see
    :mod:`normlab.train.distributed`) the run is data-parallel: each rank its
    shard of the global batch, gradients averaged by DDP, BatchNorm converted to
    SyncBatchNorm with ``cfg.sync_batchnorm``, the record written by rank 0.

    Example::

        >>> import torch
        >>> from normlab.data import digits
        >>> from normlab.models import ConvNet, ConvNetConfig
        >>> from normlab.train import ClassificationTask, TrainConfig, train
        >>> _ = torch.manual_seed(0)
        >>> net = ConvNet(ConvNetConfig(dim=2, input_size=8, widths=(8, 16)))
        >>> rec = train(net, ClassificationTask(digits(), 32), TrainConfig(steps=60, lr=1e-2, progress=False))
        >>> rec["status"], rec["final"]["test_acc"] > 0.7
        ('ok', True)
    """
    cfg.validate()
    from .distributed import ShardedTask, mean_over_ranks, prepare_model, world

    rank, world_size = world(cfg.distributed)
    model_cfg = getattr(model, "cfg", None)
    record: dict[str, Any] = {
        "schema": 1,
        "status": "running",
        "config": {"model": model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else type(model).__name__,
                   "train": cfg.to_dict(), "data": task.describe()},
        "seed": cfg.seed,
        "env": environment(),
        "extra": extra or {},
        "metrics": [],
        "evals": [],
        "instruments": [],
        "final": {},
        "diverged_at": None,
        "error": None,
    }
    if world_size > 1:
        record["distributed"] = {"world_size": world_size, "backend": torch.distributed.get_backend(),
                                 "sync_batchnorm": cfg.sync_batchnorm, "written_by_rank": 0}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.device != "cpu":
        if not torch.cuda.is_available():
            raise RuntimeError(f"TrainConfig(device={cfg.device!r}) but CUDA is not available here")
        model.to(cfg.device)
    record["device"] = cfg.device
    gen = torch.Generator().manual_seed(cfg.seed)  # the same global batches on every rank
    step_model, step_task = model, task
    if world_size > 1:  # each rank trains on its shard of the global batch; DDP averages the gradients
        model, step_model = prepare_model(model, cfg.sync_batchnorm)
        step_task = ShardedTask(task, rank, world_size)
        record["config"]["data"] = step_task.describe()
    instruments = build_instruments(cfg.instruments, model)
    optimizer = make_optimizer(model, cfg)
    model.train()
    start = time.perf_counter()
    initial, smooth = None, None
    progress = _progress(cfg)
    try:
        with progress if progress is not None else nullcontext():
            bar = progress.add_task("train", total=cfg.steps, loss=float("nan"), speed=0.0) if progress else None
            for step in range(cfg.steps):
                recording = bool(instruments) and (
                    step in (0, cfg.steps - 1) if cfg.instrument_every == 0 else step % cfg.instrument_every == 0
                    or step == cfg.steps - 1)
                for inst in instruments if recording else ():
                    inst.begin(model, task, step)
                factor = cfg.lr_factor(step)
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * factor
                loss = step_task.loss(step_model, step_task.train_batch(gen))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                value = loss.item() if world_size == 1 else mean_over_ranks(loss.item())
                for inst in instruments if recording else ():
                    inst.after_backward(model)
                params = [p for g in optimizer.param_groups for p in g["params"]]
                if cfg.grad_clip is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip).item()
                else:
                    grads = [p.grad.norm() for p in params if p.grad is not None]
                    grad_norm = torch.stack(grads).norm().item() if grads else 0.0
                diverged = not math.isfinite(value)
                if not diverged:
                    initial = value if initial is None else initial
                    smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
                    diverged = smooth > cfg.diverge_factor * initial
                if step % cfg.log_every == 0 or step == cfg.steps - 1 or diverged:
                    record["metrics"].append({"step": step, "loss": value, "lr": cfg.lr * factor,
                                              "grad_norm": grad_norm, "time_s": time.perf_counter() - start})
                if diverged:
                    record["status"], record["diverged_at"] = "diverged", step
                    for inst in instruments if recording else ():
                        record["instruments"].append({"step": step, inst.name: inst.collect()})
                    break
                for inst in instruments if recording else ():
                    inst.before_step(model)
                optimizer.step()
                for inst in instruments if recording else ():
                    inst.after_step(model)
                if recording:
                    entry = {"step": step}
                    for inst in instruments:
                        entry[inst.name] = inst.collect()
                    record["instruments"].append(entry)
                if cfg.eval_every and step % cfg.eval_every == 0 and step > 0:
                    record["evals"].append({"step": step, **task.evaluate(model, cfg.eval_batches)})
                if bar is not None:
                    elapsed = time.perf_counter() - start
                    progress.update(bar, advance=1, loss=value, speed=(step + 1) / max(elapsed, 1e-9))
        if record["status"] == "running":
            record["status"] = "ok"
            final = task.evaluate(model, cfg.eval_batches)
            record["evals"].append({"step": cfg.steps, **final})
            record["final"] = {"train_loss": record["metrics"][-1]["loss"], **final}
    except Exception:  # a failed run is recorded, not lost
        record["status"], record["error"] = "failed", traceback.format_exc()
    finally:
        for inst in instruments:
            inst.detach()
        record["wall_time_s"] = time.perf_counter() - start
        record["steps_done"] = (record["metrics"][-1]["step"] + 1) if record["metrics"] else 0
    if record_path is not None and rank == 0:
        write_record(record_path, record)
    return record

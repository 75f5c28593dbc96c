"""Training configuration, a dataclass passed whole."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """How to train.

    Attributes:
        steps: optimizer steps.
        lr: peak learning rate.
        optimizer: "adamw" or "sgd".
        betas, eps: AdamW's (Xiong et al. used (0.9, 0.98)).
        weight_decay: decoupled weight decay (AdamW) / L2 (SGD), on matrices only.
        momentum: SGD's momentum.
        warmup_steps: linear warm-up from 0 to ``lr``.
        schedule: after warm-up, "cosine" (to ``min_lr_ratio * lr`` at the last
            step) or "constant".
        grad_clip: max global gradient norm (None: no clipping).
        seed: seeds parameters' dropout, data order and sampling.
        threads: torch CPU threads (None: leave torch's setting).
        log_every: record loss/lr/grad-norm every this many steps.
        eval_every: evaluate every this many steps (0: at the end only).
        eval_batches: batches per evaluation (language models).
        instruments: names from :data:`normlab.train.INSTRUMENTS` to record.
        instrument_every: record instruments every this many steps (0: first and last step only).
        diverge_factor: a run is diverged when the loss is NaN/inf, or when its
            moving average exceeds ``diverge_factor`` x the initial loss.
        progress: show a progress bar (None: only on a terminal).
        distributed: data-parallel over the initialized process group (None: exactly when one of 2+
            processes is initialized, e.g. under torchrun; see :mod:`normlab.train.distributed`).
        sync_batchnorm: in data-parallel training, convert every BatchNorm to SyncBatchNorm.
        device: where the model trains ("cpu", "cuda", "cuda:1"); the batches follow it.
    """

    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    seed: int = 0
    threads: int | None = None
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 10
    instruments: tuple[str, ...] = field(default_factory=tuple)
    instrument_every: int = 0
    diverge_factor: float = 1.5
    progress: bool | None = None
    distributed: bool | None = None
    sync_batchnorm: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and ranges of every field; the error names the field, the value and what is allowed."""
        from .._checks import check_bool, check_float, check_int

        check_int(self, "steps", lo=1)
        check_float(self, "lr", lo=0, lo_open=True)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2 or \
                not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        check_float(self, "eps", lo=0, lo_open=True)
        check_float(self, "weight_decay", lo=0)
        check_float(self, "momentum", lo=0, hi=1)
        check_int(self, "warmup_steps", lo=0)
        check_float(self, "min_lr_ratio", lo=0, hi=1)
        check_float(self, "grad_clip", lo=0, lo_open=True, optional=True)
        check_int(self, "seed", lo=0)
        check_int(self, "threads", lo=1, optional=True)
        check_int(self, "log_every", lo=1)
        check_int(self, "eval_every", lo=0)
        check_int(self, "eval_batches", lo=1)
        check_int(self, "instrument_every", lo=0)
        check_float(self, "diverge_factor")
        check_bool(self, "progress", optional=True)
        check_bool(self, "distributed", optional=True)
        check_bool(self, "sync_batchnorm")
        if not isinstance(self.device, str) or not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"TrainConfig.device must be 'cpu' or 'cuda[:n]', got {self.device!r}")
        if not isinstance(self.instruments, (tuple, list)):
            raise ValueError(f"TrainConfig.instruments must be a tuple of instrument names, got {self.instruments!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if not self.diverge_factor > 1:
            raise ValueError(f"diverge_factor must be > 1, got {self.diverge_factor}")
        from .instruments import INSTRUMENTS

        unknown = [i for i in self.instruments if i not in INSTRUMENTS]
        if unknown:
            raise ValueError(f"unknown instruments {unknown}; choose from {', '.join(INSTRUMENTS)}")

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak lr at ``step`` (0-based): linear warm-up, then cosine or constant."""
        import math

        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.steps - self.warmup_steps - 1)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        d["instruments"] = list(self.instruments)
        return d

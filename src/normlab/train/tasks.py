"""What a model is trained on: a task draws batches, computes the loss, and evaluates."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import ClassificationData, SeqBatch, TextCorpus, packed_batch, padded_batch, random_windows

__all__ = ["LMTask", "ClassificationTask"]

_BATCHERS = {"windows": random_windows, "padded": padded_batch, "packed": packed_batch}


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _to(t: Tensor | None, device: torch.device) -> Tensor | None:
    """Batches are drawn on the CPU (one generator for every device); they follow the model."""
    return t if t is None or t.device == device else t.to(device, non_blocking=True)


def _eval_mode(model: nn.Module):
    class _Ctx:
        def __enter__(self):
            self.was = model.training
            model.eval()

        def __exit__(self, *exc):
            model.train(self.was)

    return _Ctx()


@dataclass
class LMTask:
    """Next-token prediction on a :class:`~normlab.data.TextCorpus`.

    ``batcher``: "windows" (fixed-length random windows), "padded"
    (variable-length, padded, with a mask) or "packed" (several documents per
    row, with document ids); ``batcher_kwargs`` go to the batcher (e.g.
    ``{"dist": "exponential"}``).  Validation uses fixed windows from the
    validation split, drawn with a fixed seed so every run sees the same ones.
    """

    corpus: TextCorpus
    block_size: int
    batch_size: int
    batcher: str = "windows"
    batcher_kwargs: dict = field(default_factory=dict)
    eval_seed: int = 1234

    def __post_init__(self):
        if self.batcher not in _BATCHERS:
            raise ValueError(f"unknown batcher {self.batcher!r}; choose one of {', '.join(_BATCHERS)}")

    def train_batch(self, gen: torch.Generator) -> SeqBatch:
        fn = _BATCHERS[self.batcher]
        kwargs = self.batcher_kwargs if self.batcher != "windows" else {}
        return fn(self.corpus.train, self.batch_size, self.block_size, gen, **kwargs)

    def loss(self, model: nn.Module, batch: SeqBatch) -> Tensor:
        dev = _device_of(model)
        _, loss = model(_to(batch.x, dev), targets=_to(batch.y, dev), mask=_to(batch.mask, dev),
                        doc_ids=_to(batch.doc_ids, dev))
        return loss

    @torch.no_grad()
    def evaluate(self, model: nn.Module, n_batches: int = 10) -> dict:
        gen = torch.Generator().manual_seed(self.eval_seed)
        losses = []
        with _eval_mode(model):
            for _ in range(n_batches):
                b = random_windows(self.corpus.val, self.batch_size, self.block_size, gen)
                losses.append(self.loss(model, b).item())
        return {"val_loss": sum(losses) / len(losses)}

    def describe(self) -> dict:
        return {"task": "lm", **self.corpus.describe(), "block_size": self.block_size,
                "batch_size": self.batch_size, "batcher": self.batcher, "batcher_kwargs": dict(self.batcher_kwargs)}


@dataclass
class ClassificationTask:
    """Supervised classification on a :class:`~normlab.data.ClassificationData`, epochs of shuffled minibatches.

    ``ghost_batch``: if set, the model is called on chunks of this many
    examples (BatchNorm then sees only the chunk, as on a worker with a small
    batch) while the gradient step still uses the whole minibatch.
    """

    data: ClassificationData
    batch_size: int
    ghost_batch: int | None = None
    _order: Tensor | None = field(default=None, init=False, repr=False)
    _pos: int = field(default=0, init=False, repr=False)

    def train_batch(self, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(self.data.y_train)
        if self._order is None or self._pos + self.batch_size > n:
            self._order, self._pos = torch.randperm(n, generator=gen), 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.data.x_train[idx], self.data.y_train[idx]

    def forward(self, model: nn.Module, x: Tensor) -> Tensor:
        x = _to(x, _device_of(model))
        if self.ghost_batch and model.training and len(x) > self.ghost_batch:
            return torch.cat([model(chunk) for chunk in x.split(self.ghost_batch)])
        return model(x)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits = self.forward(model, x)
        return F.cross_entropy(logits, _to(y, logits.device))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, n_batches: int = 0) -> dict:
        out = {}
        with _eval_mode(model):
            for split, x, y in (("train", self.data.x_train, self.data.y_train),
                                ("test", self.data.x_test, self.data.y_test)):
                logits = torch.cat([model(_to(c, _device_of(model))) for c in x.split(512)]).cpu()
                out[f"{split}_loss"] = F.cross_entropy(logits, y).item()
                out[f"{split}_acc"] = (logits.argmax(-1) == y).float().mean().item()
        return out

    def describe(self) -> dict:
        return {"task": "classification", **self.data.describe(), "batch_size": self.batch_size,
                "ghost_batch": self.ghost_batch}

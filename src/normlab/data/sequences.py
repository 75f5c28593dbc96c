"""Batches of token sequences: fixed windows, padded variable-length batches, packed batches.

Every batcher draws from a 1-D tensor of token ids with a ``torch.Generator``
(deterministic for a given seed) and returns a :class:`SeqBatch`.  Targets
are the next token; positions that must not be scored (padding, the first
token of a packed document) carry ``IGNORE`` (-1), which
``F.cross_entropy(..., ignore_index=-1)`` skips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SeqBatch", "IGNORE", "PAD", "random_windows", "padded_batch", "packed_batch", "draw_lengths"]

IGNORE = -1
PAD = 0


@dataclass
class SeqBatch:
    """x, y: (B, T) long; mask: (B, T) bool, True = real token (None: all real);
    doc_ids: (B, T) long, the document each token belongs to (None: one document per row)."""

    x: Tensor
    y: Tensor
    mask: Tensor | None = None
    doc_ids: Tensor | None = None


def _windows(data: Tensor, starts: Tensor, length: int) -> Tensor:
    offsets = torch.arange(length + 1)
    return data[starts.unsqueeze(1) + offsets]  # (B, length + 1)


def _check(data: Tensor, block_size: int) -> None:
    if data.ndim != 1 or data.dtype != torch.long:
        raise ValueError(f"token data must be a 1-D long tensor, got {data.dtype} of shape {tuple(data.shape)}")
    if len(data) <= block_size + 1:
        raise ValueError(f"need more than block_size + 1 = {block_size + 1} tokens, got {len(data)}")


def random_windows(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator) -> SeqBatch:
    """``batch_size`` random contiguous windows of ``block_size`` tokens and their next tokens."""
    _check(data, block_size)
    starts = torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=generator)
    w = _windows(data, starts, block_size)
    return SeqBatch(w[:, :-1].contiguous(), w[:, 1:].contiguous())


def draw_lengths(n: int, block_size: int, generator: torch.Generator, *, dist: str = "uniform",
                 min_len: int = 2, mean_len: float | None = None) -> Tensor:
    """``n`` sequence lengths in [min_len, block_size].

    ``dist``: ``"uniform"``; ``"exponential"`` (mean ``mean_len``, default
    block_size / 4, clipped: many short, few long sequences, as real data);
    ``"fixed"`` (all ``block_size``).
    """
    if not 1 <= min_len <= block_size:
        raise ValueError(f"min_len must be in [1, block_size={block_size}], got {min_len}")
    if dist == "uniform":
        return torch.randint(min_len, block_size + 1, (n,), generator=generator)
    if dist == "exponential":
        mean = mean_len or block_size / 4
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        lengths = (-mean * torch.log1p(-u)).round().long()
        return lengths.clamp(min_len, block_size)
    if dist == "fixed":
        return torch.full((n,), block_size, dtype=torch.long)
    raise ValueError(f"unknown length distribution {dist!r}; choose uniform, exponential or fixed")


def padded_batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator, *,
                 dist: str = "uniform", min_len: int = 2, mean_len: float | None = None) -> SeqBatch:
    """Variable-length sequences, right-padded to ``block_size`` with :data:`PAD`, and their mask.

    Row i holds a random window of ``L_i`` tokens (``L_i`` from
    :func:`draw_lengths`); ``mask[i, :L_i]`` is True, the rest is padding
    with target :data:`IGNORE`.
    """
    _check(data, block_size)
    lengths = draw_lengths(batch_size, block_size, generator, dist=dist, min_len=min_len, mean_len=mean_len)
    w = _windows(data, torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=generator),
                 block_size)
    mask = torch.arange(block_size).unsqueeze(0) < lengths.unsqueeze(1)
    x = w[:, :-1].masked_fill(~mask, PAD)
    y = w[:, 1:].masked_fill(~mask, IGNORE)
    return SeqBatch(x, y, mask)


def packed_batch(data: Tensor, batch_size: int, block_size: int, generator: torch.Generator, *,
                 dist: str = "uniform", min_len: int = 2, mean_len: float | None = None) -> SeqBatch:
    """Rows of ``block_size`` tokens, each several independent documents concatenated.

    Documents are random windows of random lengths; ``doc_ids[b, t]`` numbers
    the documents within a row (0, 1, ...), so a model can keep attention
    inside a document.  The last token of a document does not predict the
    first of the next (target :data:`IGNORE`).  Every token is real (no mask).
    """
    _check(data, block_size)
    xs, ys, ds = [], [], []
    for _ in range(batch_size):
        row_x, row_y, row_d, filled, doc = [], [], [], 0, 0
        while filled < block_size:
            n = int(draw_lengths(1, block_size, generator, dist=dist, min_len=min_len, mean_len=mean_len)[0])
            n = min(n, block_size - filled)
            start = int(torch.randint(0, len(data) - n - 1, (1,), generator=generator))
            chunk = data[start : start + n + 1]
            row_x.append(chunk[:-1])
            target = chunk[1:].clone()
            target[-1] = IGNORE  # no prediction across a document boundary
            row_y.append(target)
            row_d.append(torch.full((n,), doc, dtype=torch.long))
            filled += n
            doc += 1
        xs.append(torch.cat(row_x))
        ys.append(torch.cat(row_y))
        ds.append(torch.cat(row_d))
    return SeqBatch(torch.stack(xs), torch.stack(ys), None, torch.stack(ds))

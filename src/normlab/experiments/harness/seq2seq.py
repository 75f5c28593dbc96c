"""A Transformer encoder-decoder as Xiong et al. 2020 measured it at initialization (C22's paper arm).

The model is the original Transformer's shape in post-LN or pre-LN: ``n_enc`` encoder blocks (self-attention,
ReLU FFN) and ``n_dec`` decoder blocks (causal self-attention, cross-attention to the encoder's output, ReLU
FFN), Xavier-normal weight matrices, zero biases, and unit-variance inputs (token and position tables
N(0, 1/d) whose sum is multiplied by sqrt(d/2), as :class:`~normlab.models.GPT` does with ``embed_scale``).
No dropout: the gradient is measured at initialization on fixed parameters.  The task stands in for
translation on the character corpus: the source is a window of text, the target the window that follows it
(teacher-forced: the decoder reads the last source character and the target shifted by one).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...layers import LayerNorm

__all__ = ["Seq2SeqTransformer", "seq2seq_batch"]


class _Attention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mem, causal: bool):
        B, T, D = x.shape
        h = self.n_head

        def split(t):
            return t.view(B, -1, h, D // h).transpose(1, 2)

        y = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(mem)), split(self.v(mem)),
                                           is_causal=causal)
        return self.o(y.transpose(1, 2).reshape(B, T, D))


class _FFN(nn.Module):
    def __init__(self, d: int, d_ff: int):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, d_ff), nn.Linear(d_ff, d)

    def forward(self, x):
        return self.w2(F.relu(self.w1(x)))


class _Block(nn.Module):
    """One encoder (``cross=False``) or decoder (``cross=True``) block; post-LN: x = LN(x + f(x)),
    pre-LN: x = x + f(LN(x))."""

    def __init__(self, d: int, n_head: int, d_ff: int, placement: str, cross: bool):
        super().__init__()
        self.placement = placement
        self.self_attn = _Attention(d, n_head)
        self.cross_attn = _Attention(d, n_head) if cross else None
        self.ffn = _FFN(d, d_ff)
        self.norms = nn.ModuleList(LayerNorm(d) for _ in range(3 if cross else 2))

    def _sub(self, x, norm, f):
        return norm(x + f(x)) if self.placement == "post" else x + f(norm(x))

    def forward(self, x, mem=None):
        x = self._sub(x, self.norms[0], lambda z: self.self_attn(z, z, causal=mem is not None))
        if self.cross_attn is not None:
            x = self._sub(x, self.norms[1], lambda z: self.cross_attn(z, mem, causal=False))
        return self._sub(x, self.norms[-1], self.ffn)


class Seq2SeqTransformer(nn.Module):
    """The Transformer encoder-decoder of Vaswani et al. with post-LN or pre-LN blocks (pre-LN adds a final
    LayerNorm to the encoder and the decoder, as Xiong et al.'s pre-LN Transformer does)."""

    def __init__(self, vocab_size: int, *, d_model: int = 512, n_head: int = 4, d_ff: int = 1024,
                 n_enc: int = 6, n_dec: int = 6, placement: str = "post", max_len: int = 256):
        super().__init__()
        if placement not in ("post", "pre"):
            raise ValueError(f"placement must be 'post' or 'pre', got {placement!r}")
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_head ({n_head})")
        self.d = d_model
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        self.enc = nn.ModuleList(_Block(d_model, n_head, d_ff, placement, cross=False) for _ in range(n_enc))
        self.dec = nn.ModuleList(_Block(d_model, n_head, d_ff, placement, cross=True) for _ in range(n_dec))
        self.enc_ln = LayerNorm(d_model) if placement == "pre" else None
        self.dec_ln = LayerNorm(d_model) if placement == "pre" else None
        self.head = nn.Linear(d_model, vocab_size)
        for name, p in self.named_parameters():
            if name.startswith(("tok.", "pos.")):
                nn.init.normal_(p, 0.0, 1 / math.sqrt(d_model))
            elif p.dim() == 2:
                nn.init.xavier_normal_(p)
            elif name.endswith(".bias") and "norms" not in name and not name.endswith("_ln.bias"):
                nn.init.zeros_(p)

    def _embed(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        return (self.tok(idx) + self.pos(pos)) * math.sqrt(self.d / 2)  # unit variance

    def forward(self, src, tgt_in, targets):
        mem = self._embed(src)
        for block in self.enc:
            mem = block(mem)
        if self.enc_ln is not None:
            mem = self.enc_ln(mem)
        x = self._embed(tgt_in)
        for block in self.dec:
            x = block(x, mem)
        if self.dec_ln is not None:
            x = self.dec_ln(x)
        logits = self.head(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def seq2seq_batch(data: torch.Tensor, batch: int, length: int, gen: torch.Generator):
    """``(src, tgt_in, targets)``: source windows of ``length`` characters and the windows that follow them."""
    starts = torch.randint(0, len(data) - 2 * length - 1, (batch,), generator=gen)
    rows = torch.stack([data[s: s + 2 * length] for s in starts.tolist()])
    src, tgt = rows[:, :length], rows[:, length:]
    tgt_in = torch.cat([src[:, -1:], tgt[:, :-1]], dim=1)
    return src, tgt_in, tgt

"""Training speed of normlab's GPT against a nanoGPT-equivalent model built from torch.nn layers, side by side.

The configuration of nanoGPT's CPU reference run (4 layers, d_model 128,
4 heads, context 64, batch 12, AdamW lr 1e-3 with warm-up and cosine decay
to 1e-4, beta2 0.99, weight decay 0.1, no dropout, gradient clipping at 1)
on normlab's default corpus (CPython's documentation text), pre-LN.

Arms, trained on the same batches from the same initial weights:

- ``torch``: nanoGPT's model written with ``torch.nn.LayerNorm`` (or
  ``torch.nn.RMSNorm``), ``nn.Linear`` and ``F.scaled_dot_product_attention``;
- ``normlab``: ``normlab.models.GPT`` with the same sizes (its norms on the
  fused CPU kernels, the residual add fused into the next LayerNorm);
- ``normlab-reference``: the same under ``normlab.use_reference()`` (what
  the fast paths buy).

The arms take turns in chunks of steps (interleaved, so a slow spell of the
machine hits all of them) and one training loop serves all; the script
prints steps/s per arm, the ratio to the torch arm, and the losses reached
(equal up to float rounding, which shows the arms compute the same thing).

Usage::

    python benchmarks/gpt_train.py                      # 600 steps per arm, layernorm
    python benchmarks/gpt_train.py --steps 200 --norm rmsnorm --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import normlab as nl
from normlab.data import random_windows, text
from normlab.models import GPT, GPTConfig

N_LAYER, D_MODEL, N_HEAD, BLOCK, BATCH = 4, 128, 4, 64, 12


class _Attention(nn.Module):
    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class _MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class _Block(nn.Module):
    def __init__(self, d: int, h: int, norm):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = norm(d), _Attention(d, h), norm(d), _MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT (pre-LN, tied head, no dropout) from torch.nn layers; parameter names as normlab's GPT."""

    def __init__(self, vocab: int, norm: str):
        super().__init__()
        make = (lambda d: nn.LayerNorm(d)) if norm == "layernorm" else (lambda d: nn.RMSNorm(d))
        self.wte, self.wpe = nn.Embedding(vocab, D_MODEL), nn.Embedding(BLOCK, D_MODEL)
        self.blocks = nn.ModuleList(_Block(D_MODEL, N_HEAD, make) for _ in range(N_LAYER))
        self.ln_f = make(D_MODEL)
        self.lm_head = nn.Linear(D_MODEL, vocab, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return logits, F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                       ignore_index=-1)


def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """normlab's GPT -> NanoGPT, by matching names (normlab: blocks.i.norms.ln_1, NanoGPT: blocks.i.ln_1)."""
    theirs = dict(dst.named_parameters())
    with torch.no_grad():
        for name, p in src.named_parameters():
            theirs[name.replace("norms.", "")].copy_(p)


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                             lr=1e-3, betas=(0.9, 0.99))


def _lr(step: int, steps: int) -> float:
    warm = max(1, min(100, steps // 10))
    if step < warm:
        return 1e-3 * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * t))


class Arm:
    def __init__(self, name: str, model: nn.Module, reference: bool = False):
        self.name, self.model, self.reference = name, model, reference
        self.opt = _optimizer(model)
        self.seconds, self.steps, self.timed_steps, self.losses = 0.0, 0, 0, []

    def run(self, batches, steps_total: int, timed: bool = True) -> None:
        ctx = nl.use_reference() if self.reference else _nothing()
        with ctx:
            t0 = time.perf_counter()
            for b in batches:
                for g in self.opt.param_groups:
                    g["lr"] = _lr(self.steps, steps_total)
                _, loss = self.model(b.x, b.y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.opt.step()
                self.losses.append(loss.item())
                self.steps += 1
            if timed:  # the first chunk (warm-up: allocator, kernel loading, caches) is not timed
                self.seconds += time.perf_counter() - t0
                self.timed_steps += len(batches)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600, help="training steps per arm (the first chunk is not timed)")
    p.add_argument("--chunk", type=int, default=25, help="steps an arm runs before the next takes its turn")
    p.add_argument("--norm", default="layernorm", choices=("layernorm", "rmsnorm"))
    p.add_argument("--no-reference", action="store_true", help="skip the normlab-reference arm")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    nl.kernels.cpp_available()  # build the kernels (once per machine) before anything is timed
    corpus = text()
    torch.manual_seed(args.seed)
    ours = GPT(GPTConfig(n_layer=N_LAYER, d_model=D_MODEL, n_head=N_HEAD, block_size=BLOCK,
                         vocab_size=corpus.vocab_size, norm=args.norm, placement="pre", dropout=0.0))
    theirs = NanoGPT(corpus.vocab_size, args.norm)
    _copy_weights(ours, theirs)
    arms = [Arm("torch", theirs), Arm("normlab", ours)]
    if not args.no_reference:
        ref = GPT(ours.cfg)
        ref.load_state_dict(ours.state_dict())
        arms.append(Arm("normlab-reference", ref, reference=True))
    gen = torch.Generator().manual_seed(args.seed)
    batches = [random_windows(corpus.train, BATCH, BLOCK, gen) for _ in range(args.steps)]
    for start in range(0, args.steps, args.chunk):
        chunk = batches[start:start + args.chunk]
        order = arms[(start // args.chunk) % len(arms):] + arms[: (start // args.chunk) % len(arms)]
        for a in order:
            a.run(chunk, args.steps, timed=start > 0)
    base = arms[0].timed_steps / arms[0].seconds
    print(f"GPT training speed: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {sum(q.numel() for q in ours.parameters()):,} parameters, "
          f"batch {BATCH} x {BLOCK} tokens, {args.norm}, pre-LN, {args.steps} steps per arm in chunks of {args.chunk}")
    print(f"{'arm':<18} {'steps/s':>8} {'tokens/s':>9} {'vs torch':>9} {'first loss':>10} {'last-50 loss':>12}")
    rows = []
    for a in arms:
        sps = a.timed_steps / a.seconds
        tail = sum(a.losses[-50:]) / len(a.losses[-50:])
        rows.append({"arm": a.name, "steps": a.steps, "seconds": a.seconds, "steps_per_s": sps,
                     "tokens_per_s": sps * BATCH * BLOCK, "vs_torch": sps / base, "first_loss": a.losses[0],
                     "last50_loss": tail})
        print(f"{a.name:<18} {sps:>8.2f} {sps * BATCH * BLOCK:>9.0f} {sps / base:>8.3f}x {a.losses[0]:>10.4f} "
              f"{tail:>12.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"norm": args.norm, "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

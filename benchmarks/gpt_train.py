"""Training speed of the small GPT on this CPU, and the loss it reaches.

The configuration of nanoGPT's CPU reference run (4 layers, d_model 128,
4 heads, context 64, batch 12, 2000 steps, AdamW lr 1e-3 with 100 warm-up
steps and cosine decay to 1e-4, beta2 0.99, no dropout) on normlab's default
corpus (CPython's documentation text), pre-LN with LayerNorm and with
RMSNorm.  Prints steps/s, tokens/s, wall time and final train/val loss.

Usage::

    python benchmarks/gpt_train.py                 # 2000 steps per norm (several minutes on 2 cores)
    python benchmarks/gpt_train.py --steps 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from normlab.data import text
from normlab.models import GPT, GPTConfig
from normlab.train import LMTask, TrainConfig, train


def run(norm: str, steps: int, seed: int, corpus) -> dict:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=4, d_model=128, n_head=4, block_size=64, vocab_size=corpus.vocab_size,
                          norm=norm, placement="pre", dropout=0.0))
    cfg = TrainConfig(steps=steps, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, warmup_steps=min(100, steps // 10),
                      min_lr_ratio=0.1, grad_clip=1.0, seed=seed, log_every=50, eval_batches=20)
    rec = train(model, LMTask(corpus, 64, 12), cfg)
    train_time = rec["metrics"][-1]["time_s"]  # time to the last step, without the final evaluation
    return {"norm": norm, "steps": steps, "status": rec["status"], "train_time_s": train_time,
            "steps_per_s": steps / train_time, "tokens_per_s": steps * 12 * 64 / train_time,
            "final_train_loss": rec["final"].get("train_loss"), "final_val_loss": rec["final"].get("val_loss"),
            "params": sum(p.numel() for p in model.parameters()), "env": rec["env"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--norms", default="layernorm,rmsnorm")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    corpus = text()
    rows = [run(n, args.steps, args.seed, corpus) for n in args.norms.split(",")]
    env = rows[0]["env"]
    print(f"GPT training speed: {env['cpu']}, {env['torch_threads']} threads, torch {env['torch']}, "
          f"{rows[0]['params']:,} parameters, batch 12 x 64 tokens")
    print(f"{'norm':<10} {'steps':>6} {'steps/s':>8} {'tokens/s':>9} {'wall s':>7} {'train loss':>10} {'val loss':>9}")
    for r in rows:
        print(f"{r['norm']:<10} {r['steps']:>6} {r['steps_per_s']:>8.2f} {r['tokens_per_s']:>9.0f} "
              f"{r['train_time_s']:>7.1f} {r['final_train_loss']:>10.4f} {r['final_val_loss']:>9.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

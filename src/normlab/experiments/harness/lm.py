"""The language-model runs the transformer claims share: GPT sizes per mode, training, final losses, and the
record helpers of the sweeps (C18-C27, C31, C32, C34)."""

from __future__ import annotations

import math

from ..plots import pyplot, save_fig
from ..spec import PerMode
from ..verdicts import by_name, mean


SIZES = PerMode({  # model and budget per mode
    "quick": dict(n_layer=2, d_model=64, n_head=4, block_size=32, batch=8, steps=300),
    "full": dict(n_layer=4, d_model=96, n_head=4, block_size=64, batch=8, steps=400),
    # Xiong et al.'s widths (d=512, 8 heads) at 6 blocks, longer contexts and batches: for a GPU
    "paper": dict(n_layer=6, d_model=512, n_head=8, block_size=256, batch=32, steps=3000),
})  # full steps were 600: cut to 400 so that all 34 claims fit the 2-hour full budget on 2 cores


def model_cfg(mode: str, **overrides) -> dict:
    s = SIZES[mode]
    base = dict(n_layer=s["n_layer"], d_model=s["d_model"], n_head=s["n_head"], block_size=s["block_size"])
    return {**base, **overrides}


def train_cfg(mode: str, **overrides) -> dict:
    s = SIZES[mode]
    base = dict(steps=s["steps"], lr=1e-3, warmup_steps=s["steps"] // 10, betas=[0.9, 0.99], grad_clip=1.0,
                log_every=max(1, s["steps"] // 50), eval_batches=10 if mode == "quick" else 40)
    return {**base, **overrides}


def build_gpt(model: dict, vocab_size: int):
    import torch  # noqa: F401  (imported lazily: the registry must import fast)

    from ...models import GPT, GPTConfig

    return GPT(GPTConfig(**model, vocab_size=vocab_size))


def train_gpt(config: dict, seed: int, batch: int):
    """Build the GPT of ``config["model"]`` on the run's corpus and train it with ``config["train"]``.

    Returns ``(model, corpus, record)``.
    """
    import torch

    from ...data import text
    from ...train import LMTask, TrainConfig, train

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = build_gpt(config["model"], corpus.vocab_size)
    tcfg = dict(config["train"])
    tcfg["betas"] = tuple(tcfg.get("betas", (0.9, 0.95)))
    tcfg["instruments"] = tuple(tcfg.get("instruments", ()))
    rec = train(model, LMTask(corpus, config["model"]["block_size"], batch),
                TrainConfig(**tcfg, seed=seed, progress=False, device=config.get("device", "cpu")))
    return model.cpu(), corpus, rec  # trained on the run's device; the analyses that follow run on the CPU


def lm_run(config: dict, seed: int) -> dict:
    """Train a GPT described by ``config["model"]`` with ``config["train"]``; return a summary."""
    _, _, rec = train_gpt(config, seed, config.get("batch", SIZES[config["mode"]]["batch"]))
    return {"status": rec["status"], "diverged_at": rec["diverged_at"], "final": rec["final"],
            "first_loss": rec["metrics"][0]["loss"] if rec["metrics"] else None,
            "curve": [(m["step"], m["loss"]) for m in rec["metrics"]], "instruments": rec["instruments"],
            "wall_time_s": rec["wall_time_s"], "error": rec["error"]}


def final_loss(r: dict) -> float:
    """Final validation loss; a diverged run counts as its first (initial) loss, as if it learned nothing."""
    res = r["result"]
    if res["status"] == "ok" and math.isfinite(res["final"].get("val_loss", math.nan)):
        return res["final"]["val_loss"]
    return res["first_loss"] if res["first_loss"] is not None and math.isfinite(res["first_loss"]) else math.nan


def final_losses(records, name) -> dict[int, float]:
    return {r["seed"]: final_loss(r) for r in records if r["name"] == name}


def bar_plot(records, prefix, title, ylabel="final validation loss (nats/char)"):
    plt = pyplot()
    groups = sorted(by_name(records))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, name in enumerate(groups):
        vals = list(final_losses(records, name).values())
        ax.scatter([i] * len(vals), vals, color=f"C{i % 10}", zorder=3)
        ax.bar(i, mean(vals), color=f"C{i % 10}", alpha=0.35)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (dots: seeds; bars: mean)")
    lo = min(min(final_losses(records, g).values()) for g in groups)
    ax.set_ylim(bottom=max(0.0, lo - 0.3))
    return save_fig(fig, prefix + "-bars.png")


def log_growth(profile: list[float]) -> float:
    """log of (last block / first block): > 0 grows toward the output."""
    return math.log(profile[-1] / profile[0])


def train_for(mode: str, steps: int, **overrides) -> dict:
    """``train_cfg`` with its own step budget (warm-up and logging follow the steps, as in ``train_cfg``)."""
    return train_cfg(mode, steps=steps, warmup_steps=steps // 10, log_every=max(1, steps // 50), **overrides)


# Xiong et al.'s setup: Xavier-initialized blocks, unit-variance block inputs (embeddings N(0, 1/d) scaled by
# sqrt(d/2)), ReLU FFNs.  C21 and C22 use it; C24 keeps the C18 sizes and GELU.
XIONG = dict(init="xavier", embed_scale=True, activation="relu")


def per_seed(records, name: str) -> dict[int, dict]:
    """The records of one run name by seed."""
    return {r["seed"]: r for r in records if r["name"] == name}


def complete_seeds(records, names) -> list[int]:
    """Seeds that have a record for every name in ``names`` (a seed with a missing run is left out)."""
    seeds = None
    for name in names:
        have = set(per_seed(records, name))
        seeds = have if seeds is None else seeds & have
    return sorted(seeds or ())

"""The 1-D ConvNet runs the vision and BatchNorm claims share: sizes per mode, data, training, test accuracy,
BatchNorm statistics re-estimated, train/eval logits (C01-C03, C09-C16, C30, C33, C35-C38)."""

from __future__ import annotations

import math

from ..plots import pyplot, save_fig
from ..spec import PerMode
from ..verdicts import mean


CNN = PerMode({  # model and budget per mode (MNIST-1D, 4000 train / 1000 test signals of length 40)
    "quick": dict(widths=[16, 32], blocks_per_stage=1, steps=300, batch=32),
    "full": dict(widths=[16, 32, 64], blocks_per_stage=1, steps=800, batch=32),
    "paper": dict(widths=[64, 128, 256], blocks_per_stage=2, steps=3000, batch=32),
})


def model_cfg(mode: str, **overrides) -> dict:
    s = CNN[mode]
    return {"dim": 1, "input_size": 40, "widths": s["widths"], "blocks_per_stage": s["blocks_per_stage"],
            "arch": "vgg", **overrides}


def train_cfg(mode: str, **overrides) -> dict:
    steps = overrides.pop("steps", CNN[mode]["steps"])
    return {"steps": steps, "lr": 3e-3, "warmup_steps": steps // 10, "grad_clip": 1.0,
            "log_every": max(1, steps // 50), **overrides}


def load_data(spec: dict | None):
    """``{"name": "mnist1d" | "digits", **kwargs}`` -> ClassificationData (MNIST-1D by default)."""
    from ...data import digits, mnist1d

    spec = dict(spec or {"name": "mnist1d"})
    name = spec.pop("name")
    return mnist1d(**spec) if name == "mnist1d" else digits(**spec)


def build_net(model: dict):
    from ...models import ConvNet, ConvNetConfig

    cfg = dict(model)
    cfg["widths"] = tuple(cfg["widths"])
    return ConvNet(ConvNetConfig(**cfg))


def train_net(config: dict, seed: int, net=None, data=None):
    """Train the ConvNet of ``config["model"]`` (or ``net``) on ``config["data"]``; return (net, data, record)."""
    import torch

    from ...train import ClassificationTask, TrainConfig, train

    data = data if data is not None else load_data(config.get("data"))
    torch.manual_seed(seed)
    net = net if net is not None else build_net(config["model"])
    tcfg = dict(config["train"])
    if "betas" in tcfg:
        tcfg["betas"] = tuple(tcfg["betas"])
    task = ClassificationTask(data, config.get("batch", 32), ghost_batch=config.get("ghost_batch"))
    rec = train(net, task, TrainConfig(**tcfg, seed=seed, progress=False, device=config.get("device", "cpu")))
    return net.cpu(), data, rec  # trained on the run's device; the analyses that follow run on the CPU


def summary(rec: dict) -> dict:
    return {"status": rec["status"], "diverged_at": rec["diverged_at"], "final": rec["final"],
            "first_loss": rec["metrics"][0]["loss"] if rec["metrics"] else None,
            "curve": [(m["step"], m["loss"]) for m in rec["metrics"]], "evals": rec["evals"],
            "wall_time_s": rec["wall_time_s"], "error": rec["error"]}


def cnn_run(config: dict, seed: int) -> dict:
    """Train a ConvNet and return its summary (final metrics, loss curve, evaluations)."""
    return summary(train_net(config, seed)[2])


def test_accuracy(net, data) -> float:
    """Accuracy on ``data``'s test split in eval mode (the model's mode is restored)."""
    import torch

    from ...train.tasks import _eval_mode

    with _eval_mode(net), torch.no_grad():
        logits = torch.cat([net(c) for c in data.x_test.split(512)])
    return (logits.argmax(-1) == data.y_test).float().mean().item()


def bars(values: dict[str, list[float]], path: str, title: str, ylabel: str) -> str:
    """One bar per group (its mean) with a dot per seed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, vals) in enumerate(values.items()):
        ax.scatter([i] * len(vals), vals, color=f"C{i % 10}", zorder=3)
        ax.bar(i, mean(vals), color=f"C{i % 10}", alpha=0.35)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(list(values), rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (dots: seeds; bars: mean)", fontsize=9)
    return save_fig(fig, path)


def final_value(r: dict, key: str) -> float:
    res = r["result"]
    return res["final"].get(key, math.nan) if res["status"] == "ok" else math.nan


def reestimate(net, x, batch: int = 256) -> None:
    """Recompute every BatchNorm's running statistics on ``x`` as a cumulative average (dropout off)."""
    import torch

    from ...layers import BatchNorm

    bns = [m for m in net.modules() if isinstance(m, BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.eval()
    for m in bns:
        m.train()
    with torch.no_grad():
        for chunk in x.split(batch):
            net(chunk)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    net.eval()


def train_eval_run(config: dict, seed: int) -> dict:
    """Train briefly, then compare a test signal's logits in eval mode, in a random training batch, and in a
    batch of its own class (training-mode passes run on a copy, so running stats are untouched)."""
    import copy

    import torch

    net, data, rec = train_net(config, seed)
    g = torch.Generator().manual_seed(seed)
    probe = torch.randperm(len(data.y_test), generator=g)[:32]
    train_mode = copy.deepcopy(net).train()
    net.eval()
    gaps_eval, gaps_comp, flips = [], [], 0
    with torch.no_grad():
        for i in probe.tolist():
            x = data.x_test[i : i + 1]
            others = data.x_train[torch.randint(0, len(data.y_train), (31,), generator=g)]
            same = data.x_train[data.y_train == data.y_test[i]][:31]
            e = net(x)[0]
            a = train_mode(torch.cat([x, others]))[0]
            b = train_mode(torch.cat([x, same]))[0]
            gaps_eval.append(((a - e).norm() / e.norm()).item())
            gaps_comp.append(((a - b).norm() / a.norm()).item())
            flips += int(a.argmax() != e.argmax())
    return {**summary(rec), "eval_vs_train": mean(gaps_eval), "batch_composition": mean(gaps_comp),
            "prediction_flips": flips / len(probe)}

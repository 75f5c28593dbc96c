"""C32: Under muP-style scaling, activations stay O(1) as width grows (stretch).

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import model_cfg, train_for, train_gpt
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..stats import interval
from ..verdicts import ci_text, fmt, mean, within


WIDTHS = PerMode({"quick": [32, 64, 128], "full": [32, 64, 128, 256], "paper": [64, 128, 256, 512, 1024]})

STEPS = PerMode({"quick": 100, "full": 300})

SEEDS = PerMode({"quick": 4, "full": 4})

FLAT = 0.25  # |slope| below this: the scale changes by less than 2**0.25 = 1.19x per doubling of width


def run(config: dict, seed: int) -> dict:
    """Train briefly at one width, then measure activation scales on a fixed batch."""
    import torch

    from ...data import random_windows

    model, corpus, rec = train_gpt(config, seed, batch=8)
    batch = random_windows(corpus.val, 16, config["model"]["block_size"], torch.Generator().manual_seed(7))
    hidden: dict[str, torch.Tensor] = {}
    handle = model.blocks[-1].register_forward_hook(lambda m, a, out: hidden.__setitem__("h", out.detach()))
    model.eval()
    with torch.no_grad():
        logits = model(batch.x)
    handle.remove()
    return {"status": rec["status"], "logit_rms": logits.float().square().mean().sqrt().item(),
            "stream_rms": hidden["h"].float().square().mean().sqrt().item(),
            "final_loss": rec["metrics"][-1]["loss"] if rec["metrics"] else math.nan}


def grid(mode):
    out = []
    for param in ("standard", "muP"):
        for w in WIDTHS[mode]:
            out.append((f"{param} d={w}", {
                "model": model_cfg(mode, n_layer=2, d_model=w, n_head=4, mup_base_width=32 if param == "muP" else None),
                "train": train_for(mode, STEPS[mode], lr=3e-3),
                "width": w}))
    return out


def _slopes(records, param: str, key: str) -> list[float]:
    """Per seed: least-squares slope of log(key) against log(width)."""
    out = []
    for s in sorted({r["seed"] for r in records}):
        pts = [(math.log(r["config"]["width"]), math.log(r["result"][key])) for r in records
               if r["seed"] == s and r["name"].startswith(param + " ") and r["result"][key] > 0]
        if len(pts) >= 2:
            mx, my = mean(p[0] for p in pts), mean(p[1] for p in pts)
            out.append(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts))
    return out


def verdict(records) -> Verdict:
    mup, sp = _slopes(records, "muP", "logit_rms"), _slopes(records, "standard", "logit_rms")
    v = within(mup, what="muP: slope of log(output-logit RMS) against log(width) after training (one per seed)",
                tolerance=FLAT)
    standard = interval("standard: slope of log(output-logit RMS) against log(width) (not judged)", sp)
    stream = interval("muP: slope of log(residual-stream RMS) against log(width) (not judged)",
                      _slopes(records, "muP", "stream_rms"))
    v.summary += f"; {standard.what}: {standard.text()}; {stream.what}: {stream.text()}"
    v.numbers.update({"mup_logit_slopes": mup, "standard_logit_slopes": sp, "standard": standard.to_dict(),
                      "mup_stream": stream.to_dict()})
    v.key_number = f"slope muP {ci_text(v)}, standard {fmt(standard.estimate)}"
    widths = sorted({r["config"]["width"] for r in records}) or WIDTHS["quick"]
    v.versus_paper = (
        "paper: under muP the coordinate size of activations and output logits stays flat as width grows (slope "
        "about 0), under standard parametrization the logits grow with width once training starts (Yang et al. "
        f"2021, Tensor Programs V, coordinate checks); here: slope muP {ci_text(v)}, standard "
        f"{fmt(standard.estimate)} over {len(mup)} seeds; scale: a 2-block character-level GPT at widths "
        f"{widths[0]}..{widths[-1]} after {STEPS['quick']} (quick) or {STEPS['full']} (full) steps, "
        "against widths in the thousands")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, param in enumerate(("standard", "muP")):
        rr = [r for r in records if r["name"].startswith(param + " ")]
        ax.scatter([r["config"]["width"] for r in rr], [r["result"]["logit_rms"] for r in rr], color=f"C{i}",
                   label=param)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width d_model")
    ax.set_ylabel("RMS of the output logits after training")
    ax.set_title("Activation scale across widths (dots: seeds)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-widths.png")]


SPEC = experiment(
    claim="C32", title="Under muP-style scaling, activations stay O(1) as width grows (stretch)",
    statement="With muP-style width scaling, normalized activations stay O(1) as width grows.",
    setup=f"2-block pre-LN GPT at widths 32..128 (quick, {STEPS['quick']} steps) or 32..256 (full, "
          f"{STEPS['full']} steps), standard parametrization vs muP relative to width 32 (hidden init / "
          "sqrt(m), hidden lr / m, logits / m, attention 1/d_head), same lr 3e-3; the RMS of the output logits and "
          "of the residual stream on fixed validation windows after training; per seed, the least-squares slope "
          f"of log(logit RMS) against log(width) ({SEEDS['quick']} seeds quick, {SEEDS['full']} full). "
          f"Rule (equivalence): the 95% t interval of muP's mean slope lies inside +-{FLAT:g} (the scale "
          "changes by less than 1.19x per doubling of width); wholly outside: not supported; otherwise "
          "inconclusive. Standard parametrization's slope is shown as the contrast, not judged.",
    grid=grid, seeds=SEEDS, run=run, verdict=verdict, plot=plot,
    paper="Yang et al. 2021 (Tensor Programs V), Figure 1/5: under muP, activation and logit scales stay "
          "constant across widths while standard parametrization's grow.",
)

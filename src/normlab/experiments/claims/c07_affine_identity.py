"""C07: The affine transform can restore the identity.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..plots import pyplot, save_fig, seed_lines
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, combine_verdicts, compare, fmt, mean, paired_by_seed, threshold


def grid(mode):
    steps = PerMode({"quick": 300, "full": 800})[mode]
    return [(f"{kind} affine={aff}", {"kind": kind, "affine": aff, "steps": steps})
            for kind in ("batchnorm", "layernorm") for aff in (True, False)]


def run(config: dict, seed: int) -> dict:
    """Fit a norm layer (plus nothing else) to reproduce its input; return the relative error in eval mode."""
    import torch

    from ... import BatchNorm1d, LayerNorm

    d, batch = 16, 256
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(d, generator=g) * 6 - 3
    sd = torch.rand(d, generator=g) * 2.5 + 0.5

    def sample():
        return torch.randn(batch, d, generator=g) * sd + mu

    layer = (BatchNorm1d(d, affine=config["affine"]) if config["kind"] == "batchnorm"
             else LayerNorm(d, elementwise_affine=config["affine"]))
    params = list(layer.parameters())
    opt = torch.optim.Adam(params, lr=0.05) if params else None
    curve = []
    for step in range(config["steps"]):
        x = sample()
        loss = (layer(x) - x).square().mean()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        if step % 20 == 0:
            curve.append((step, loss.item()))
    layer.eval()
    with torch.no_grad():
        x = torch.cat([sample() for _ in range(8)])
        rel = ((layer(x) - x).square().mean() / x.var(0).mean()).item()
    return {"rel_error": rel, "curve": curve}


SEEDS = PerMode({"quick": 6, "full": 6})

GOOD = 0.01  # relative error below this: the identity is represented


def _log10(e: float) -> float:
    return math.log10(max(e, 1e-12))


def verdict(records) -> Verdict:
    g = by_name(records)
    aff, raw = paired_by_seed(g.get("batchnorm affine=True", []), g.get("batchnorm affine=False", []),
                              lambda r: r["result"]["rel_error"])
    gap = compare([_log10(e) for e in raw], [_log10(e) for e in aff], expect="greater",
                  what="log10 relative error of BatchNorm fit to the identity", label_a="without affine",
                  label_b="with affine", min_effect=1.0, paired=True)
    good = threshold([_log10(e) for e in aff], what="log10 relative error of BatchNorm with affine",
                     below=math.log10(GOOD))
    v = combine_verdicts({"affine beats no affine by over a decade": gap,
                          f"with affine the error is below {GOOD:g}": good})
    ln = [r["result"]["rel_error"] for r in g.get("layernorm affine=True", [])]
    v.summary += (f"; relative squared error in eval mode: with affine {fmt(mean(aff))}, without {fmt(mean(raw))}"
                  + (f"; LayerNorm with affine {fmt(mean(ln))} (not judged: per-row statistics, gamma/beta cannot "
                     "undo them when rows differ)" if ln else ""))
    v.numbers.update({"with_affine": aff, "without_affine": raw, "layernorm_affine": ln})
    v.key_number = f"{fmt(mean(aff))} vs {fmt(mean(raw))}"
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    seed_lines(ax, records, lambda r: zip(*r["result"]["curve"]), alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE to the input (per element)")
    ax.set_title("Fitting a norm layer to the identity (one line per seed)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-fit.png")]


SPEC = experiment(
    claim="C07", title="The affine transform can restore the identity",
    statement="With learnable gamma and beta a BatchNorm layer can represent the identity on its input "
              "distribution; without them it cannot.",
    setup="A lone BatchNorm1d (and LayerNorm, for contrast) over 16 features whose means lie in [-3, 3] and stds "
          "in [0.5, 3]; Adam lr 0.05 on MSE(layer(x), x), batches of 256 (quick 300 steps, full 800); error "
          f"measured in eval mode, relative to the input variance; {SEEDS['quick']} seeds per mode, the arms of "
          "a seed see the same feature means, stds and batches. Rule (both must hold, 95% t intervals on log10 "
          "errors): without affine the error exceeds the error with affine by more than a decade (paired by "
          f"seed), and with affine it is below {GOOD:g}.",
    grid=grid, seeds=SEEDS, run=run, verdict=verdict, plot=plot,
    paper="Ioffe & Szegedy 2015, Section 3: setting gamma = sqrt(Var[x]) and beta = E[x] recovers the original "
          "activations.",
)

"""C20: One outlier crushes the other features; clipping or eps limits the damage.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math
from collections import defaultdict

from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import any_of, combine_verdicts, fmt, mean, threshold


def run(config: dict, seed: int) -> dict:
    """Share of the other features' signal kept when one feature of a row is an extreme outlier."""
    import torch

    from ... import functional as NF

    g = torch.Generator().manual_seed(seed)
    d, big = config["dim"], config["outlier"]
    x = torch.randn(256, d, generator=g, dtype=torch.float64)
    spiked = x.clone()
    spiked[:, 0] = big
    out = {}
    for name, center in (("rmsnorm", False), ("layernorm", True)):
        for eps in config["eps"]:
            for clip in config["clip"]:
                def norm(t):
                    t = t if clip is None else t.clamp(-clip, clip)
                    return NF.normalize(t, -1, center=center, eps=eps)
                ref = norm(x)[:, 1:]
                # signal = spread across the other features; LayerNorm's outlier-shifted mean adds a constant
                # offset to all of them, which is not signal
                kept = (norm(spiked)[:, 1:].std(dim=1) / ref.std(dim=1)).mean().item()
                out[f"{name} eps={eps:g} clip={'none' if clip is None else f'{clip:g}'}"] = kept
    return {"kept": out}


SEEDS = PerMode({"quick": 4, "full": 4})

COLLAPSE, RESCUE = 0.2, 0.5  # share of the signal kept: below 0.2 crushed, above 0.5 rescued


def grid(mode):
    return [("outlier 1e3", {"dim": 256 if mode == "quick" else 1024, "outlier": 1e3, "eps": [1e-5, 1.0, 1e3],
                             "clip": [None, 10.0]})]


def verdict(records) -> Verdict:
    kept = defaultdict(list)  # per setting: one value per seed (fresh random rows)
    for r in sorted(records, key=lambda r: r["seed"]):
        for k, v in r["result"]["kept"].items():
            kept[k].append(v)

    def part(norm, eps, clip, **bound):
        name = f"{norm} eps={eps:g} clip={clip}"
        return threshold(kept.get(name, []), what=f"share of the other features' signal kept, {name}", **bound)

    norms = ("rmsnorm", "layernorm")
    crushed = combine_verdicts({f"{n} crushed": part(n, 1e-5, "none", below=COLLAPSE) for n in norms})
    clipped = combine_verdicts({f"{n} clipped at 10": part(n, 1e-5, "10", above=RESCUE) for n in norms})
    big_eps = combine_verdicts({f"{n} eps=1e3": part(n, 1e3, "none", above=RESCUE) for n in norms})
    remedy = any_of({"clipping at 10 rescues": clipped, "eps = 1e3 rescues": big_eps})
    v = combine_verdicts({"an outlier crushes the rest": crushed, "clipping or a larger eps limits it": remedy})
    k = {name: mean(vals) for name, vals in kept.items()}
    v.numbers["kept"] = k
    get = lambda name: fmt(k.get(name, math.nan))  # noqa: E731
    v.key_number = (f"kept {get('rmsnorm eps=1e-05 clip=none')} (RMSNorm) / {get('layernorm eps=1e-05 clip=none')} "
                    f"(LN) -> clip {get('rmsnorm eps=1e-05 clip=10')}, eps 1e3 {get('rmsnorm eps=1000 clip=none')}")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    k = verdict.numbers["kept"]
    names = sorted(k)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.barh(range(len(names)), [k[n] for n in names], color=["C0" if "rms" in n else "C1" for n in names])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("share of the other features' normalized signal kept (log; 1 = unharmed)")
    ax.set_title("One feature at 1e3 in a row of N(0,1) features")
    return [save_fig(fig, prefix + "-kept.png")]


SPEC = experiment(
    claim="C20", title="One outlier crushes the other features; clipping or eps limits the damage",
    statement="One extreme outlier dominates the RMS and crushes every other feature; clipping or a larger eps "
              "limits the damage.",
    setup="Rows of N(0,1) features (256 quick, 1024 full) with feature 0 set to 1e3; RMSNorm and LayerNorm "
          "(normlab.functional, float64) with eps 1e-5, 1, 1e3 and with the input clipped at +-10; measured: the "
          "spread (std) of the other features' outputs relative to the same row without the outlier, averaged "
          f"over 256 rows; {SEEDS['quick']} seeds (fresh rows) per mode. Rule, 95% t intervals over seeds: "
          f"both norms with eps 1e-5 keep under {COLLAPSE:g} of the signal, and either clipping at 10 (both "
          f"norms) or eps = 1e3 (both norms) keeps over {RESCUE:g}; eps = 1 is shown, not judged.",
    grid=grid, seeds=SEEDS, run=run, verdict=verdict, plot=plot,
)

"""C03: Normalization allows larger learning rates.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.cnn import cnn_run, final_value, model_cfg, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import fmt, grid_compare, mean


STABLE_ACC = 0.3  # C03: a run "trains" if it is not diverged and reaches this test accuracy (chance: 0.1)

LRS = PerMode({"quick": [0.03, 0.1, 0.3, 1.0, 3.0], "full": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]})

STEPS = PerMode({"quick": 150, "full": 300})  # quick: at 100 steps a plain net at lr 0.03 had not yet reached 30%

NORMS = PerMode({"quick": ("batchnorm", "none"), "full": ("batchnorm", "groupnorm", "layernorm", "none")})


def grid(mode):
    steps = STEPS[mode]
    return [(f"{norm} lr{lr:g}", {"model": model_cfg(mode, norm=norm), "norm": norm, "lr": lr,
                                  "train": train_cfg(mode, steps=steps, lr=lr, optimizer="sgd", momentum=0.9,
                                                     warmup_steps=0, grad_clip=None, schedule="constant")})
            for norm in NORMS[mode] for lr in LRS[mode]]


def _largest_stable(records) -> dict[str, dict[int, float]]:
    """norm -> seed -> log10 of the largest lr that trained (one decade-half below the sweep if none did)."""
    out: dict[str, dict[int, float]] = {}
    lrs = sorted({r["config"]["lr"] for r in records})
    for r in records:
        norm, seed = r["config"]["norm"], r["seed"]
        best = out.setdefault(norm, {}).setdefault(seed, math.log10(lrs[0]) - 0.5)
        ok = r["result"]["status"] == "ok" and final_value(r, "test_acc") >= STABLE_ACC
        if ok:
            out[norm][seed] = max(best, math.log10(r["config"]["lr"]))
    return out


def verdict(records) -> Verdict:
    best = _largest_stable(records)
    if "batchnorm" not in best or "none" not in best:
        return Verdict("inconclusive", "missing runs", "needs BN and no-norm sweeps",
                       tests=[grid_compare([], [], expect="greater", what="log10 largest trainable lr",
                                           label_a="BatchNorm", label_b="no norm").tests[0]])
    seeds = sorted(set(best["batchnorm"]) & set(best["none"]))
    v = grid_compare([best["batchnorm"][s] for s in seeds], [best["none"][s] for s in seeds], expect="greater",
                     what="log10 largest trainable lr", label_a="BatchNorm", label_b="no norm")
    others = "; ".join(f"{n}: {', '.join(fmt(10 ** x) for x in s.values())}" for n, s in sorted(best.items()))
    v.summary = f"largest trainable SGD lr per seed -- {others}. " + v.summary
    v.rule = (f"a run trains if it did not diverge and reached {STABLE_ACC:.0%} test accuracy; per seed, log10 of the "
              "largest lr of the sweep that trained (half a decade below the sweep if none did), so the values "
              "sit on the sweep's half-decade grid and often tie; the interval is the sign-test interval of the "
              "median per-seed log10 difference (order statistics: no 95% interval below six seeds, and seeds "
              "that agree are not an exact result: four agreeing seeds give a sign test p of 0.125); " + v.rule)
    v.key_number = (f"BN {fmt(10 ** mean(best['batchnorm'].values()))} vs none "
                    f"{fmt(10 ** mean(best['none'].values()))} (geometric means)")
    v.versus_paper = ("paper: BN allowed up to 30x the learning rate in Ioffe & Szegedy's Inception runs; here: "
                      f"BN/none ratio of the largest trainable lr {fmt(10 ** v.tests[0]['estimate'])} (geometric "
                      "mean over seeds); scale: a 3- (quick) or 4-unit (full) 1-D VGG on MNIST-1D, SGD with "
                      "momentum, a few hundred steps, half-decade lr grid")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    norms = sorted({r["config"]["norm"] for r in records})
    for i, norm in enumerate(norms):
        rs = [r for r in records if r["config"]["norm"] == norm]
        lrs = sorted({r["config"]["lr"] for r in rs})
        accs = [[final_value(r, "test_acc") if r["result"]["status"] == "ok" else 0.0 for r in rs
                 if r["config"]["lr"] == lr] for lr in lrs]
        ax.plot(lrs, [mean(a) for a in accs], marker="o", color=f"C{i}", label=norm)
        ax.fill_between(lrs, [min(a) for a in accs], [max(a) for a in accs], color=f"C{i}", alpha=0.2)
    ax.axhline(STABLE_ACC, color="k", ls=":", lw=0.8, label="'trains' threshold")
    ax.set_xscale("log")
    ax.set_xlabel("SGD learning rate (momentum 0.9, no warm-up, no clipping)")
    ax.set_ylabel("final test accuracy (0 = diverged)")
    ax.set_title("Learning-rate sweep (mean, min-max band over seeds)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-lr.png")]


SPEC = experiment(
    claim="C03", title="Normalization allows larger learning rates",
    statement="The largest learning rate at which a network still trains is higher with BatchNorm (or LN/GN) "
              "than without normalization.",
    setup="VGG-like 1-D CNN on MNIST-1D with BN or nothing (full mode adds GN and LN, shown, not judged), SGD "
          "with momentum 0.9, constant lr on a half-decade grid 0.03-3 (full: 0.01-10), no warm-up or clipping, "
          f"{STEPS['quick']} (quick) or {STEPS['full']} (full) steps of batch 32; divergence as "
          "the training loop defines it (NaN, or the loss's moving average above 1.5x the first loss). Judged: "
          "per seed log10 of the largest lr that trains, BN - none by the sign-test interval of the median "
          "per-seed difference (a grid outcome: values tie, so neither a t interval nor a bootstrap fits); 6 "
          "seeds, the fewest with a 95% sign-test interval.",
    grid=grid, seeds={"quick": 6, "full": 6}, run=cnn_run, verdict=verdict, plot=plot,
    paper="Ioffe & Szegedy 2015, Section 3.3 and 4.2: BN enables higher learning rates (up to 30x in their "
          "Inception experiments); Bjorck et al. 2018 tie BN's benefit to the larger usable learning rate.",
)

"""C31: Pre-LN tolerates larger initialization scales.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import complete_seeds, final_loss, lm_run, model_cfg, per_seed, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import compare, fmt, mean


SCALES = [2.0 ** k for k in range(7)]  # x1 .. x64 on an x2 grid

STEPS = PerMode({"quick": 80, "full": 150})

MARGIN = 0.25  # nats above the common x1 reference that still count as "trained"

EFFECT = 0.5  # log2: pre-LN's largest good scale must be larger by more than half a grid step

MODELS = {"pre-LN": "layernorm", "no norm": "none"}


def _name(prefix: str, scale: float) -> str:
    return f"{prefix} x{scale:g}"


def grid(mode):
    steps = STEPS[mode]
    return [(_name(prefix, scale),
             {"model": model_cfg(mode, n_layer=4, placement="pre", norm=norm, init_scale=scale),
              "train": train_cfg(mode, steps=steps, warmup_steps=steps // 10, log_every=max(1, steps // 25),
                                 diverge_factor=3.0)})
            for prefix, norm in MODELS.items() for scale in SCALES]


def _reference(records) -> float:
    """The common reference: mean final loss of every x1 run, both models (the default init)."""
    vals = [final_loss(r) for r in records if r["name"] in {_name(p, 1.0) for p in MODELS}]
    vals = [v for v in vals if math.isfinite(v)]
    return mean(vals)


def _largest_good(records, prefix: str, seeds, bound: float) -> dict[int, float]:
    """Per seed: log2 of the largest scale up to which every scale ends at or below ``bound`` (-1: not even x1)."""
    out = {}
    for s in seeds:
        good = -1.0
        for scale in SCALES:
            loss = final_loss(per_seed(records, _name(prefix, scale))[s])
            if not (math.isfinite(loss) and loss <= bound):
                break
            good = math.log2(scale)
        out[s] = good
    return out


def verdict(records) -> Verdict:
    seeds = complete_seeds(records, [_name(p, sc) for p in MODELS for sc in SCALES])
    ref = _reference(records)
    bound = ref + MARGIN
    good = {p: _largest_good(records, p, seeds, bound) for p in MODELS}
    v = compare([good["pre-LN"][s] for s in seeds], [good["no norm"][s] for s in seeds], expect="greater",
                paired=True, min_effect=EFFECT,
                what=f"log2 of the largest init scale whose run (and every smaller one) ends within {MARGIN} "
                     f"nats of the x1 reference {fmt(ref)}",
                label_a="pre-LN", label_b="no normalization")
    curves = {p: {f"x{sc:g}": mean(final_loss(r) for r in records if r["name"] == _name(p, sc))
                  for sc in SCALES} for p in MODELS}
    v.summary += "; mean final loss by scale: " + "; ".join(
        f"{p}: " + ", ".join(f"{k} {fmt(x)}" for k, x in c.items()) for p, c in curves.items())
    v.numbers.update({"reference": ref, "bound": bound, "largest_good_log2": good, "final_by_scale": curves})
    if seeds:
        v.key_number = (f"largest good scale (mean log2): pre-LN x{fmt(2 ** mean(good['pre-LN'].values()))}, "
                        f"none x{fmt(2 ** mean(good['no norm'].values()))} (bound {fmt(bound)} nats)")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, p in enumerate(MODELS):
        for k, s in enumerate(sorted({r["seed"] for r in records})):
            rr = {sc: per_seed(records, _name(p, sc)).get(s) for sc in SCALES}
            xs = [sc for sc in SCALES if rr[sc] is not None]
            ax.plot(xs, [final_loss(rr[sc]) for sc in xs], "o-", color=f"C{i}", alpha=0.6,
                    label=p if k == 0 else None)
    bound = verdict.numbers.get("bound")
    if bound is not None and math.isfinite(bound):
        ax.axhline(bound, color="k", ls="--", lw=1, label=f"x1 reference + {MARGIN} nats")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("init scale of the blocks' weight matrices")
    ax.set_ylabel("final validation loss (diverged: initial)")
    ax.set_title("Final loss by init scale (one line per seed)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-scales.png")]


SPEC = experiment(
    claim="C31", title="Pre-LN tolerates larger initialization scales",
    statement="Pre-LN models tolerate larger initialization scales than un-normalized residual networks.",
    setup=f"4-block GPT (C18 width), pre-LN LayerNorm or no norm, the blocks' weight matrices scaled by "
          f"x1, x2, ..., x64 (embeddings and tied head keep their init); {STEPS['quick']} steps quick, "
          f"{STEPS['full']} full, lr 1e-3 with 10% warm-up, 4 seeds quick, 5 full. A run is good when it "
          f"ends within {MARGIN} nats of a common reference, the mean final loss of all x1 runs of both "
          "models; per seed, the largest scale up to which every run is good (log2; -1 if x1 fails) is "
          f"compared paired by seed (paired t, 95%): pre-LN larger by more than {EFFECT} (half a x2 step).",
    grid=grid, seeds={"quick": 4, "full": 5}, run=lm_run, verdict=verdict, plot=plot,
)

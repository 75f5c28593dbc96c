"""C19: Pre-norm inputs are nearly zero-mean.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import lm_run, model_cfg, train_for
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import ci_text, fmt, mean, threshold


BOUND = 0.2  # |mean|/RMS below this: re-centering moves the normalized output by under 20% of its RMS

STEPS = PerMode({"quick": 200, "full": 300})

SEEDS = PerMode({"quick": 4, "full": 4})


def grid(mode):
    return [("pre-LN LayerNorm", {"model": model_cfg(mode, norm="layernorm", placement="pre"),
                                  "train": train_for(mode, STEPS[mode], instruments=["norm_inputs"])})]


def _ratios(rec) -> dict[str, float]:
    last = rec["result"]["instruments"][-1]
    return {k: v for k, v in last["norm_inputs"].items() if "q_norm" not in k and "k_norm" not in k}


def verdict(records) -> Verdict:
    per_seed = [mean(_ratios(r).values()) for r in records]
    worst = [max(_ratios(r).values()) for r in records]
    v = threshold(per_seed, what="|mean|/RMS of the norms' inputs after training, averaged over the norms of a "
                  "model (one value per seed)", below=BOUND)
    v.summary += f"; largest single norm over all seeds {fmt(max(worst)) if worst else 'n/a'}"
    v.numbers.update({"per_seed_average": per_seed, "per_seed_max": worst})
    v.key_number = f"|mean|/RMS = {ci_text(v)}"
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    names = list(_ratios(records[0]))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for j, r in enumerate(records):
        ratios = _ratios(r)
        ax.plot(range(len(names)), [ratios[n] for n in names], "o-", alpha=0.8, label=f"seed {r['seed']}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("blocks.", "b").replace(".norms.", ".") for n in names], rotation=45,
                       fontsize=7)
    ax.axhline(BOUND, color="grey", ls="--", lw=1, label=f"verdict threshold {BOUND:g}")
    ax.set_ylabel("|mean| / RMS of the norm's input")
    ax.set_title("How far from zero-mean are the inputs of each norm? (trained pre-LN)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-ratio.png")]


SPEC = experiment(
    claim="C19", title="Pre-norm inputs are nearly zero-mean",
    statement="In a trained pre-norm transformer the mean of each norm's input is small next to its RMS, so "
              "re-centering (LayerNorm's mean subtraction) changes little.",
    setup=f"Train the C18 pre-LN LayerNorm GPT for {STEPS['quick']} (quick) or {STEPS['full']} (full) "
          "steps, then measure |mean|/RMS over the feature dim at every norm's input (averaged over tokens) on "
          f"the last training batch, and average it over the model's norms (one value per seed; "
          f"{SEEDS['quick']} seeds quick, {SEEDS['full']} full). Rule: the 95% t interval of that mean "
          f"lies wholly below {BOUND:g} (re-centering then moves the normalized output by under 20% of its "
          "RMS); wholly above: not supported; otherwise inconclusive.",
    grid=grid, seeds=SEEDS, run=lm_run, verdict=verdict, plot=plot,
)

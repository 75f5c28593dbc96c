"""C18: RMSNorm matches LayerNorm's quality.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import SIZES, final_loss, lm_run, model_cfg, train_cfg
from ..plots import curves_plot
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, ci_text, equivalent, fmt, mean, paired_by_seed


TOL = 0.02  # nats/char: under 1% of the final loss (Zhang & Sennrich's 26.8 vs 26.6 BLEU is 0.75%)

SEEDS = PerMode({"quick": 4, "full": 4})


def grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm, placement="pre"), "train": train_cfg(mode)})
            for norm in ("layernorm", "rmsnorm")]


def verdict(records) -> Verdict:
    g = by_name(records)
    rms, ln = paired_by_seed(g.get("rmsnorm", []), g.get("layernorm", []), final_loss)
    v = equivalent(rms, ln, what="final validation loss (nats/char)", label_a="RMSNorm", label_b="LayerNorm",
                   tolerance=TOL, paired=True)
    v.versus_paper = (
        "paper: BLEU equal or slightly better with RMSNorm, 26.8 vs 26.6 and 27.7 vs 27.7 (Zhang & Sennrich 2019, "
        f"machine translation, read second-hand); here: final loss RMSNorm {fmt(mean(rms))} vs LayerNorm "
        f"{fmt(mean(ln))} nats/char, paired difference {ci_text(v)} over {len(rms)} seeds, tolerance "
        f"+-{TOL:g}; scale: a character-level pre-LN GPT with {SIZES['quick']['n_layer']} (quick) or "
        f"{SIZES['full']['n_layer']} (full) blocks and a few hundred CPU steps, loss instead of BLEU")
    return v


def plot(records, verdict, prefix):
    return [curves_plot(records, prefix, "Pre-LN GPT: LayerNorm vs RMSNorm")]


SPEC = experiment(
    claim="C18", title="RMSNorm matches LayerNorm's quality",
    statement="A pre-norm transformer with RMSNorm reaches the same final loss as with LayerNorm, within noise.",
    setup=f"Pre-LN GPT (quick: 2 layers, d=64, context 32, {SIZES['quick']['steps']} steps; full: 4 layers, d=96, "
          f"context 64, {SIZES['full']['steps']} steps), AdamW lr 1e-3 with warm-up and cosine decay, CPython "
          "documentation text; validation loss on fixed held-out windows. "
          f"{SEEDS['quick']} seeds quick, {SEEDS['full']} full; the two arms of a seed share init seed "
          "and data order. Rule (equivalence): the 95% paired t interval of RMSNorm's minus LayerNorm's final "
          f"loss must lie inside +-{TOL:g} nats/char (under 1% of the loss); wholly outside: not supported; "
          "straddling a bound: inconclusive.",
    grid=grid, seeds=SEEDS, run=lm_run, verdict=verdict, plot=plot,
    paper="Zhang & Sennrich 2019 (RMSNorm): comparable quality to LayerNorm on several tasks at 7-64% less "
          "time per step; BLEU 26.8 vs 26.6 and 27.7 vs 27.7 (read second-hand).",
)

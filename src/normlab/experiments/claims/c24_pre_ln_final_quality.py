"""C24: Pre-LN can end slightly worse than a warmed-up post-LN.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import SIZES, bar_plot, final_loss, lm_run, model_cfg, train_cfg
from ..spec import Verdict, experiment
from ..verdicts import by_name, ci_text, compare, paired_by_seed


def grid(mode):
    s = SIZES[mode]
    return [(p, {"model": model_cfg(mode, placement=p, init="xavier"),
                 "train": train_cfg(mode, warmup_steps=s["steps"] // 4, betas=[0.9, 0.98])})
            for p in ("post", "pre")]


def verdict(records) -> Verdict:
    g = by_name(records)
    pre, post = paired_by_seed(g.get("pre", []), g.get("post", []), final_loss)
    v = compare(pre, post, expect="greater", what="final validation loss (nats/char)", label_a="pre-LN",
                label_b="post-LN (warmed up)", paired=True)
    v.versus_paper = (
        "paper: pre-LN without warm-up reached about 34 BLEU on IWSLT14 De-En, as post-LN with warm-up did "
        "(Xiong et al.); Liu et al. 2020 report post-LN ahead when it trains; here: pre-LN minus post-LN "
        f"final loss {ci_text(v)} nats/char over {len(pre)} seeds; scale: a character-level GPT at the C18 sizes, "
        "a few hundred steps on CPU, loss instead of BLEU")
    return v


SPEC = experiment(
    claim="C24", title="Pre-LN can end slightly worse than a warmed-up post-LN",
    statement="At small scale, a pre-LN transformer can end slightly worse than a post-LN one trained with a "
              "good warm-up.",
    setup="GPT with Xavier init at the C18 sizes (quick: 2 blocks, d=64, 300 steps; full: 4 blocks, d=96, 400 "
          "steps), both with a warm-up over the first quarter of the steps and cosine decay, Adam betas (0.9, "
          "0.98); 5 seeds per mode, runs of a seed share data order. Rule: pre-LN's final validation loss minus "
          "post-LN's, paired by seed, 95% t interval wholly above 0.",
    grid=grid, seeds={"quick": 5, "full": 5}, run=lm_run, verdict=verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Post-LN (warmed up) vs pre-LN")],
    paper="Xiong et al. 2020 and Liu et al. 2020 (Admin): post-LN, when it trains, often reaches better final "
          "quality than pre-LN on translation.",
)

"""C23: Pre-LN's residual stream grows with depth; post-LN's is renormalized.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import lm_run
from ..harness.stream import DEPTH, SEEDS, stream_grid, stream_growth_verdict, stream_plot, stream_rms, stream_setup
from ..spec import Verdict, experiment
from ..verdicts import ci_text, fmt, mean


def verdict(records) -> Verdict:
    v = stream_growth_verdict(records, "pre", "post", "pre-LN", "post-LN", 1.2)
    init, trained = v.numbers["mean_log_growth_init"], v.numbers["log_growth_trained"]
    depth = len(stream_rms(records[0], 0)) if records else DEPTH["quick"]
    v.versus_paper = (
        "paper: at init in pre-LN the expected squared norm of the stream grows linearly with the layer index "
        "(RMS ~ sqrt(l)), post-LN fixes it at sqrt(d) after every block (Xiong et al. 2020, Lemma 1-2; Xavier "
        f"init, unit-variance inputs); here ({depth} blocks, GPT-2 init: embeddings N(0, 0.02), residual "
        "projections scaled by 1/sqrt(2 n_layer)): last/first block at init pre-LN "
        f"{fmt(math.exp(init.get('pre', math.nan)))}x, post-LN {fmt(math.exp(init.get('post', math.nan)))}x; after "
        f"training pre-LN {fmt(math.exp(mean(trained['pre'])))}x, post-LN {fmt(math.exp(mean(trained['post'])))}x "
        f"(log ratio difference {ci_text(v)}); scale: a character-level GPT, d=64/96, a few hundred CPU steps; GPT-2 "
        "init keeps the blocks' contributions small at init, so the growth shows after training")
    return v


SPEC = experiment(
    claim="C23", title="Pre-LN's residual stream grows with depth; post-LN's is renormalized",
    statement="In pre-LN the residual stream's magnitude grows with depth (it is never renormalized); in "
              "post-LN it is renormalized every block.",
    setup="GPT, pre-LN and post-LN LayerNorm, GPT-2 initialization (std 0.02, residual projections scaled by "
          "1/sqrt(2 n_layer)). " + stream_setup(1.2, "pre-LN's minus post-LN's"),
    grid=lambda mode: stream_grid(mode, ("pre", "post")), seeds=SEEDS, run=lm_run,
    verdict=verdict, plot=stream_plot,
    paper="Xiong et al. 2020, Lemma 1-2: in pre-LN the expected squared norm of the stream grows linearly "
          "with the layer index; post-LN fixes it at sqrt(d) after every block.",
)

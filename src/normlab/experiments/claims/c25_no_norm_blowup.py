"""C25: Without normalization, activations blow up with depth.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import lm_run
from ..harness.stream import SEEDS, stream_grid, stream_growth_verdict, stream_plot, stream_setup
from ..spec import Verdict, experiment


def verdict(records) -> Verdict:
    return stream_growth_verdict(records, "none", "pre", "no normalization", "pre-LN", 1.5)


SPEC = experiment(
    claim="C25", title="Without normalization, activations blow up with depth",
    statement="Without any normalization, a deep residual network's activations blow up with depth.",
    setup="The C23 setup with norm='none' (no final norm either) against pre-LN; GPT-2 initialization "
          "(std 0.02, residual projections scaled by 1/sqrt(2 n_layer)). " + stream_setup(
              1.5, "the un-normalized net's minus pre-LN's"),
    grid=lambda mode: stream_grid(mode, ("none", "pre")), seeds=SEEDS, run=lm_run,
    verdict=verdict, plot=stream_plot,
)

"""A claim of your own in the evidence suite, loaded through ``NORMLAB_EXPERIMENTS``.

    PYTHONPATH=examples NORMLAB_EXPERIMENTS=my_claims normlab run C90 --quick
    PYTHONPATH=examples NORMLAB_EXPERIMENTS=my_claims normlab report --claims C90,C18 --quick

``NORMLAB_EXPERIMENTS`` names modules (comma-separated import paths) that the suite imports next to
its own; each registers experiments.  An experiment is a declarative spec: the claim, a grid of
named configurations, seeds per mode, a ``run`` function (config, seed) -> a JSON-able result, and
a ``verdict`` over the finished records.  Runs go to the same process pool, write the same
self-contained records (keyed by the code of ``run``, so editing it re-runs them) and appear in the
report like the built-in claims.  Claim ids are ``C`` and two digits; C01-C38 are taken.

The claim here: on inputs whose rows share a large offset, LayerNorm's outputs are centered and
RMSNorm's are not (RMSNorm divides by the root mean square without subtracting the mean).
"""

from __future__ import annotations

import torch

import normlab as nl
from normlab.experiments import compare, experiment, register


def grid(mode: str) -> list[tuple[str, dict]]:
    rows = 64 if mode == "quick" else 512
    return [(name, {"norm": name, "rows": rows, "width": 64, "offset": 3.0}) for name in ("rmsnorm", "layernorm")]


def run(config: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(config["rows"], config["width"], generator=gen) + config["offset"]
    layer = nl.RMSNorm(config["width"]) if config["norm"] == "rmsnorm" else nl.LayerNorm(config["width"])
    with torch.no_grad():
        y = layer(x)
    return {"mean_abs_row_mean": y.mean(dim=1).abs().mean().item()}


def verdict(records: list[dict]):
    value = {r["name"]: {} for r in records}
    for r in records:
        value[r["name"]][r["seed"]] = r["result"]["mean_abs_row_mean"]
    seeds = sorted(set(value.get("rmsnorm", {})) & set(value.get("layernorm", {})))
    return compare([value["rmsnorm"][s] for s in seeds], [value["layernorm"][s] for s in seeds], expect="greater",
                   what="mean |row mean| of the output", label_a="RMSNorm", label_b="LayerNorm", min_effect=0.5,
                   paired=True)


register(experiment(
    claim="C90",
    title="RMSNorm does not re-center",
    statement="On rows with a common offset of 3 standard deviations, RMSNorm's outputs keep a row mean far "
              "from 0 (by more than 0.5) where LayerNorm's are centered.",
    setup="rows of N(3, 1) values, width 64; one layer of each kind at its initialization",
    grid=grid,
    seeds={"quick": 4, "full": 6},
    run=run,
    verdict=verdict,
))

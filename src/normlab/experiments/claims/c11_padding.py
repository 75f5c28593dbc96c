"""C11: Zero-padding corrupts BatchNorm's statistics; a mask fixes it; LN is unaffected.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.sequences import D_EMB, embed
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, exact, exactness, mean, threshold


CORRUPT = 0.1  # normalized units: an output error above this is corruption, not noise


def run(config: dict, seed: int) -> dict:
    """BN statistics of zero-padded batches vs the real tokens' statistics, by padding fraction."""
    import torch

    from ... import BatchNorm, LayerNorm
    from ...data import padded_batch, text

    corpus = text(config.get("text"))
    block, batch = 64, 16
    out = []
    for mean_len in (64, 48, 32, 16, 8):
        g = torch.Generator().manual_seed(seed)
        b = padded_batch(corpus.train, batch, block, g, dist="exponential" if mean_len < 64 else "fixed",
                         mean_len=mean_len, min_len=2)
        mask = b.mask if b.mask is not None else torch.ones(batch, block, dtype=torch.bool)
        x = embed(b.x, seed) * mask[..., None]  # zero-padding
        real = x[mask]  # (tokens, D)
        truth = (real - real.mean(0)) / torch.sqrt(real.var(0, unbiased=False) + 1e-5)
        bn = BatchNorm(D_EMB, channel_dim=-1).double().train()
        plain = bn(x)[mask]
        masked = BatchNorm(D_EMB, channel_dim=-1).double().train()(x, mask=mask)[mask]
        ln = LayerNorm(D_EMB).double()
        ln_alone = torch.cat([ln(x[i, : int(mask[i].sum())]) for i in range(batch)])
        out.append({"pad_fraction": 1 - mask.float().mean().item(),
                    "bn_error": (plain - truth).abs().max().item(),
                    "masked_bn_error": (masked - truth).abs().max().item(),
                    "batch_mean_error": (bn.running_mean / bn.momentum - real.mean(0)).abs().max().item(),
                    "ln_error": (ln(x)[mask] - ln_alone).abs().max().item()})
    return {"levels": out}


def verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "missing runs", "needs the padding runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the padding runs")])
    levels = [lv for r in records for lv in r["result"]["levels"]]
    worst = [max(r["result"]["levels"], key=lambda lv: lv["pad_fraction"]) for r in records]
    pad = mean(lv["pad_fraction"] for lv in worst)
    padded = threshold([lv["bn_error"] for lv in worst], above=CORRUPT,
                       what=f"BN max |error| at the highest padding (mean {pad:.0%} of positions), per seed's batch")
    unpadded = max((lv["bn_error"] for lv in levels if lv["pad_fraction"] == 0), default=math.nan)
    parts = {
        "BN corrupted by padding": padded,
        "BN exact without padding": exactness(unpadded, what="BN without padding vs the real tokens' statistics"),
        "masked BN exact": exactness(max(lv["masked_bn_error"] for lv in levels),
                                     what="masked BN vs the real tokens' statistics, every padding level"),
        "LN unaffected": exactness(max(lv["ln_error"] for lv in levels),
                                   what="LN in a padded batch vs each sequence alone, every padding level"),
    }
    return combine_verdicts(parts, key_number=(
        f"BN error at {pad:.0%} padding {padded.key_number}; masked BN "
        f"{parts['masked BN exact'].key_number}, LN {parts['LN unaffected'].key_number}"))


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for key, label, c in (("bn_error", "BatchNorm (padding counted)", "C0"),
                          ("masked_bn_error", "BatchNorm with the mask", "C1"), ("ln_error", "LayerNorm", "C2")):
        for j, r in enumerate(records):
            lv = sorted(r["result"]["levels"], key=lambda v: v["pad_fraction"])
            ax.plot([100 * v["pad_fraction"] for v in lv], [max(v[key], 1e-17) for v in lv], marker="o", color=c,
                    label=label if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("padding (% of positions)")
    ax.set_ylabel("max |output error| (normalized units; 1e-17 = exact)")
    ax.set_title("Zero-padding vs statistics of the real tokens (one line per seed)", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-padding.png")]


SPEC = experiment(
    claim="C11", title="Zero-padding corrupts BatchNorm's statistics; a mask fixes it; LN is unaffected",
    statement="In variable-length batches the zero padding enters BN's statistics; masking it restores them; LN, "
              "computed per token, ignores padding.",
    setup="Batches of 16 sequences of CPython documentation text from the padded batcher (context 64, lengths "
          "fixed or exponential with mean 48/32/16/8), embedded with a fixed random float64 table (32 channels "
          "with offsets), padding zeroed; BN over (B,T) per channel with and without the mask vs BN over the real "
          "tokens only; LN in the padded batch vs each sequence alone; 4 (quick) / 8 (full) seeds (batch draws). "
          "Judged: unmasked BN's max error at the highest padding, by a 95% t interval over seeds, above 0.1; "
          "BN without padding, masked BN and LN exact (max error <= 1e-9 in float64; above 1e-3 refutes).",
    grid=lambda mode: [("padding", {})], seeds={"quick": 4, "full": 8}, run=run, verdict=verdict,
    plot=plot,
)

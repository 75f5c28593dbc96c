"""C12: Packing breaks BatchNorm, not LayerNorm.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.sequences import D_EMB, embed
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, exact, exactness, fmt, mean, threshold


DEPENDS = 1e-3  # an output change above this: the token's output depends on its packing partners


def run(config: dict, seed: int) -> dict:
    """A probe document packed with two different sets of partners: does its normalized output change?"""
    import torch

    from ... import BatchNorm, LayerNorm
    from ...data import packed_batch, text

    corpus = text(config.get("text"))
    block, batch, n = 64, 8, 20
    g = torch.Generator().manual_seed(seed)
    probe = corpus.train[int(torch.randint(0, len(corpus.train) - n, (1,), generator=g)) :][:n]
    outs: dict[str, list] = {"bn": [], "ln": [], "masked_bn": []}
    for k in range(2):
        b = packed_batch(corpus.train, batch, block, torch.Generator().manual_seed(seed * 10 + k + 1))
        x = b.x.clone()
        x[0, :n] = probe
        e = embed(x, seed)
        mask = torch.ones(batch, block, dtype=torch.bool)
        outs["bn"].append(BatchNorm(D_EMB, channel_dim=-1).double().train()(e)[0, :n])
        outs["masked_bn"].append(BatchNorm(D_EMB, channel_dim=-1).double().train()(e, mask=mask)[0, :n])
        outs["ln"].append(LayerNorm(D_EMB).double()(e)[0, :n])
    res = {k: (v[0] - v[1]).abs().max().item() for k, v in outs.items()}
    res["per_token"] = {k: (v[0] - v[1]).abs().amax(-1).tolist() for k, v in outs.items()}
    return res


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (key, label) in enumerate((("bn", "BatchNorm"), ("masked_bn", "BatchNorm with a mask"),
                                      ("ln", "LayerNorm"))):
        for j, r in enumerate(records):
            v = r["result"]["per_token"][key]
            ax.plot(range(len(v)), [max(x, 1e-17) for x in v], marker="o", ms=3, color=f"C{i}",
                    label=label if j == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("token of the probe document")
    ax.set_ylabel("max |output change| (1e-17 = identical)")
    ax.set_title("The same document packed with two different partners (one line per seed)", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-packing.png")]


def verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "missing runs", "needs the packing runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the packing runs")])
    bn = [r["result"]["bn"] for r in records]
    parts = {
        "BN depends on the partners": threshold(
            bn, above=DEPENDS, what="BN max change of the probe's outputs between two packings, per seed"),
        "LN does not": exactness(max(r["result"]["ln"] for r in records),
                                 what="LN max change of the probe's outputs between two packings, every seed"),
    }
    v = combine_verdicts(parts, key_number=(f"BN change {parts['BN depends on the partners'].key_number}; "
                                            f"LN {parts['LN does not'].key_number}"))
    v.summary += (f"; BN with an all-true mask changes as much ({fmt(mean(r['result']['masked_bn'] for r in records))}"
                  ": a mask cannot separate packed documents)")
    return v


SPEC = experiment(
    claim="C12", title="Packing breaks BatchNorm, not LayerNorm",
    statement="In packed sequences BN's statistics mix documents, so a token's output depends on what it is packed "
              "with; LN's does not.",
    setup="A 20-token probe document placed at the start of row 0 of two different packed batches (8 x 64 tokens "
          "of CPython documentation text, packed batcher), embedded as in C11; BN over (B,T) per channel (also "
          "with an all-true mask) and LN; max change of the probe's outputs between the two packings; 4 (quick) / 8 "
          "(full) seeds. Judged: BN's change, by a 95% t interval over seeds, above 1e-3; LN's exact (<= 1e-9).",
    grid=lambda mode: [("packing", {})], seeds={"quick": 4, "full": 8}, run=run, verdict=verdict,
    plot=plot,
)

"""C06: LayerNorm is not BatchNorm at batch size 1.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.exact import SHAPE, exact_grid
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import fmt, threshold


def run(config: dict, seed: int) -> dict:
    import torch

    from ... import BatchNorm2d, InstanceNorm2d, LayerNorm

    n, c, h, w = SHAPE
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randn(1, c, 1, 1, generator=g, dtype=torch.float64) * 3  # channels differ in mean
    x = torch.randn((1, c, h, w), generator=g, dtype=torch.float64) + offsets
    bn = BatchNorm2d(c).double().train()(x)
    ln = LayerNorm((c, h, w)).double()(x)
    inn = InstanceNorm2d(c).double()(x)
    return {"bn1_vs_ln": (bn - ln).abs().max().item(), "bn1_vs_in": (bn - inn).abs().max().item(),
            "ln_std": ln.std().item(), "outputs": {"bn": bn.flatten().tolist(), "ln": ln.flatten().tolist(),
                                                   "in": inn.flatten().tolist()}}


SEEDS = PerMode({"quick": 6, "full": 8})

MIN = 0.1  # normalized units: a difference larger than this is not rounding


def verdict(records) -> Verdict:
    d = [r["result"]["bn1_vs_ln"] for r in records]
    i = [r["result"]["bn1_vs_in"] for r in records]
    v = threshold(d, what="max |BatchNorm at batch 1 (training) - LayerNorm(C,H,W)| per input (normalized units)",
                  above=MIN)
    v.summary += (f"; BN at batch 1 vs InstanceNorm: max |difference| {fmt(max(i)) if i else 'n/a'} over all seeds "
                  "(BN at batch 1 is InstanceNorm, not LayerNorm; not judged)")
    v.numbers.update({"bn1_vs_ln": d, "bn1_vs_in": i})
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    out = records[0]["result"]["outputs"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(out["bn"], out["ln"], s=10, label="LayerNorm(C,H,W)")
    ax.scatter(out["bn"], out["in"], s=10, marker="x", label="InstanceNorm")
    lim = max(map(abs, out["bn"] + out["ln"])) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8)
    ax.set_xlabel("BatchNorm output at batch size 1 (training mode)")
    ax.set_ylabel("other layer's output, same element")
    ax.set_title("One (1, C, H, W) sample: BN at batch 1 = IN, not LN", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-batch1.png")]


SPEC = experiment(
    claim="C06", title="LayerNorm is not BatchNorm at batch size 1",
    statement="LayerNorm is not BatchNorm with a batch of one: they reduce over different axes.",
    setup=f"float64 (1, {SHAPE[1]}, {SHAPE[2]}, {SHAPE[3]}) input whose channels have different means; BN in "
          "training mode vs LayerNorm over (C,H,W) vs InstanceNorm, no affine difference (gamma 1, beta 0); one "
          f"fresh input per seed ({SEEDS['quick']} quick, {SEEDS['full']} full). Rule: the 95% t interval "
          f"of the mean over inputs of max |BN - LN| lies wholly above {MIN:g}; wholly below: not supported; "
          "otherwise inconclusive.",
    grid=exact_grid, seeds=SEEDS, run=run, verdict=verdict, plot=plot,
)

"""C05: GroupNorm's two limits: one group is LayerNorm, C groups is InstanceNorm.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.exact import EXACT_SEEDS, SHAPE, exact_grid
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import exact_part, exact_verdict, fmt


TOL = 1e-9  # float64 agreement that counts as "identical"


def run(config: dict, seed: int) -> dict:
    import torch

    from ... import GroupNorm, InstanceNorm2d, LayerNorm

    n, c, h, w = SHAPE
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(SHAPE, generator=g, dtype=torch.float64) * 3 + 2).requires_grad_(True)
    up = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    gamma = torch.randn(c, generator=g, dtype=torch.float64)
    beta = torch.randn(c, generator=g, dtype=torch.float64)

    def both(layer_a, layer_b):
        ya, yb = layer_a(x), layer_b(x)
        (ga,) = torch.autograd.grad(ya, x, up)
        (gb,) = torch.autograd.grad(yb, x, up)
        return {"forward": (ya - yb).abs().max().item(), "backward": (ga - gb).abs().max().item()}

    out = {}
    nn = torch.nn
    for lib, (GN, LN, IN) in (("", (GroupNorm, LayerNorm, InstanceNorm2d)),
                              ("torch_", (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d))):
        gn1, ln = GN(1, c).double(), LN((c, h, w)).double()
        gnc, inn = GN(c, c).double(), IN(c, affine=True).double()
        with torch.no_grad():
            for m in (gn1, gnc, inn):
                m.weight.copy_(gamma)
                m.bias.copy_(beta)
            ln.weight.copy_(gamma[:, None, None].expand(c, h, w))  # GN's per-channel affine, spread over H, W
            ln.bias.copy_(beta[:, None, None].expand(c, h, w))
        out[lib + "gn1_vs_ln"], out[lib + "gnC_vs_in"] = both(gn1, ln), both(gnc, inn)
    return {**out,
            "affine_params": {"GroupNorm": c * 2, "LayerNorm (C,H,W)": c * h * w * 2}}


PAIRS = {"gn1_vs_ln": "GroupNorm(1) vs LayerNorm(C,H,W), normlab", "gnC_vs_in": "GroupNorm(C) vs InstanceNorm, "
             "normlab", "torch_gn1_vs_ln": "GroupNorm(1) vs LayerNorm(C,H,W), torch",
             "torch_gnC_vs_in": "GroupNorm(C) vs InstanceNorm, torch"}


def verdict(records) -> Verdict:
    records = sorted(records, key=lambda r: r["seed"])
    keys = [k for k in PAIRS if not records or k in records[0]["result"]]
    per_seed = {k: [max(r["result"][k].values()) for r in records] for k in keys}
    rule = f"supported if forward outputs and input gradients agree to {TOL:g} in float64"
    parts = [exact_part(per_seed[k], lambda d: d <= TOL, what=f"max |difference|, {PAIRS[k]}", rule=rule)
             for k in keys]
    worst = {k: max(v) if v else math.nan for k, v in per_seed.items()}
    summary = (f"max |difference| (forward and input gradient, float64, worst of {len(records)} seeds): "
               + ", ".join(f"{PAIRS[k]} {fmt(worst[k])}" for k in keys))
    return exact_verdict(parts, summary, f"every identity (normlab's and torch's layers) must hold to {TOL:g} in "
                         "float64 on every seed (with LN's affine set to GN's per-channel values spread over H,W)",
                         worst, key_number=f"{fmt(max(worst.values()) if worst else math.nan)} max diff")


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = {"gn1_vs_ln": "GN(1) vs LN(C,H,W)\nnormlab", "gnC_vs_in": "GN(C) vs IN\nnormlab",
              "torch_gn1_vs_ln": "GN(1) vs LN(C,H,W)\ntorch", "torch_gnC_vs_in": "GN(C) vs IN\ntorch"}
    keys = [k for k in labels if k in records[0]["result"]]
    for j, part in enumerate(("forward", "backward")):
        vals = [max(max(r["result"][k][part] for r in records), 1e-18) for k in keys]
        ax.bar([i + 0.38 * j for i in range(len(keys))], vals, 0.38, label=part)
    ax.axhline(TOL, color="k", ls=":", lw=0.8, label=f"tolerance {TOL:g}")
    ax.set_yscale("log")
    ax.set_ylim(1e-19, 1e-6)
    ax.set_xticks([i + 0.19 for i in range(len(keys))], [labels[k] for k in keys], fontsize=7)
    ax.set_ylabel("max |difference| (float64; 1e-18 = exactly 0)")
    ax.set_title("GroupNorm's limits, worst over seeds", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-identities.png")]


SPEC = experiment(
    claim="C05", title="GroupNorm's two limits: one group is LayerNorm, C groups is InstanceNorm",
    statement="GroupNorm with one group equals LayerNorm over (C,H,W) up to the affine shape; with C groups it "
              "equals InstanceNorm.",
    setup=f"float64 input {SHAPE} with mean 2 and std 3, shared random gamma/beta; forward outputs and input "
          "gradients (random upstream gradient) compared element-wise, for normlab's layers and for torch's; 2 "
          "seeds quick, 3 full. Rule: exact checks to 1e-9, every seed must pass (all fail: not supported; seeds "
          "disagree: inconclusive).",
    grid=exact_grid, seeds=EXACT_SEEDS, run=run, verdict=verdict, plot=plot,
    paper="Wu & He 2018, Section 3.1: GN becomes LN when G=1 and IN when G=C.",
)

"""C04: Which axes each normalizer reduces over.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.exact import EXACT_SEEDS, SHAPE, exact_grid
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import exact_part, exact_verdict, fmt


TOKENS = (3, 5, 8)  # B, T, D of the transformer tensor


def _layers():
    """name -> (layer, input shape, the claimed pooled axes, the claimed affine shape)."""
    from ... import BatchNorm2d, GroupNorm, InstanceNorm2d, LayerNorm, LayerNorm2d

    n, c, h, w = SHAPE
    b, t, d = TOKENS
    return {
        "BatchNorm": (BatchNorm2d(c), SHAPE, "N,H,W per channel", [c]),
        "LayerNorm (CNN, over C,H,W)": (LayerNorm((c, h, w)), SHAPE, "C,H,W per sample", [c, h, w]),
        "LayerNorm over C (channels-first)": (LayerNorm2d(c), SHAPE, "C per sample and position", [c]),
        "InstanceNorm": (InstanceNorm2d(c, affine=True), SHAPE, "H,W per sample and channel", [c]),
        "GroupNorm (G=3)": (GroupNorm(3, c), SHAPE, "C/G channels and H,W per sample and group", [c]),
        "LayerNorm (transformer, over D)": (LayerNorm(d), TOKENS, "D per token", [d]),
    }


def _expected_pool(name: str, shape, at):
    import torch

    idx = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
    if name.startswith("LayerNorm (transformer"):
        b, t, _ = idx
        return (b == at[0]) & (t == at[1])
    n, c, h, w = idx
    if name == "BatchNorm":
        return c == at[1]
    if name.startswith("LayerNorm (CNN"):
        return n == at[0]
    if name.startswith("LayerNorm over C"):
        return (n == at[0]) & (h == at[2]) & (w == at[3])
    if name == "InstanceNorm":
        return (n == at[0]) & (c == at[1])
    per = shape[1] // 3
    return (n == at[0]) & (c // per == at[1] // per)


def _pooled(layer, shape, at, seed: int):
    """The elements whose value changes ``layer(x)[at]``: the nonzero entries of that Jacobian row."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_(True)
    layer = layer.double().train()
    (grad,) = torch.autograd.grad(layer(x)[at], x)
    return grad != 0


def run(config: dict, seed: int) -> dict:
    import torch

    at_cnn, at_tok = (1, 2, 1, 0), (1, 2, 0)
    out: dict[str, dict] = {"layers": {}, "pools": {}}
    for name, (layer, shape, claimed, affine) in _layers().items():
        at = at_tok if len(shape) == 3 else at_cnn
        got = _pooled(layer, shape, at, seed)
        want = _expected_pool(name, shape, at)
        out["layers"][name] = {"claimed": claimed, "pool_matches": bool(torch.equal(got, want)),
                               "pooled_elements": int(got.sum()), "claimed_elements": int(want.sum()),
                               "affine": list(layer.weight.shape), "claimed_affine": affine}
        out["pools"][name] = {"shape": list(shape), "at": list(at), "mask": got.flatten().int().tolist()}
    # the two "LayerNorm"s of a CNN on the same tensor
    from ... import LayerNorm, LayerNorm2d

    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    a = LayerNorm(SHAPE[1:]).double()(x)
    b = LayerNorm2d(SHAPE[1]).double()(x)
    out["ln_difference"] = (a - b).abs().max().item()
    return out


def verdict(records) -> Verdict:
    records = sorted(records, key=lambda r: r["seed"])
    names = list(records[0]["result"]["layers"]) if records else []

    def bad(res):
        return [n for n, v in res["layers"].items() if not v["pool_matches"] or v["affine"] != v["claimed_affine"]]

    mismatches = [bad(r["result"]) for r in records]
    diffs = [r["result"]["ln_difference"] for r in records]
    rule_pool = ("supported if every normalizer's measured pooled set (nonzero Jacobian entries) and affine shape "
                 "equal the claimed ones")
    rule_ln = "supported if LN over (C,H,W) and LN over C differ by more than 1e-3 on one (N,C,H,W) tensor"
    parts = [exact_part([len(m) for m in mismatches], lambda k: k == 0, rule=rule_pool,
                        what=f"normalizers (of {len(names)}) whose pooled set or affine shape differs from the claim"),
             exact_part(diffs, lambda d: d > 1e-3, rule=rule_ln, worst=min,
                        what="max |LayerNorm(C,H,W) - LayerNorm over C| on one (N,C,H,W) tensor")]
    worst = max(mismatches, key=len) if mismatches else []
    summary = (f"pooled sets and affine shapes match the claim for {len(names) - len(worst)}/{len(names)} "
               f"normalizers in the worst of {len(records)} seeds"
               + (f" (mismatch: {', '.join(worst)})" if worst else "")
               + f"; LN over (C,H,W) vs LN over C on one (N,C,H,W) tensor: max |difference| at least "
               f"{fmt(min(diffs)) if diffs else 'n/a'}")
    return exact_verdict(parts, summary, rule_pool + "; and " + rule_ln + " (every seed must agree)",
                         {"mismatches": mismatches, "ln_difference": diffs},
                         key_number=f"{len(names) - len(worst)}/{len(names)} match; LN diff "
                                    f"{fmt(min(diffs)) if diffs else 'n/a'}")


def plot(records, verdict, prefix):
    import numpy as np

    plt = pyplot()
    pools = records[0]["result"]["pools"]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.2))
    for ax, (name, p) in zip(axes.flat, pools.items()):
        shape = p["shape"]
        m = np.array(p["mask"]).reshape(shape)
        if len(shape) == 4:  # rows C, columns N blocks of H*W
            n, c, h, w = shape
            img = m.transpose(1, 0, 2, 3).reshape(c, n * h * w)
            ax.set_xlabel(f"N (blocks of H*W = {h * w})")
            ax.set_ylabel("C")
            for k in range(1, n):
                ax.axvline(k * h * w - 0.5, color="k", lw=0.8)
            ax.set_xticks([k * h * w + (h * w - 1) / 2 for k in range(n)], [str(k) for k in range(n)])
        else:  # rows D, columns B blocks of T
            b, t, d = shape
            img = m.transpose(2, 0, 1).reshape(d, b * t)
            ax.set_xlabel(f"B (blocks of T = {t})")
            ax.set_ylabel("D")
            for k in range(1, b):
                ax.axvline(k * t - 0.5, color="k", lw=0.8)
            ax.set_xticks([k * t + (t - 1) / 2 for k in range(b)], [str(k) for k in range(b)])
        ax.imshow(img, cmap="Blues", vmin=0, vmax=1.3, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
    fig.suptitle("Elements pooled into the statistics of one element (blue), measured from the Jacobian",
                 fontsize=10)
    return [save_fig(fig, prefix + "-axes.png")]


SPEC = experiment(
    claim="C04", title="Which axes each normalizer reduces over",
    statement="For (N, C, H, W): BN pools N,H,W per channel, LN-in-CNNs C,H,W per sample, InstanceNorm H,W per "
              "sample and channel, GroupNorm C/G channels and H,W; LN-in-transformers pools D per token. The "
              "CNN and transformer 'LayerNorm's give different outputs.",
    setup=f"float64 random tensors of shape {SHAPE} and {TOKENS}; the pooled set of one element is the set of "
          "inputs with a nonzero entry in that output's Jacobian row (normlab layers in training mode); affine "
          "shapes read off the layers; 2 seeds (fresh inputs) quick, 3 full. Rule: exact checks, every seed must "
          "pass (all fail: not supported; seeds disagree: inconclusive).",
    grid=exact_grid, seeds=EXACT_SEEDS, run=run, verdict=verdict, plot=plot,
    paper="Wu & He 2018 (Group Normalization), Figure 2: the four normalizers as pooled regions of an N x C x "
          "(H,W) cube.",
)

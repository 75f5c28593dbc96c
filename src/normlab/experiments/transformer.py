"""Transformer claims on the small GPT and CPython's documentation text: RMSNorm, re-centering, outliers, residual growth, mixed placement, muP width (C18-C20, C23, C25, C27, C32)."""

from __future__ import annotations

import math
from collections import defaultdict

from .lm import SIZES, bar_plot, final_losses, lm_run, log_growth, model_cfg, train_cfg, train_gpt
from .plots import curves_plot, layer_profile_plot, pyplot, save_fig
from .registry import register
from .spec import Verdict, by_name, compare, equivalent, experiment, fmt, mean, spread


# ------------------------------------------------------------------------ C18
def _c18_grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm, placement="pre"), "train": train_cfg(mode)})
            for norm in ("layernorm", "rmsnorm")]


def _c18_verdict(records) -> Verdict:
    g = by_name(records)
    val = {k: [r["result"]["final"].get("val_loss", math.nan) for r in v if r["result"]["status"] == "ok"]
           for k, v in g.items()}
    return equivalent(val.get("rmsnorm", []), val.get("layernorm", []), what="final validation loss",
                      label_a="RMSNorm", label_b="LayerNorm", tolerance=0.01)


def _c18_plot(records, verdict, prefix):
    return [curves_plot(records, prefix, "Pre-LN GPT: LayerNorm vs RMSNorm")]


register(experiment(
    claim="C18", title="RMSNorm matches LayerNorm's quality",
    statement="A pre-norm transformer with RMSNorm reaches the same final loss as with LayerNorm, within noise.",
    setup=f"Pre-LN GPT (quick: 2 layers, d=64, context 32, {SIZES['quick']['steps']} steps; full: 4 layers, d=96, "
          f"context 64, {SIZES['full']['steps']} steps), AdamW lr 1e-3 with warm-up and cosine decay, CPython "
          "documentation text; validation "
          "loss on fixed held-out windows.",
    grid=_c18_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c18_verdict, plot=_c18_plot,
    paper="Zhang & Sennrich 2019 (RMSNorm): comparable quality to LayerNorm on several tasks at 7-64% less "
          "time per step.",
))


# ------------------------------------------------------------------------ C19
def _c19_grid(mode):
    return [("pre-LN LayerNorm", {"model": model_cfg(mode, norm="layernorm", placement="pre"),
                                  "train": train_cfg(mode, instruments=["norm_inputs"])})]


def _c19_ratios(rec) -> dict[str, float]:
    last = rec["result"]["instruments"][-1]
    return {k: v for k, v in last["norm_inputs"].items() if "q_norm" not in k and "k_norm" not in k}


def _c19_verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "no finished runs", "needs runs")
    per_seed = [mean(_c19_ratios(r).values()) for r in records]
    worst = [max(_c19_ratios(r).values()) for r in records]
    m, sp = mean(per_seed), spread(per_seed)
    threshold = 0.2
    if m + sp < threshold:
        status = "supported"
    elif m - sp > threshold:
        status = "not supported"
    else:
        status = "inconclusive"
    return Verdict(status, f"|mean|/RMS of norm inputs after training: average over norms {fmt(m)} "
                           f"(seed range {fmt(sp)}), largest single norm {fmt(max(worst))}",
                   f"supported if the average |mean|/RMS plus its seed range is below {threshold} (re-centering "
                   f"then moves the normalized output by under {threshold:.0%} of its RMS); not supported if the "
                   "average minus its range is above it; otherwise inconclusive",
                   {"per_seed_average": per_seed, "per_seed_max": worst}, key_number=f"|mean|/RMS = {fmt(m)}")


def _c19_plot(records, verdict, prefix):
    plt = pyplot()
    names = list(_c19_ratios(records[0]))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for j, r in enumerate(records):
        ratios = _c19_ratios(r)
        ax.plot(range(len(names)), [ratios[n] for n in names], "o-", alpha=0.8, label=f"seed {r['seed']}")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("blocks.", "b").replace(".norms.", ".") for n in names], rotation=45,
                       fontsize=7)
    ax.axhline(0.2, color="grey", ls="--", lw=1, label="verdict threshold 0.2")
    ax.set_ylabel("|mean| / RMS of the norm's input")
    ax.set_title("How far from zero-mean are the inputs of each norm? (trained pre-LN)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-ratio.png")]


register(experiment(
    claim="C19", title="Pre-norm inputs are nearly zero-mean",
    statement="In a trained pre-norm transformer the mean of each norm's input is small next to its RMS, so "
              "re-centering (LayerNorm's mean subtraction) changes little.",
    setup="Train the C18 pre-LN LayerNorm GPT, then measure |mean|/RMS over the feature dim at every norm's "
          "input (averaged over tokens) on the last training batch.",
    grid=_c19_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c19_verdict, plot=_c19_plot,
))


# ----------------------------------------------------------------- C23 / C25
C23_DEPTH = {"quick": 6, "full": 8}


def _stream_grid(mode, placements):
    return [(p, {"model": model_cfg(mode, n_layer=C23_DEPTH[mode], placement="pre" if p == "none" else p,
                                     norm="none" if p == "none" else "layernorm"),
                 "train": train_cfg(mode, instruments=["residual_rms"], lr=1e-3)}) for p in placements]


def _stream(rec, when: int) -> list[float]:
    """Residual-stream RMS after each block, at the first (0) or last (-1) instrument step."""
    return rec["result"]["instruments"][when]["residual_rms"]["rms"][1:]  # drop the embedding


def _stream_plot(records, verdict, prefix):
    g = by_name(records)
    paths = []
    for when, label in ((0, "at init"), (-1, "after training")):
        p = layer_profile_plot({k: [_stream(r, when) for r in v] for k, v in g.items()},
                                f"{prefix}-{'init' if when == 0 else 'trained'}",
                                f"Residual-stream RMS after each block, {label}", "RMS of the residual stream")
        paths.append(p)
    return paths


def _stream_growth_verdict(records, a: str, b: str, label_a: str, label_b: str, min_ratio: float) -> Verdict:
    """Group ``a``'s residual stream grows more from first to last block (after training) than group ``b``'s."""
    g = by_name(records)
    ga = [log_growth(_stream(r, -1)) for r in g.get(a, [])]
    gb = [log_growth(_stream(r, -1)) for r in g.get(b, [])]
    v = compare(ga, gb, expect="greater", what="log(last/first block) of the residual-stream RMS after "
                "training", label_a=label_a, label_b=label_b, min_effect=math.log(min_ratio))
    if ga and gb:
        v.key_number = f"last/first: {a} {fmt(math.exp(mean(ga)))}x, {b} {fmt(math.exp(mean(gb)))}x"
    return v


def _c23_verdict(records) -> Verdict:
    return _stream_growth_verdict(records, "pre", "post", "pre-LN", "post-LN", 1.2)


register(experiment(
    claim="C23", title="Pre-LN's residual stream grows with depth; post-LN's is renormalized",
    statement="In pre-LN the residual stream's magnitude grows with depth (it is never renormalized); in "
              "post-LN it is renormalized every block.",
    setup=f"GPT (quick: 6 blocks, d=64, {SIZES['quick']['steps']} steps; full: 8 blocks, d=96, "
          f"{SIZES['full']['steps']} steps), pre-LN and post-LN "
          "LayerNorm; RMS of the residual stream after each block at init and after training.",
    grid=lambda mode: _stream_grid(mode, ("pre", "post")), seeds={"quick": 2, "full": 3}, run=lm_run,
    verdict=_c23_verdict, plot=_stream_plot,
    paper="Xiong et al. 2020, Lemma 1-2: in pre-LN the expected squared norm of the stream grows linearly "
          "with the layer index; post-LN fixes it at sqrt(d) after every block.",
))


def _c25_verdict(records) -> Verdict:
    return _stream_growth_verdict(records, "none", "pre", "no normalization", "pre-LN", 1.5)


register(experiment(
    claim="C25", title="Without normalization, activations blow up with depth",
    statement="Without any normalization, a deep residual network's activations blow up with depth.",
    setup="The C23 setup with norm='none' (no final norm either) against pre-LN; GPT-2 initialization "
          "(std 0.02, residual projections scaled by 1/sqrt(2 n_layer)).",
    grid=lambda mode: _stream_grid(mode, ("none", "pre")), seeds={"quick": 2, "full": 3}, run=lm_run,
    verdict=_c25_verdict, plot=_stream_plot,
))


# ------------------------------------------------------------------------ C20
def outlier_run(config: dict, seed: int) -> dict:
    """Share of the other features' signal kept when one feature of a row is an extreme outlier."""
    import torch

    from .. import functional as NF

    g = torch.Generator().manual_seed(seed)
    d, big = config["dim"], config["outlier"]
    x = torch.randn(256, d, generator=g, dtype=torch.float64)
    spiked = x.clone()
    spiked[:, 0] = big
    out = {}
    for name, center in (("rmsnorm", False), ("layernorm", True)):
        for eps in config["eps"]:
            for clip in config["clip"]:
                def norm(t):
                    t = t if clip is None else t.clamp(-clip, clip)
                    return NF.normalize(t, -1, center=center, eps=eps)
                ref = norm(x)[:, 1:]
                # signal = spread across the other features; LayerNorm's outlier-shifted mean adds a constant
                # offset to all of them, which is not signal
                kept = (norm(spiked)[:, 1:].std(dim=1) / ref.std(dim=1)).mean().item()
                out[f"{name} eps={eps:g} clip={'none' if clip is None else f'{clip:g}'}"] = kept
    return {"kept": out}


def _c20_grid(mode):
    return [("outlier 1e3", {"dim": 256 if mode == "quick" else 1024, "outlier": 1e3, "eps": [1e-5, 1.0, 1e3],
                             "clip": [None, 10.0]})]


def _c20_verdict(records) -> Verdict:
    kept = defaultdict(list)
    for r in records:
        for k, v in r["result"]["kept"].items():
            kept[k].append(v)
    k = {name: mean(v) for name, v in kept.items()}
    plain = max(k["rmsnorm eps=1e-05 clip=none"], k["layernorm eps=1e-05 clip=none"])
    clipped = min(k["rmsnorm eps=1e-05 clip=10"], k["layernorm eps=1e-05 clip=10"])
    big_eps = max(v for name, v in k.items() if "clip=none" in name and "eps=1e-05" not in name)
    collapse = plain < 0.2
    rescued = clipped > 0.5 or big_eps > 0.5
    status = "supported" if collapse and rescued else "not supported"
    return Verdict(status, f"other features keep {fmt(plain)} of their normalized signal with a 1e3 outlier; "
                           f"clipping at 10 keeps {fmt(clipped)}; the best larger eps keeps {fmt(big_eps)}",
                   "supported if the outlier leaves the other features under 20% of their signal (collapse) and "
                   "clipping or a larger eps brings it back above 50%",
                   {"kept": k}, key_number=f"kept {fmt(plain)} -> clip {fmt(clipped)}, eps {fmt(big_eps)}")


def _c20_plot(records, verdict, prefix):
    plt = pyplot()
    k = verdict.numbers["kept"]
    names = sorted(k)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.barh(range(len(names)), [k[n] for n in names], color=["C0" if "rms" in n else "C1" for n in names])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("share of the other features' normalized signal kept (log scale; 1 = unharmed)")
    ax.set_title("One feature at 1e3 in a row of N(0,1) features")
    return [save_fig(fig, prefix + "-kept.png")]


register(experiment(
    claim="C20", title="One outlier crushes the other features; clipping or eps limits the damage",
    statement="One extreme outlier dominates the RMS and crushes every other feature; clipping or a larger eps "
              "limits the damage.",
    setup="Rows of N(0,1) features (256 quick, 1024 full) with feature 0 set to 1e3; RMSNorm and LayerNorm "
          "(normlab.functional, float64) with eps 1e-5, 1, 1e3 and with the input clipped at +-10; measured: the "
          "spread (std) of the other features' outputs relative to the same row without the outlier.",
    grid=_c20_grid, seeds={"quick": 2, "full": 3}, run=outlier_run, verdict=_c20_verdict, plot=_c20_plot,
))


# ------------------------------------------------------------------------ C27
def _c27_grid(mode):
    n = 4 if mode == "quick" else 6
    mixed = ["pre", "post"] * (n // 2)
    return [(name, {"model": model_cfg(mode, n_layer=n, placement=p, init="xavier"),
                    "train": train_cfg(mode, lr=2e-3, betas=[0.9, 0.98])})
            for name, p in (("all pre", "pre"), ("all post", "post"), ("mixed pre/post", mixed))]


def _c27_verdict(records) -> Verdict:
    mixed = list(final_losses(records, "mixed pre/post").values())
    pre, post = list(final_losses(records, "all pre").values()), list(final_losses(records, "all post").values())
    better = pre if mean(pre) <= mean(post) else post
    label = "all pre" if better is pre else "all post"
    return compare(mixed, better, expect="greater", what="final validation loss", label_a="mixed pre/post",
                   label_b=f"the better pure model ({label})", min_effect=0.01)


register(experiment(
    claim="C27", title="Mixing pre-LN and post-LN blocks is a bug source",
    statement="A model that mixes pre-LN and post-LN blocks trains worse than a consistent one.",
    setup="GPT with Xavier init (quick: 4 blocks, full: 6) alternating pre and post blocks, against all-pre and "
          "all-post, lr 2e-3 with warm-up, same budget.",
    grid=_c27_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c27_verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Pure vs mixed placements")],
))


# ------------------------------------------------------------------------ C32
C32_WIDTHS = {"quick": [32, 64, 128], "full": [32, 64, 128, 256]}


def width_run(config: dict, seed: int) -> dict:
    """Train briefly at one width, then measure activation scales on a fixed batch."""
    import torch

    from ..data import random_windows

    model, corpus, rec = train_gpt(config, seed, batch=8)
    batch = random_windows(corpus.val, 16, config["model"]["block_size"], torch.Generator().manual_seed(7))
    hidden = {}
    handle = model.blocks[-1].register_forward_hook(lambda m, a, out: hidden.__setitem__("h", out.detach()))
    model.eval()
    with torch.no_grad():
        logits = model(batch.x)
    handle.remove()
    return {"status": rec["status"], "logit_rms": logits.float().square().mean().sqrt().item(),
            "stream_rms": hidden["h"].float().square().mean().sqrt().item(),
            "final_loss": rec["metrics"][-1]["loss"] if rec["metrics"] else math.nan}


def _c32_grid(mode):
    out = []
    for param in ("standard", "muP"):
        for w in C32_WIDTHS[mode]:
            out.append((f"{param} d={w}", {
                "model": model_cfg(mode, n_layer=2, d_model=w, n_head=4, mup_base_width=32 if param == "muP" else None),
                "train": train_cfg(mode, steps=150 if mode == "quick" else 400, lr=3e-3),
                "width": w}))
    return out


def _slopes(records, param: str, key: str) -> list[float]:
    """Per seed: least-squares slope of log(key) against log(width)."""
    out = []
    for s in sorted({r["seed"] for r in records}):
        pts = [(math.log(r["config"]["width"]), math.log(r["result"][key])) for r in records
               if r["seed"] == s and r["name"].startswith(param + " ") and r["result"][key] > 0]
        if len(pts) >= 2:
            mx, my = mean(p[0] for p in pts), mean(p[1] for p in pts)
            out.append(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts))
    return out


def _c32_verdict(records) -> Verdict:
    mup, sp = _slopes(records, "muP", "logit_rms"), _slopes(records, "standard", "logit_rms")
    if not mup:
        return Verdict("inconclusive", "no muP runs", "needs runs at two widths or more")
    m, sd = mean(mup), spread(mup)
    bound = 0.25
    status = "supported" if abs(m) + sd < bound else "not supported" if abs(m) - sd > bound else "inconclusive"
    stream = _slopes(records, "muP", "stream_rms")
    return Verdict(status, f"slope of log(output-logit RMS) vs log(width) after training: muP {fmt(m)} "
                           f"(seed range {fmt(sd)}), standard {fmt(mean(sp))}; residual-stream slope under muP "
                           f"{fmt(mean(stream))}",
                   f"supported if |muP slope| + seed range < {bound} (the scale changes by less than "
                   f"{2 ** bound:.2f}x per doubling of width); not supported if |slope| - range > {bound}",
                   {"mup_logit_slopes": mup, "standard_logit_slopes": sp, "mup_stream_slopes": stream},
                   key_number=f"slope muP {fmt(m)}, standard {fmt(mean(sp))}")


def _c32_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, param in enumerate(("standard", "muP")):
        rr = [r for r in records if r["name"].startswith(param + " ")]
        ax.scatter([r["config"]["width"] for r in rr], [r["result"]["logit_rms"] for r in rr], color=f"C{i}",
                   label=param)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width d_model")
    ax.set_ylabel("RMS of the output logits after training")
    ax.set_title("Activation scale across widths (dots: seeds)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-widths.png")]


register(experiment(
    claim="C32", title="Under muP-style scaling, activations stay O(1) as width grows (stretch)",
    statement="With muP-style width scaling, normalized activations stay O(1) as width grows.",
    setup="2-block pre-LN GPT at widths 32..128 (quick) or 32..256 (full), standard parametrization vs muP "
          "relative to width 32 (hidden init / sqrt(m), hidden lr / m, logits / m, attention 1/d_head), same lr "
          "3e-3; the RMS of the output logits and of the residual stream on fixed validation windows after "
          "training, and the slope of their log against log(width).",
    grid=_c32_grid, seeds={"quick": 2, "full": 3}, run=width_run, verdict=_c32_verdict, plot=_c32_plot,
    paper="Yang et al. 2021 (Tensor Programs V), Figure 1/5: under muP, activation and logit scales stay "
          "constant across widths while standard parametrization's grow.",
))


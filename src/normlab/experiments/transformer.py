"""Transformer claims on the small GPT and CPython's documentation text: RMSNorm, re-centering, outliers, residual growth, mixed placement, muP width (C18-C20, C23, C25, C27, C32)."""

from __future__ import annotations

import math
from collections import defaultdict

from .lm import SIZES, bar_plot, final_loss, final_losses, lm_run, log_growth, model_cfg, train_cfg, train_gpt
from .plots import curves_plot, layer_profile_plot, pyplot, save_fig
from .registry import register
from .spec import (PerMode, Verdict, by_name, combine_verdicts, compare, equivalent, experiment, fmt, mean,
                   paired_by_seed, threshold)
from .stats import interval, judge_equivalence


def _train(mode: str, steps: int, **overrides) -> dict:
    """``train_cfg`` with its own step budget (warm-up and logging follow the steps, as in ``train_cfg``)."""
    return train_cfg(mode, steps=steps, warmup_steps=steps // 10, log_every=max(1, steps // 50), **overrides)


def _ci(v: Verdict, k: int = 0) -> str:
    """The ``k``-th judged interval of ``v`` as "estimate [lo, hi]"."""
    t = v.tests[k]
    if not (math.isfinite(t["lo"]) and math.isfinite(t["hi"])):
        return f"{fmt(t['estimate'])} (no interval)"
    return f"{fmt(t['estimate'])} [{fmt(t['lo'])}, {fmt(t['hi'])}]"


def _within(xs, *, what: str, tolerance: float) -> Verdict:
    """Judge "the mean of ``xs`` is 0 within +-``tolerance``" by its one-sample t interval (equivalence)."""
    xs = list(xs)
    iv = interval(what, xs)
    iv.status = judge_equivalence(iv.lo, iv.hi, tolerance=tolerance)
    iv.rule = (f"supported if the {iv.level:.0%} CI of the mean lies inside +-{fmt(tolerance)}; not supported if "
               "it lies wholly outside; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}, tolerance +-{fmt(tolerance)}", iv.rule,
                   {"values": xs, "ci": [iv.lo, iv.hi]}, key_number=fmt(iv.estimate), tests=[iv.to_dict()])


def _any_of(parts: dict[str, Verdict]) -> Verdict:
    """One verdict for "at least one of these holds": supported if any part is, not supported if all are not."""
    statuses = [v.status for v in parts.values()]
    status = ("supported" if "supported" in statuses else
              "not supported" if statuses and all(s == "not supported" for s in statuses) else "inconclusive")
    return Verdict(status, "; ".join(f"[{n}: {v.status}] {v.summary}" for n, v in parts.items()),
                   "at least one part must be supported (all not supported: not supported): "
                   + " | ".join(f"{n}: {v.rule}" for n, v in parts.items()),
                   {n: v.numbers for n, v in parts.items()}, tests=[t for v in parts.values() for t in v.tests])


# ------------------------------------------------------------------------ C18
C18_TOL = 0.02  # nats/char: under 1% of the final loss (Zhang & Sennrich's 26.8 vs 26.6 BLEU is 0.75%)
C18_SEEDS = PerMode({"quick": 4, "full": 4})


def _c18_grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm, placement="pre"), "train": train_cfg(mode)})
            for norm in ("layernorm", "rmsnorm")]


def _c18_verdict(records) -> Verdict:
    g = by_name(records)
    rms, ln = paired_by_seed(g.get("rmsnorm", []), g.get("layernorm", []), final_loss)
    v = equivalent(rms, ln, what="final validation loss (nats/char)", label_a="RMSNorm", label_b="LayerNorm",
                   tolerance=C18_TOL, paired=True)
    v.versus_paper = (
        "paper: BLEU equal or slightly better with RMSNorm, 26.8 vs 26.6 and 27.7 vs 27.7 (Zhang & Sennrich 2019, "
        f"machine translation, read second-hand); here: final loss RMSNorm {fmt(mean(rms))} vs LayerNorm "
        f"{fmt(mean(ln))} nats/char, paired difference {_ci(v)} over {len(rms)} seeds, tolerance "
        f"+-{C18_TOL:g}; scale: a character-level pre-LN GPT with {SIZES['quick']['n_layer']} (quick) or "
        f"{SIZES['full']['n_layer']} (full) blocks and a few hundred CPU steps, loss instead of BLEU")
    return v


def _c18_plot(records, verdict, prefix):
    return [curves_plot(records, prefix, "Pre-LN GPT: LayerNorm vs RMSNorm")]


register(experiment(
    claim="C18", title="RMSNorm matches LayerNorm's quality",
    statement="A pre-norm transformer with RMSNorm reaches the same final loss as with LayerNorm, within noise.",
    setup=f"Pre-LN GPT (quick: 2 layers, d=64, context 32, {SIZES['quick']['steps']} steps; full: 4 layers, d=96, "
          f"context 64, {SIZES['full']['steps']} steps), AdamW lr 1e-3 with warm-up and cosine decay, CPython "
          "documentation text; validation loss on fixed held-out windows. "
          f"{C18_SEEDS['quick']} seeds quick, {C18_SEEDS['full']} full; the two arms of a seed share init seed "
          "and data order. Rule (equivalence): the 95% paired t interval of RMSNorm's minus LayerNorm's final "
          f"loss must lie inside +-{C18_TOL:g} nats/char (under 1% of the loss); wholly outside: not supported; "
          "straddling a bound: inconclusive.",
    grid=_c18_grid, seeds=C18_SEEDS, run=lm_run, verdict=_c18_verdict, plot=_c18_plot,
    paper="Zhang & Sennrich 2019 (RMSNorm): comparable quality to LayerNorm on several tasks at 7-64% less "
          "time per step; BLEU 26.8 vs 26.6 and 27.7 vs 27.7 (read second-hand).",
))


# ------------------------------------------------------------------------ C19
C19_BOUND = 0.2  # |mean|/RMS below this: re-centering moves the normalized output by under 20% of its RMS
C19_STEPS = PerMode({"quick": 200, "full": 300})
C19_SEEDS = PerMode({"quick": 4, "full": 4})


def _c19_grid(mode):
    return [("pre-LN LayerNorm", {"model": model_cfg(mode, norm="layernorm", placement="pre"),
                                  "train": _train(mode, C19_STEPS[mode], instruments=["norm_inputs"])})]


def _c19_ratios(rec) -> dict[str, float]:
    last = rec["result"]["instruments"][-1]
    return {k: v for k, v in last["norm_inputs"].items() if "q_norm" not in k and "k_norm" not in k}


def _c19_verdict(records) -> Verdict:
    per_seed = [mean(_c19_ratios(r).values()) for r in records]
    worst = [max(_c19_ratios(r).values()) for r in records]
    v = threshold(per_seed, what="|mean|/RMS of the norms' inputs after training, averaged over the norms of a "
                  "model (one value per seed)", below=C19_BOUND)
    v.summary += f"; largest single norm over all seeds {fmt(max(worst)) if worst else 'n/a'}"
    v.numbers.update({"per_seed_average": per_seed, "per_seed_max": worst})
    v.key_number = f"|mean|/RMS = {_ci(v)}"
    return v


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
    ax.axhline(C19_BOUND, color="grey", ls="--", lw=1, label=f"verdict threshold {C19_BOUND:g}")
    ax.set_ylabel("|mean| / RMS of the norm's input")
    ax.set_title("How far from zero-mean are the inputs of each norm? (trained pre-LN)")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-ratio.png")]


register(experiment(
    claim="C19", title="Pre-norm inputs are nearly zero-mean",
    statement="In a trained pre-norm transformer the mean of each norm's input is small next to its RMS, so "
              "re-centering (LayerNorm's mean subtraction) changes little.",
    setup=f"Train the C18 pre-LN LayerNorm GPT for {C19_STEPS['quick']} (quick) or {C19_STEPS['full']} (full) "
          "steps, then measure |mean|/RMS over the feature dim at every norm's input (averaged over tokens) on "
          f"the last training batch, and average it over the model's norms (one value per seed; "
          f"{C19_SEEDS['quick']} seeds quick, {C19_SEEDS['full']} full). Rule: the 95% t interval of that mean "
          f"lies wholly below {C19_BOUND:g} (re-centering then moves the normalized output by under 20% of its "
          "RMS); wholly above: not supported; otherwise inconclusive.",
    grid=_c19_grid, seeds=C19_SEEDS, run=lm_run, verdict=_c19_verdict, plot=_c19_plot,
))


# ----------------------------------------------------------------- C23 / C25
C23_DEPTH = PerMode({"quick": 6, "full": 8})
C23_STEPS = PerMode({"quick": 150, "full": 300})
C23_SEEDS = PerMode({"quick": 4, "full": 4})


def _stream_grid(mode, placements):
    return [(p, {"model": model_cfg(mode, n_layer=C23_DEPTH[mode], placement="pre" if p == "none" else p,
                                     norm="none" if p == "none" else "layernorm"),
                 "train": _train(mode, C23_STEPS[mode], instruments=["residual_rms"], lr=1e-3)}) for p in placements]


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


def _growth(records, name: str, when: int = -1) -> list[float]:
    return [log_growth(_stream(r, when)) for r in by_name(records).get(name, [])]


def _stream_growth_verdict(records, a: str, b: str, label_a: str, label_b: str, min_ratio: float) -> Verdict:
    """Group ``a``'s residual stream grows more from first to last block (after training) than group ``b``'s.

    Paired by seed: the two arms of a seed share init seed and data order.
    """
    g = by_name(records)
    ga, gb = paired_by_seed(g.get(a, []), g.get(b, []), lambda r: log_growth(_stream(r, -1)))
    v = compare(ga, gb, expect="greater", what="log(last/first block) of the residual-stream RMS after "
                "training", label_a=label_a, label_b=label_b, min_effect=math.log(min_ratio), paired=True)
    if ga and gb:
        v.key_number = (f"last/first: {a} {fmt(math.exp(mean(ga)))}x, {b} {fmt(math.exp(mean(gb)))}x; "
                        f"log ratio difference {_ci(v)}")
    init = {name: mean(_growth(records, name, 0)) for name in (a, b)}
    v.summary += "; at init (not judged): last/first " + ", ".join(f"{n} {fmt(math.exp(x))}x"
                                                                 for n, x in init.items())
    v.numbers.update({"log_growth_trained": {a: ga, b: gb}, "mean_log_growth_init": init})
    return v


def _stream_setup(min_ratio: float, arms: str) -> str:
    return (f"Quick: {C23_DEPTH['quick']} blocks, d={SIZES['quick']['d_model']}, {C23_STEPS['quick']} steps; full: "
            f"{C23_DEPTH['full']} blocks, d={SIZES['full']['d_model']}, {C23_STEPS['full']} steps; lr 1e-3 with "
            f"warm-up and cosine decay; {C23_SEEDS['quick']} seeds quick, {C23_SEEDS['full']} full, the arms of a "
            "seed share init seed and data order. RMS of the residual stream after each block at init and after "
            "training (on that step's training batch), growth = log(last block / first block). Rule: the 95% "
            "paired t interval of "
            f"{arms} growth (after training) lies wholly above log {min_ratio:g}; wholly below: not supported; "
            "otherwise inconclusive.")


def _c23_verdict(records) -> Verdict:
    v = _stream_growth_verdict(records, "pre", "post", "pre-LN", "post-LN", 1.2)
    init, trained = v.numbers["mean_log_growth_init"], v.numbers["log_growth_trained"]
    depth = len(_stream(records[0], 0)) if records else C23_DEPTH["quick"]
    v.versus_paper = (
        "paper: at init in pre-LN the expected squared norm of the stream grows linearly with the layer index "
        "(RMS ~ sqrt(l)), post-LN fixes it at sqrt(d) after every block (Xiong et al. 2020, Lemma 1-2; Xavier "
        f"init, unit-variance inputs); here ({depth} blocks, GPT-2 init: embeddings N(0, 0.02), residual "
        "projections scaled by 1/sqrt(2 n_layer)): last/first block at init pre-LN "
        f"{fmt(math.exp(init.get('pre', math.nan)))}x, post-LN {fmt(math.exp(init.get('post', math.nan)))}x; after "
        f"training pre-LN {fmt(math.exp(mean(trained['pre'])))}x, post-LN {fmt(math.exp(mean(trained['post'])))}x "
        f"(log ratio difference {_ci(v)}); scale: a character-level GPT, d=64/96, a few hundred CPU steps; GPT-2 "
        "init keeps the blocks' contributions small at init, so the growth shows after training")
    return v


register(experiment(
    claim="C23", title="Pre-LN's residual stream grows with depth; post-LN's is renormalized",
    statement="In pre-LN the residual stream's magnitude grows with depth (it is never renormalized); in "
              "post-LN it is renormalized every block.",
    setup="GPT, pre-LN and post-LN LayerNorm, GPT-2 initialization (std 0.02, residual projections scaled by "
          "1/sqrt(2 n_layer)). " + _stream_setup(1.2, "pre-LN's minus post-LN's"),
    grid=lambda mode: _stream_grid(mode, ("pre", "post")), seeds=C23_SEEDS, run=lm_run,
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
          "(std 0.02, residual projections scaled by 1/sqrt(2 n_layer)). " + _stream_setup(
              1.5, "the un-normalized net's minus pre-LN's"),
    grid=lambda mode: _stream_grid(mode, ("none", "pre")), seeds=C23_SEEDS, run=lm_run,
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


C20_SEEDS = PerMode({"quick": 4, "full": 4})
C20_COLLAPSE, C20_RESCUE = 0.2, 0.5  # share of the signal kept: below 0.2 crushed, above 0.5 rescued


def _c20_grid(mode):
    return [("outlier 1e3", {"dim": 256 if mode == "quick" else 1024, "outlier": 1e3, "eps": [1e-5, 1.0, 1e3],
                             "clip": [None, 10.0]})]


def _c20_verdict(records) -> Verdict:
    kept = defaultdict(list)  # per setting: one value per seed (fresh random rows)
    for r in sorted(records, key=lambda r: r["seed"]):
        for k, v in r["result"]["kept"].items():
            kept[k].append(v)

    def part(norm, eps, clip, **bound):
        name = f"{norm} eps={eps:g} clip={clip}"
        return threshold(kept.get(name, []), what=f"share of the other features' signal kept, {name}", **bound)

    norms = ("rmsnorm", "layernorm")
    crushed = combine_verdicts({f"{n} crushed": part(n, 1e-5, "none", below=C20_COLLAPSE) for n in norms})
    clipped = combine_verdicts({f"{n} clipped at 10": part(n, 1e-5, "10", above=C20_RESCUE) for n in norms})
    big_eps = combine_verdicts({f"{n} eps=1e3": part(n, 1e3, "none", above=C20_RESCUE) for n in norms})
    remedy = _any_of({"clipping at 10 rescues": clipped, "eps = 1e3 rescues": big_eps})
    v = combine_verdicts({"an outlier crushes the rest": crushed, "clipping or a larger eps limits it": remedy})
    k = {name: mean(vals) for name, vals in kept.items()}
    v.numbers["kept"] = k
    get = lambda name: fmt(k.get(name, math.nan))  # noqa: E731
    v.key_number = (f"kept {get('rmsnorm eps=1e-05 clip=none')} (RMSNorm) / {get('layernorm eps=1e-05 clip=none')} "
                    f"(LN) -> clip {get('rmsnorm eps=1e-05 clip=10')}, eps 1e3 {get('rmsnorm eps=1000 clip=none')}")
    return v


def _c20_plot(records, verdict, prefix):
    plt = pyplot()
    k = verdict.numbers["kept"]
    names = sorted(k)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.barh(range(len(names)), [k[n] for n in names], color=["C0" if "rms" in n else "C1" for n in names])
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("share of the other features' normalized signal kept (log; 1 = unharmed)")
    ax.set_title("One feature at 1e3 in a row of N(0,1) features")
    return [save_fig(fig, prefix + "-kept.png")]


register(experiment(
    claim="C20", title="One outlier crushes the other features; clipping or eps limits the damage",
    statement="One extreme outlier dominates the RMS and crushes every other feature; clipping or a larger eps "
              "limits the damage.",
    setup="Rows of N(0,1) features (256 quick, 1024 full) with feature 0 set to 1e3; RMSNorm and LayerNorm "
          "(normlab.functional, float64) with eps 1e-5, 1, 1e3 and with the input clipped at +-10; measured: the "
          "spread (std) of the other features' outputs relative to the same row without the outlier, averaged "
          f"over 256 rows; {C20_SEEDS['quick']} seeds (fresh rows) per mode. Rule, 95% t intervals over seeds: "
          f"both norms with eps 1e-5 keep under {C20_COLLAPSE:g} of the signal, and either clipping at 10 (both "
          f"norms) or eps = 1e3 (both norms) keeps over {C20_RESCUE:g}; eps = 1 is shown, not judged.",
    grid=_c20_grid, seeds=C20_SEEDS, run=outlier_run, verdict=_c20_verdict, plot=_c20_plot,
))


# ------------------------------------------------------------------------ C27
C27_DEPTH = PerMode({"quick": 4, "full": 6})
C27_STEPS = PerMode({"quick": 150, "full": 300})
C27_SEEDS = PerMode({"quick": 4, "full": 4})
C27_MIN = 0.01  # nats: the smallest loss penalty that counts


def _c27_grid(mode):
    n = C27_DEPTH[mode]
    mixed = ["pre", "post"] * (n // 2)
    return [(name, {"model": model_cfg(mode, n_layer=n, placement=p, init="xavier"),
                    "train": _train(mode, C27_STEPS[mode], lr=2e-3, betas=[0.9, 0.98])})
            for name, p in (("all pre", "pre"), ("all post", "post"), ("mixed pre/post", mixed))]


def _c27_verdict(records) -> Verdict:
    g = by_name(records)
    pre, post = list(final_losses(records, "all pre").values()), list(final_losses(records, "all post").values())
    label = "all pre" if mean(pre) <= mean(post) else "all post"  # the better pure model, by mean
    mixed, better = paired_by_seed(g.get("mixed pre/post", []), g.get(label, []), final_loss)
    v = compare(mixed, better, expect="greater", what="final validation loss (nats/char)",
                label_a="mixed pre/post", label_b=f"the better pure model ({label})", min_effect=C27_MIN, paired=True)
    other = "all post" if label == "all pre" else "all pre"
    vs_other = interval(f"mixed pre/post - {other} (not judged)", *paired_by_seed(
        g.get("mixed pre/post", []), g.get(other, []), final_loss), paired=True)
    v.summary += f"; against the other pure model: {vs_other.text()}"
    v.numbers["versus_other_pure"] = vs_other.to_dict()
    return v


register(experiment(
    claim="C27", title="Mixing pre-LN and post-LN blocks is a bug source",
    statement="A model that mixes pre-LN and post-LN blocks trains worse than a consistent one.",
    setup=f"GPT with Xavier init ({C27_DEPTH['quick']} blocks, {C27_STEPS['quick']} steps quick; "
          f"{C27_DEPTH['full']} blocks, {C27_STEPS['full']} steps full) alternating pre and post blocks, against "
          "all-pre and all-post, lr 2e-3 with warm-up and cosine decay, Adam betas (0.9, 0.98), same budget; "
          f"{C27_SEEDS['quick']} seeds quick, {C27_SEEDS['full']} full, the three arms of a seed share init seed "
          "and data order. Rule: the better pure model is the one with the lower mean final loss; the 95% paired "
          f"t interval of mixed minus that model's final validation loss lies wholly above {C27_MIN:g} nats; "
          "wholly below: not supported; otherwise inconclusive.",
    grid=_c27_grid, seeds=C27_SEEDS, run=lm_run, verdict=_c27_verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Pure vs mixed placements")],
))


# ------------------------------------------------------------------------ C32
C32_WIDTHS = PerMode({"quick": [32, 64, 128], "full": [32, 64, 128, 256], "paper": [64, 128, 256, 512, 1024]})
C32_STEPS = PerMode({"quick": 100, "full": 300})
C32_SEEDS = PerMode({"quick": 4, "full": 4})
C32_FLAT = 0.25  # |slope| below this: the scale changes by less than 2**0.25 = 1.19x per doubling of width


def width_run(config: dict, seed: int) -> dict:
    """Train briefly at one width, then measure activation scales on a fixed batch."""
    import torch

    from ..data import random_windows

    model, corpus, rec = train_gpt(config, seed, batch=8)
    batch = random_windows(corpus.val, 16, config["model"]["block_size"], torch.Generator().manual_seed(7))
    hidden: dict[str, torch.Tensor] = {}
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
                "train": _train(mode, C32_STEPS[mode], lr=3e-3),
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
    v = _within(mup, what="muP: slope of log(output-logit RMS) against log(width) after training (one per seed)",
                tolerance=C32_FLAT)
    standard = interval("standard: slope of log(output-logit RMS) against log(width) (not judged)", sp)
    stream = interval("muP: slope of log(residual-stream RMS) against log(width) (not judged)",
                      _slopes(records, "muP", "stream_rms"))
    v.summary += f"; {standard.what}: {standard.text()}; {stream.what}: {stream.text()}"
    v.numbers.update({"mup_logit_slopes": mup, "standard_logit_slopes": sp, "standard": standard.to_dict(),
                      "mup_stream": stream.to_dict()})
    v.key_number = f"slope muP {_ci(v)}, standard {fmt(standard.estimate)}"
    widths = sorted({r["config"]["width"] for r in records}) or C32_WIDTHS["quick"]
    v.versus_paper = (
        "paper: under muP the coordinate size of activations and output logits stays flat as width grows (slope "
        "about 0), under standard parametrization the logits grow with width once training starts (Yang et al. "
        f"2021, Tensor Programs V, coordinate checks); here: slope muP {_ci(v)}, standard "
        f"{fmt(standard.estimate)} over {len(mup)} seeds; scale: a 2-block character-level GPT at widths "
        f"{widths[0]}..{widths[-1]} after {C32_STEPS['quick']} (quick) or {C32_STEPS['full']} (full) steps, "
        "against widths in the thousands")
    return v


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
    setup=f"2-block pre-LN GPT at widths 32..128 (quick, {C32_STEPS['quick']} steps) or 32..256 (full, "
          f"{C32_STEPS['full']} steps), standard parametrization vs muP relative to width 32 (hidden init / "
          "sqrt(m), hidden lr / m, logits / m, attention 1/d_head), same lr 3e-3; the RMS of the output logits and "
          "of the residual stream on fixed validation windows after training; per seed, the least-squares slope "
          f"of log(logit RMS) against log(width) ({C32_SEEDS['quick']} seeds quick, {C32_SEEDS['full']} full). "
          f"Rule (equivalence): the 95% t interval of muP's mean slope lies inside +-{C32_FLAT:g} (the scale "
          "changes by less than 1.19x per doubling of width); wholly outside: not supported; otherwise "
          "inconclusive. Standard parametrization's slope is shown as the contrast, not judged.",
    grid=_c32_grid, seeds=C32_SEEDS, run=width_run, verdict=_c32_verdict, plot=_c32_plot,
    paper="Yang et al. 2021 (Tensor Programs V), Figure 1/5: under muP, activation and logit scales stay "
          "constant across widths while standard parametrization's grow.",
))


"""Transformer-side claims, measured on the small GPT and CPython's documentation text."""

from __future__ import annotations

import math
from collections import defaultdict

from .plots import curves_plot, layer_profile_plot, pyplot, save_fig
from .registry import register
from .spec import Verdict, by_name, compare, equivalent, experiment, fmt, mean, spread

# --------------------------------------------------------------------- helpers
SIZES = {  # model and budget per mode
    "quick": dict(n_layer=2, d_model=64, n_head=4, block_size=32, batch=8, steps=300),
    "full": dict(n_layer=4, d_model=96, n_head=4, block_size=64, batch=8, steps=400),
}  # full steps were 600: cut to 400 so that all 34 claims fit the 2-hour full budget on 2 cores
C26_STEPS = {"quick": 200, "full": 300}  # the C26 lr sweep (14 configs)


def _model_cfg(mode: str, **overrides) -> dict:
    s = SIZES[mode]
    base = dict(n_layer=s["n_layer"], d_model=s["d_model"], n_head=s["n_head"], block_size=s["block_size"])
    return {**base, **overrides}


def _train_cfg(mode: str, **overrides) -> dict:
    s = SIZES[mode]
    base = dict(steps=s["steps"], lr=1e-3, warmup_steps=s["steps"] // 10, betas=[0.9, 0.99], grad_clip=1.0,
                log_every=max(1, s["steps"] // 50), eval_batches=10 if mode == "quick" else 40)
    return {**base, **overrides}


def _build_gpt(model: dict, vocab_size: int):
    import torch  # noqa: F401  (imported lazily: the registry must import fast)

    from ..models import GPT, GPTConfig

    return GPT(GPTConfig(**model, vocab_size=vocab_size))


def _train_gpt(config: dict, seed: int, batch: int):
    """Build the GPT of ``config["model"]`` on the run's corpus and train it with ``config["train"]``.

    Returns ``(model, corpus, record)``.
    """
    import torch

    from ..data import text
    from ..train import LMTask, TrainConfig, train

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = _build_gpt(config["model"], corpus.vocab_size)
    tcfg = dict(config["train"])
    tcfg["betas"] = tuple(tcfg.get("betas", (0.9, 0.95)))
    tcfg["instruments"] = tuple(tcfg.get("instruments", ()))
    rec = train(model, LMTask(corpus, config["model"]["block_size"], batch),
                TrainConfig(**tcfg, seed=seed, progress=False))
    return model, corpus, rec


def lm_run(config: dict, seed: int) -> dict:
    """Train a GPT described by ``config["model"]`` with ``config["train"]``; return a summary."""
    _, _, rec = _train_gpt(config, seed, config.get("batch", SIZES[config["mode"]]["batch"]))
    return {"status": rec["status"], "diverged_at": rec["diverged_at"], "final": rec["final"],
            "first_loss": rec["metrics"][0]["loss"] if rec["metrics"] else None,
            "curve": [(m["step"], m["loss"]) for m in rec["metrics"]], "instruments": rec["instruments"],
            "wall_time_s": rec["wall_time_s"], "error": rec["error"]}


# ------------------------------------------------------------------------ C18
def _c18_grid(mode):
    return [(norm, {"model": _model_cfg(mode, norm=norm, placement="pre"), "train": _train_cfg(mode)})
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
    return [("pre-LN LayerNorm", {"model": _model_cfg(mode, norm="layernorm", placement="pre"),
                                  "train": _train_cfg(mode, instruments=["norm_inputs"])})]


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


# ------------------------------------------------------------------------ C22
C22_DEPTH = {"quick": 6, "full": 8}
FLAT = math.log(1.25)  # a profile is "flat" when last/first block stays within a factor 1.25


def _c22_grid(mode):
    depth = C22_DEPTH[mode]
    return [(f"{p} ({init} init)", {"model": _model_cfg(mode, n_layer=depth, placement=p, init=init),
                                    "batches": 32 if mode == "quick" else 64})
            for init in ("xavier", "gpt2") for p in ("post", "pre")]


def grad_profile_run(config: dict, seed: int) -> dict:
    """Xiong et al.'s expected gradient at initialization, per block, for the FFN weights."""
    import torch

    from ..data import text
    from ..train import LMTask, expected_grad_norms

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = _build_gpt(config["model"], corpus.vocab_size)
    task = LMTask(corpus, config["model"]["block_size"], SIZES[config["mode"]]["batch"])
    norms = expected_grad_norms(model, task, n_batches=config["batches"], seed=seed)
    depth = config["model"]["n_layer"]
    return {"ffn_out": [norms[f"blocks.{i}.mlp.c_proj.weight"] for i in range(depth)],
            "ffn_in": [norms[f"blocks.{i}.mlp.c_fc.weight"] for i in range(depth)],
            "attn_out": [norms[f"blocks.{i}.attn.c_proj.weight"] for i in range(depth)]}


def _growth(profile: list[float]) -> float:
    """log of (last block / first block): > 0 grows toward the output."""
    return math.log(profile[-1] / profile[0])


def _c22_verdict(records) -> Verdict:
    g = by_name(records)
    post = [_growth(r["result"]["ffn_out"]) for r in g.get("post (xavier init)", [])]
    pre = [_growth(r["result"]["ffn_out"]) for r in g.get("pre (xavier init)", [])]
    if not post or not pre:
        return Verdict("inconclusive", "missing runs", "needs post-LN and pre-LN runs")
    mpost, mpre = mean(post), mean(pre)
    post_grows = mpost - spread(post) > FLAT
    post_not_growing = mpost + spread(post) < FLAT
    pre_flat = abs(mpre) + spread(pre) < FLAT
    pre_not_flat = abs(mpre) - spread(pre) > FLAT
    if post_grows and pre_flat:
        status = "supported"
    elif post_not_growing or pre_not_flat:
        status = "not supported"
    else:
        status = "inconclusive"
    others = {k: fmt(math.exp(mean(_growth(r["result"]["ffn_out"]) for r in v))) for k, v in g.items()}
    summary = (f"last/first block gradient norm, Xavier init (the paper's): post-LN {fmt(math.exp(mpost))}x "
               f"({'grows' if post_grows else 'does not grow' if post_not_growing else 'unclear'}), pre-LN "
               f"{fmt(math.exp(mpre))}x ({'flat' if pre_flat else 'not flat' if pre_not_flat else 'unclear'}"
               f"{', falling toward the output' if pre_not_flat and mpre < 0 else ''}); all groups: {others}")
    rule = ("both halves must hold: post-LN's last/first ratio above 1.25 and pre-LN's within [1/1.25, 1.25], "
            "each beyond its seed range (log scale); either half failing beyond its range: not supported; "
            "otherwise inconclusive")
    return Verdict(status, summary, rule, {"post_log_growth": post, "pre_log_growth": pre, "ratios": others},
                   key_number=f"post {fmt(math.exp(mpost))}x, pre {fmt(math.exp(mpre))}x")


def _c22_plot(records, verdict, prefix):
    g = by_name(records)
    return [layer_profile_plot({k: [r["result"]["ffn_out"] for r in v] for k, v in g.items()}, prefix,
                                "Expected gradient norm of each block's FFN output weight at init",
                                "||E[grad W2]||_F")]


register(experiment(
    claim="C22", title="Gradient norm by layer at init: post-LN grows toward the output, pre-LN is flat",
    statement="At initialization, post-LN's gradient norm grows toward the output layers while pre-LN's stays "
              "flat across depth.",
    setup="GPT at initialization (quick: 6 blocks, d=64; full: 8 blocks, d=96) with Xavier init as in the "
          "paper, and GPT-2 init (std 0.02, residual outputs scaled by 1/sqrt(2L)) for comparison; for each "
          "block, the gradient of the FFN's second weight averaged over 32 (quick) or 64 (full) minibatches "
          "at fixed parameters, then its Frobenius norm (Xiong et al.'s expected gradient).",
    grid=_c22_grid, seeds={"quick": 3, "full": 4}, run=grad_profile_run, verdict=_c22_verdict, plot=_c22_plot,
    paper="Xiong et al. 2020, Figure 3: expected gradient of W2 in the FFN by layer, post-LN increasing with "
          "the layer index, pre-LN staying about the same (6-layer Transformer, d=512, Xavier init).",
))


# ----------------------------------------------------------------- C23 / C25
C23_DEPTH = {"quick": 6, "full": 8}


def _stream_grid(mode, placements):
    return [(p, {"model": _model_cfg(mode, n_layer=C23_DEPTH[mode], placement="pre" if p == "none" else p,
                                     norm="none" if p == "none" else "layernorm"),
                 "train": _train_cfg(mode, instruments=["residual_rms"], lr=1e-3)}) for p in placements]


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
    ga = [_growth(_stream(r, -1)) for r in g.get(a, [])]
    gb = [_growth(_stream(r, -1)) for r in g.get(b, [])]
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


# --------------------------------------------------------- shared: final losses
def _final_loss(r: dict) -> float:
    """Final validation loss; a diverged run counts as its first (initial) loss, as if it learned nothing."""
    res = r["result"]
    if res["status"] == "ok" and math.isfinite(res["final"].get("val_loss", math.nan)):
        return res["final"]["val_loss"]
    return res["first_loss"] if res["first_loss"] is not None and math.isfinite(res["first_loss"]) else math.nan


def _losses(records, name) -> dict[int, float]:
    return {r["seed"]: _final_loss(r) for r in records if r["name"] == name}


def _bar_plot(records, prefix, title, ylabel="final validation loss (nats/char)"):
    plt = pyplot()
    groups = sorted(by_name(records))
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, name in enumerate(groups):
        vals = list(_losses(records, name).values())
        ax.scatter([i] * len(vals), vals, color=f"C{i % 10}", zorder=3)
        ax.bar(i, mean(vals), color=f"C{i % 10}", alpha=0.35)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (dots: seeds; bars: mean)")
    lo = min(min(_losses(records, g).values()) for g in groups)
    ax.set_ylim(bottom=max(0.0, lo - 0.3))
    return save_fig(fig, prefix + "-bars.png")


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


# ------------------------------------------------------------------ C21 / C24
C21_LRS = {"quick": [1e-3, 3e-3], "full": [1e-3, 3e-3]}
C21_DEPTH = {"quick": 6, "full": 6}


def _c21_grid(mode):
    s = SIZES[mode]
    out = []
    for placement in ("post", "pre"):
        for warm in (True, False):
            for lr in C21_LRS[mode]:
                name = f"{placement}-{'warmup' if warm else 'nowarmup'}-lr{lr:g}"
                out.append((name, {"model": _model_cfg(mode, n_layer=C21_DEPTH[mode], placement=placement,
                                                       init="xavier"),
                                   "train": _train_cfg(mode, lr=lr, warmup_steps=s["steps"] // 4 if warm else 0,
                                                       betas=[0.9, 0.98], grad_clip=None, schedule="constant")}))
    return out


def _warmup_penalty(records, placement, mode_lrs) -> list[float]:
    """Per seed: mean over lrs of final loss without warm-up minus with warm-up."""
    seeds = sorted({r["seed"] for r in records})
    out = []
    for s in seeds:
        diffs = []
        for lr in mode_lrs:
            a = _losses(records, f"{placement}-nowarmup-lr{lr:g}").get(s)
            b = _losses(records, f"{placement}-warmup-lr{lr:g}").get(s)
            if a is not None and b is not None:
                diffs.append(a - b)
        if diffs:
            out.append(mean(diffs))
    return out


def _lrs_in(records) -> list[float]:
    return sorted({float(r["name"].rsplit("lr", 1)[1]) for r in records if "lr" in r["name"]})


def _c21_verdict(records) -> Verdict:
    lrs = _lrs_in(records)
    post, pre = _warmup_penalty(records, "post", lrs), _warmup_penalty(records, "pre", lrs)
    diverged = {p: sum(r["result"]["status"] == "diverged" for r in records if r["name"].startswith(f"{p}-nowarmup"))
                for p in ("post", "pre")}
    v = compare(post, pre, expect="greater", what="loss cost of dropping warm-up (final loss without minus with, "
                "mean over lrs)", label_a="post-LN", label_b="pre-LN", min_effect=0.02)
    v.summary += f"; runs without warm-up that diverged: post-LN {diverged['post']}, pre-LN {diverged['pre']}"
    v.numbers["diverged_without_warmup"] = diverged
    v.key_number = f"warm-up cost post {fmt(mean(post))} vs pre {fmt(mean(pre))} nats"
    return v


def _c21_plot(records, verdict, prefix):
    return [_bar_plot(records, prefix, "Post-LN and pre-LN with and without warm-up")]


register(experiment(
    claim="C21", title="Post-LN needs warm-up; pre-LN does not",
    statement="Post-LN transformers are hard to train at depth without a learning-rate warm-up; pre-LN "
              "transformers train stably without one.",
    setup=f"GPT with Xavier init (quick and full: 6 blocks; d=64, {SIZES['quick']['steps']} steps quick; d=96, "
          f"{SIZES['full']['steps']} steps full), Adam "
          "betas (0.9, 0.98) as Xiong et al., constant lr after a linear warm-up over the first quarter of the "
          "steps (or none), no gradient clipping, lrs 1e-3 and 3e-3. A run "
          "that diverges counts with its initial loss.",
    grid=_c21_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c21_verdict, plot=_c21_plot,
    paper="Xiong et al. 2020, Figure 2/Table: post-LN with Adam and no warm-up reached 8.45 BLEU on IWSLT14 "
          "De-En against about 34 with warm-up; pre-LN without warm-up matched post-LN with it.",
))


def _c24_grid(mode):
    s = SIZES[mode]
    return [(p, {"model": _model_cfg(mode, placement=p, init="xavier"),
                 "train": _train_cfg(mode, warmup_steps=s["steps"] // 4, betas=[0.9, 0.98])})
            for p in ("post", "pre")]


def _c24_verdict(records) -> Verdict:
    post, pre = _losses(records, "post"), _losses(records, "pre")
    v = compare(list(pre.values()), list(post.values()), expect="greater", what="final validation loss",
                label_a="pre-LN", label_b="post-LN (warmed up)")
    return v


register(experiment(
    claim="C24", title="Pre-LN can end slightly worse than a warmed-up post-LN",
    statement="At small scale, a pre-LN transformer can end slightly worse than a post-LN one trained with a "
              "good warm-up.",
    setup="GPT with Xavier init at the C18 sizes, both with a warm-up over the first quarter of the steps and "
          "cosine decay, Adam betas (0.9, 0.98).",
    grid=_c24_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c24_verdict,
    plot=lambda recs, v, prefix: [_bar_plot(recs, prefix, "Post-LN (warmed up) vs pre-LN")],
    paper="Xiong et al. 2020 and Liu et al. 2020 (Admin): post-LN, when it trains, often reaches better final "
          "quality than pre-LN on translation.",
))


# ------------------------------------------------------------------------ C26
C26_LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def _c26_grid(mode):
    steps = C26_STEPS[mode]
    out = []
    for qk in ("none", "layernorm"):
        for lr in C26_LRS:
            out.append((f"qk-{qk}-lr{lr:g}", {
                "model": _model_cfg(mode, placement="pre", qk_norm=qk),
                "train": _train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, instruments=["attn_logits"],
                                    instrument_every=max(1, steps // 10), log_every=max(1, steps // 40),
                                    diverge_factor=3.0)}))
    return out


def _sensitivity(records, qk: str) -> tuple[list[float], dict]:
    """Wortsman et al.: mean over the lr sweep of min(final, initial) - best, per seed."""
    out, best_lr = [], {}
    for s in sorted({r["seed"] for r in records}):
        finals, initial = [], []
        for lr in C26_LRS:
            rr = [r for r in records if r["name"] == f"qk-{qk}-lr{lr:g}" and r["seed"] == s]
            if not rr:
                continue
            res = rr[0]["result"]
            init_loss = res["first_loss"]
            final = _final_loss(rr[0])
            finals.append(min(final, init_loss) if math.isfinite(final) else init_loss)
            initial.append(init_loss)
        if finals:
            best = min(finals)
            out.append(mean(f - best for f in finals))
            best_lr[s] = best
    return out, best_lr


def _max_logit(r) -> float:
    vals = [e["attn_logits"].get("blocks.0.attn", math.nan) for e in r["result"]["instruments"] if "attn_logits" in e]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals) if vals else math.nan


def _c26_verdict(records) -> Verdict:
    plain, _ = _sensitivity(records, "none")
    qk, _ = _sensitivity(records, "layernorm")
    v = compare(plain, qk, expect="greater", what="lr sensitivity (mean over lrs of min(final, initial) - best)",
                label_a="no qk-norm", label_b="qk-layernorm", min_effect=0.02)
    logits = {q: max((_max_logit(r) for r in records if r["name"].startswith(f"qk-{q}")), default=math.nan)
              for q in ("none", "layernorm")}
    v.summary += (f"; largest layer-0 attention logit over the sweep: no qk-norm {fmt(logits['none'])}, "
                  f"qk-layernorm {fmt(logits['layernorm'])}")
    v.numbers["max_attn_logit_layer0"] = logits
    return v


def _c26_plot(records, verdict, prefix):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for i, qk in enumerate(("none", "layernorm")):
        for s in sorted({r["seed"] for r in records}):
            rr = {r["name"]: r for r in records if r["seed"] == s and r["name"].startswith(f"qk-{qk}-")}
            lrs = [lr for lr in C26_LRS if f"qk-{qk}-lr{lr:g}" in rr]
            axes[0].plot(lrs, [_final_loss(rr[f"qk-{qk}-lr{lr:g}"]) for lr in lrs], "o-", color=f"C{i}",
                         alpha=0.8, label=f"qk-norm: {qk}" if s == 0 else None)
            axes[1].plot(lrs, [_max_logit(rr[f"qk-{qk}-lr{lr:g}"]) for lr in lrs], "o-", color=f"C{i}", alpha=0.8,
                         label=f"qk-norm: {qk}" if s == 0 else None)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (diverged: initial)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("max attention logit, layer 0")
    fig.suptitle("Learning-rate sweep with and without QK-LayerNorm")
    return [save_fig(fig, prefix + "-sweep.png")]


register(experiment(
    claim="C26", title="QK-norm makes training less sensitive to the learning rate",
    statement="At high learning rates attention logits grow and training diverges unless Q and K are "
              "normalized; QK-norm lowers learning-rate sensitivity.",
    setup=f"Pre-LN GPT (C18 sizes; {C26_STEPS['quick']} steps quick, {C26_STEPS['full']} full) over lrs "
          "3e-4..3e-1 with warm-up and cosine "
          "decay, with and without LayerNorm on queries and keys (per head); the largest layer-0 attention logit "
          "is recorded through training.",
    grid=_c26_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c26_verdict, plot=_c26_plot,
    paper="Wortsman et al. 2023, Figure 1/3: without qk-layernorm, runs whose attention logits grew past ~1e4 "
          "diverged at high lr; with it, lr sensitivity dropped markedly at every model size.",
))


# ------------------------------------------------------------------------ C27
def _c27_grid(mode):
    n = 4 if mode == "quick" else 6
    mixed = ["pre", "post"] * (n // 2)
    return [(name, {"model": _model_cfg(mode, n_layer=n, placement=p, init="xavier"),
                    "train": _train_cfg(mode, lr=2e-3, betas=[0.9, 0.98])})
            for name, p in (("all pre", "pre"), ("all post", "post"), ("mixed pre/post", mixed))]


def _c27_verdict(records) -> Verdict:
    mixed = list(_losses(records, "mixed pre/post").values())
    pre, post = list(_losses(records, "all pre").values()), list(_losses(records, "all post").values())
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
    plot=lambda recs, v, prefix: [_bar_plot(recs, prefix, "Pure vs mixed placements")],
))


# ------------------------------------------------------------------------ C31
C31_SCALES = [1.0, 4.0, 16.0, 64.0]


def _c31_grid(mode):
    out = []
    for norm in ("layernorm", "none"):
        for scale in C31_SCALES:
            out.append((f"{'pre-LN' if norm == 'layernorm' else 'no norm'} x{scale:g}",
                        {"model": _model_cfg(mode, n_layer=4, placement="pre", norm=norm, init_scale=scale),
                         "train": _train_cfg(mode, diverge_factor=3.0)}))
    return out


def _tolerated(records, prefix: str) -> list[float]:
    """Per seed: log of the largest init scale whose final loss is within 0.1 nats of that model's best."""
    out = []
    for s in sorted({r["seed"] for r in records}):
        losses = {sc: _losses(records, f"{prefix} x{sc:g}").get(s) for sc in C31_SCALES}
        losses = {k: v for k, v in losses.items() if v is not None and math.isfinite(v)}
        if losses:
            best = min(losses.values())
            out.append(math.log(max(k for k, v in losses.items() if v <= best + 0.1)))
    return out


def _c31_verdict(records) -> Verdict:
    pre, none = _tolerated(records, "pre-LN"), _tolerated(records, "no norm")
    v = compare(pre, none, expect="greater", what="log of the largest init scale trained to within 0.1 nats of "
                "the best", label_a="pre-LN", label_b="no normalization")
    v.key_number = f"largest good scale: pre-LN x{fmt(math.exp(mean(pre)))}, none x{fmt(math.exp(mean(none)))}" \
        if pre and none else v.key_number
    return v


register(experiment(
    claim="C31", title="Pre-LN tolerates larger initialization scales",
    statement="Pre-LN models tolerate larger initialization scales than un-normalized residual networks.",
    setup="4-block GPT, pre-LN LayerNorm or no norm, every initial weight scaled by 1, 4, 16, 64 (GPT-2 init "
          "times the scale), same budget as C18.",
    grid=_c31_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c31_verdict,
    plot=lambda recs, v, prefix: [_bar_plot(recs, prefix, "Final loss by init scale")],
))


# ------------------------------------------------------------------------ C34
def _c34_grid(mode):
    return [(name, {"model": _model_cfg(mode, **m), "train": _train_cfg(mode)}) for name, m in (
        ("pre-LN", dict(placement="pre", norm="layernorm")),
        ("DyT (pre placement)", dict(placement="pre", norm="dyt")),
        ("DeepNorm post-LN", dict(placement="deepnorm", norm="layernorm")))]


def _c34_verdict(records) -> Verdict:
    base = list(_losses(records, "pre-LN").values())
    parts, keys, worse, unclear = [], [], [], []
    for name in ("DyT (pre placement)", "DeepNorm post-LN"):
        other = list(_losses(records, name).values())
        if not other or not base:
            unclear.append(name)
            continue
        diff = mean(other) - mean(base)
        bound = max(spread(other), spread(base), 0.03)
        parts.append(f"{name} {fmt(mean(other))} vs pre-LN {fmt(mean(base))} (diff {fmt(diff)}, bound {fmt(bound)})")
        keys.append(f"{name.split(' (')[0]} {fmt(mean(other))}")
        if diff > bound:
            worse.append(name)
    status = "inconclusive" if unclear else ("not supported" if worse else "supported")
    return Verdict(status, "; ".join(parts) + (f"; worse than pre-LN: {', '.join(worse)}" if worse else ""),
                   "supported if each normalization-free variant ends no worse than pre-LN by more than "
                   "max(seed spread, 0.03 nats); not supported if one does",
                   {"pre": base},
                   key_number=", ".join(keys) + (f" vs pre-LN {fmt(mean(base))}" if keys else ""))


register(experiment(
    claim="C34", title="DyT and DeepNorm-scaled post-LN against pre-LN",
    statement="Normalization-free transformers (Dynamic Tanh) and DeepNorm-scaled post-LN train as well as "
              "pre-LN on the same budget.",
    setup="The C18 GPT and budget with pre-LN LayerNorm, DyT in the pre-LN positions (alpha0 = 0.5), and "
          "DeepNorm (post-LN, residual x (2N)^1/4, beta-scaled Xavier init).",
    grid=_c34_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c34_verdict,
    plot=lambda recs, v, prefix: [_bar_plot(recs, prefix, "Normalization-free and DeepNorm vs pre-LN")],
    paper="Zhu et al. 2025 (DyT): matches LayerNorm models across tasks; Wang et al. 2022 (DeepNet): stable "
          "post-LN up to 1000 layers.",
))


# ------------------------------------------------------------------------ C32
C32_WIDTHS = {"quick": [32, 64, 128], "full": [32, 64, 128, 256]}


def width_run(config: dict, seed: int) -> dict:
    """Train briefly at one width, then measure activation scales on a fixed batch."""
    import torch

    from ..data import random_windows

    model, corpus, rec = _train_gpt(config, seed, batch=8)
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
                "model": _model_cfg(mode, n_layer=2, d_model=w, n_head=4, mup_base_width=32 if param == "muP" else None),
                "train": _train_cfg(mode, steps=150 if mode == "quick" else 400, lr=3e-3),
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

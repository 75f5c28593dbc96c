"""Post-LN vs pre-LN placement (Xiong et al. 2020): warm-up, gradient profile at init, final quality (C21, C22, C24)."""

from __future__ import annotations

import math

from .lm import SIZES, bar_plot, build_gpt, final_losses, lm_run, log_growth, model_cfg, train_cfg
from .plots import layer_profile_plot
from .registry import register
from .spec import Verdict, by_name, compare, experiment, fmt, mean, spread


# ------------------------------------------------------------------------ C22
C22_DEPTH = {"quick": 6, "full": 8}
FLAT = math.log(1.25)  # a profile is "flat" when last/first block stays within a factor 1.25


def _c22_grid(mode):
    depth = C22_DEPTH[mode]
    return [(f"{p} ({init} init)", {"model": model_cfg(mode, n_layer=depth, placement=p, init=init),
                                    "batches": 32 if mode == "quick" else 64})
            for init in ("xavier", "gpt2") for p in ("post", "pre")]


def grad_profile_run(config: dict, seed: int) -> dict:
    """Xiong et al.'s expected gradient at initialization, per block, for the FFN weights."""
    import torch

    from ..data import text
    from ..train import LMTask, expected_grad_norms

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = build_gpt(config["model"], corpus.vocab_size)
    task = LMTask(corpus, config["model"]["block_size"], SIZES[config["mode"]]["batch"])
    norms = expected_grad_norms(model, task, n_batches=config["batches"], seed=seed)
    depth = config["model"]["n_layer"]
    return {"ffn_out": [norms[f"blocks.{i}.mlp.c_proj.weight"] for i in range(depth)],
            "ffn_in": [norms[f"blocks.{i}.mlp.c_fc.weight"] for i in range(depth)],
            "attn_out": [norms[f"blocks.{i}.attn.c_proj.weight"] for i in range(depth)]}


def _c22_verdict(records) -> Verdict:
    g = by_name(records)
    post = [log_growth(r["result"]["ffn_out"]) for r in g.get("post (xavier init)", [])]
    pre = [log_growth(r["result"]["ffn_out"]) for r in g.get("pre (xavier init)", [])]
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
    others = {k: fmt(math.exp(mean(log_growth(r["result"]["ffn_out"]) for r in v))) for k, v in g.items()}
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
                out.append((name, {"model": model_cfg(mode, n_layer=C21_DEPTH[mode], placement=placement,
                                                       init="xavier"),
                                   "train": train_cfg(mode, lr=lr, warmup_steps=s["steps"] // 4 if warm else 0,
                                                       betas=[0.9, 0.98], grad_clip=None, schedule="constant")}))
    return out


def _warmup_penalty(records, placement, mode_lrs) -> list[float]:
    """Per seed: mean over lrs of final loss without warm-up minus with warm-up."""
    seeds = sorted({r["seed"] for r in records})
    out = []
    for s in seeds:
        diffs = []
        for lr in mode_lrs:
            a = final_losses(records, f"{placement}-nowarmup-lr{lr:g}").get(s)
            b = final_losses(records, f"{placement}-warmup-lr{lr:g}").get(s)
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
    return [bar_plot(records, prefix, "Post-LN and pre-LN with and without warm-up")]


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
    return [(p, {"model": model_cfg(mode, placement=p, init="xavier"),
                 "train": train_cfg(mode, warmup_steps=s["steps"] // 4, betas=[0.9, 0.98])})
            for p in ("post", "pre")]


def _c24_verdict(records) -> Verdict:
    post, pre = final_losses(records, "post"), final_losses(records, "pre")
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
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Post-LN (warmed up) vs pre-LN")],
    paper="Xiong et al. 2020 and Liu et al. 2020 (Admin): post-LN, when it trains, often reaches better final "
          "quality than pre-LN on translation.",
))



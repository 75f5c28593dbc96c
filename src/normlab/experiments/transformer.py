"""Transformer-side claims, measured on the small GPT and CPython's documentation text."""

from __future__ import annotations

import math
from collections import defaultdict

from .registry import register
from .spec import Verdict, compare, equivalent, experiment, fmt, mean, spread

# --------------------------------------------------------------------- helpers
SIZES = {  # model and budget per mode
    "quick": dict(n_layer=2, d_model=64, n_head=4, block_size=32, batch=8, steps=300),
    "full": dict(n_layer=4, d_model=128, n_head=4, block_size=64, batch=12, steps=1500),
}


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


def lm_run(config: dict, seed: int) -> dict:
    """Train a GPT described by ``config["model"]`` with ``config["train"]``; return a summary."""
    import torch

    from ..data import text
    from ..train import LMTask, TrainConfig, train

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = _build_gpt(config["model"], corpus.vocab_size)
    tcfg = dict(config["train"])
    tcfg["betas"] = tuple(tcfg.get("betas", (0.9, 0.95)))
    tcfg["instruments"] = tuple(tcfg.get("instruments", ()))
    batch = config.get("batch", SIZES[config["mode"]]["batch"])
    rec = train(model, LMTask(corpus, config["model"]["block_size"], batch),
                TrainConfig(**tcfg, seed=seed, progress=False))
    return {"status": rec["status"], "diverged_at": rec["diverged_at"], "final": rec["final"],
            "first_loss": rec["metrics"][0]["loss"] if rec["metrics"] else None,
            "curve": [(m["step"], m["loss"]) for m in rec["metrics"]], "instruments": rec["instruments"],
            "wall_time_s": rec["wall_time_s"], "error": rec["error"]}


def _by_name(records: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in records:
        groups[r["name"]].append(r)
    return groups


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _curves_plot(records, prefix, title, ylabel="training loss (nats/char)"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, recs) in enumerate(sorted(_by_name(records).items())):
        for j, r in enumerate(recs):
            steps, losses = zip(*r["result"]["curve"]) if r["result"]["curve"] else ((), ())
            ax.plot(steps, losses, color=f"C{i}", alpha=0.8, lw=1.2, label=name if j == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title + " (one line per seed)")
    ax.legend(fontsize=8)
    return _save(fig, prefix + "-curves.png")


def _layer_profile_plot(groups: dict[str, list[list[float]]], prefix: str, title: str, ylabel: str,
                        xlabel: str = "block (input side -> output side)", log: bool = True):
    """One line per group: the mean over seeds per layer, with the min-max band across seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, (name, runs) in enumerate(sorted(groups.items())):
        n = min(len(r) for r in runs)
        xs = list(range(n))
        lo = [min(r[k] for r in runs) for k in xs]
        hi = [max(r[k] for r in runs) for k in xs]
        mid = [mean(r[k] for r in runs) for k in xs]
        ax.plot(xs, mid, marker="o", color=f"C{i}", label=name)
        ax.fill_between(xs, lo, hi, color=f"C{i}", alpha=0.2)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, prefix + "-layers.png")


# ------------------------------------------------------------------------ C18
def _c18_grid(mode):
    return [(norm, {"model": _model_cfg(mode, norm=norm, placement="pre"), "train": _train_cfg(mode)})
            for norm in ("layernorm", "rmsnorm")]


def _c18_verdict(records) -> Verdict:
    g = _by_name(records)
    val = {k: [r["result"]["final"].get("val_loss", math.nan) for r in v if r["result"]["status"] == "ok"]
           for k, v in g.items()}
    return equivalent(val.get("rmsnorm", []), val.get("layernorm", []), what="final validation loss",
                      label_a="RMSNorm", label_b="LayerNorm", tolerance=0.01)


def _c18_plot(records, verdict, prefix):
    return [_curves_plot(records, prefix, "Pre-LN GPT: LayerNorm vs RMSNorm")]


register(experiment(
    claim="C18", title="RMSNorm matches LayerNorm's quality",
    statement="A pre-norm transformer with RMSNorm reaches the same final loss as with LayerNorm, within noise.",
    setup="Pre-LN GPT (quick: 2 layers, d=64, context 32, 300 steps; full: 4 layers, d=128, context 64, "
          "1500 steps), AdamW lr 1e-3 with warm-up and cosine decay, CPython documentation text; validation "
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
    plt = _plt()
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
    return [_save(fig, prefix + "-ratio.png")]


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
    g = _by_name(records)
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
    g = _by_name(records)
    return [_layer_profile_plot({k: [r["result"]["ffn_out"] for r in v] for k, v in g.items()}, prefix,
                                "Expected gradient norm of each block's FFN output weight at init",
                                "||E[grad W2]||_F")]


register(experiment(
    claim="C22", title="Gradient norm by layer at init: post-LN grows toward the output, pre-LN is flat",
    statement="At initialization, post-LN's gradient norm grows toward the output layers while pre-LN's stays "
              "flat across depth.",
    setup="GPT at initialization (quick: 6 blocks, d=64; full: 8 blocks, d=128) with Xavier init as in the "
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
    g = _by_name(records)
    paths = []
    for when, label in ((0, "at init"), (-1, "after training")):
        p = _layer_profile_plot({k: [_stream(r, when) for r in v] for k, v in g.items()},
                                f"{prefix}-{'init' if when == 0 else 'trained'}",
                                f"Residual-stream RMS after each block, {label}", "RMS of the residual stream")
        paths.append(p)
    return paths


def _c23_verdict(records) -> Verdict:
    g = _by_name(records)
    pre = [_growth(_stream(r, -1)) for r in g.get("pre", [])]
    post = [_growth(_stream(r, -1)) for r in g.get("post", [])]
    v = compare(pre, post, expect="greater", what="log(last/first block) of the residual-stream RMS after "
                "training", label_a="pre-LN", label_b="post-LN", min_effect=math.log(1.2))
    if pre and post:
        v.key_number = f"last/first: pre {fmt(math.exp(mean(pre)))}x, post {fmt(math.exp(mean(post)))}x"
    return v


register(experiment(
    claim="C23", title="Pre-LN's residual stream grows with depth; post-LN's is renormalized",
    statement="In pre-LN the residual stream's magnitude grows with depth (it is never renormalized); in "
              "post-LN it is renormalized every block.",
    setup="GPT (quick: 6 blocks, d=64, 300 steps; full: 8 blocks, d=128, 1500 steps), pre-LN and post-LN "
          "LayerNorm; RMS of the residual stream after each block at init and after training.",
    grid=lambda mode: _stream_grid(mode, ("pre", "post")), seeds={"quick": 2, "full": 3}, run=lm_run,
    verdict=_c23_verdict, plot=_stream_plot,
    paper="Xiong et al. 2020, Lemma 1-2: in pre-LN the expected squared norm of the stream grows linearly "
          "with the layer index; post-LN fixes it at sqrt(d) after every block.",
))


def _c25_verdict(records) -> Verdict:
    g = _by_name(records)
    none = [_growth(_stream(r, -1)) for r in g.get("none", [])]
    pre = [_growth(_stream(r, -1)) for r in g.get("pre", [])]
    v = compare(none, pre, expect="greater", what="log(last/first block) of the residual-stream RMS after "
                "training", label_a="no normalization", label_b="pre-LN", min_effect=math.log(1.5))
    if none and pre:
        v.key_number = f"last/first: none {fmt(math.exp(mean(none)))}x, pre-LN {fmt(math.exp(mean(pre)))}x"
    return v


register(experiment(
    claim="C25", title="Without normalization, activations blow up with depth",
    statement="Without any normalization, a deep residual network's activations blow up with depth.",
    setup="The C23 setup with norm='none' (no final norm either) against pre-LN; GPT-2 initialization "
          "(std 0.02, residual projections scaled by 1/sqrt(2 n_layer)).",
    grid=lambda mode: _stream_grid(mode, ("none", "pre")), seeds={"quick": 2, "full": 3}, run=lm_run,
    verdict=_c25_verdict, plot=_stream_plot,
))

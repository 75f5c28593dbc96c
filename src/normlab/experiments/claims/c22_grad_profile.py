"""C22: Gradient norm by layer at init: post-LN grows toward the output, pre-LN does not; the last block's
gradient does not shrink with depth in post-LN and shrinks in pre-LN (Xiong et al. 2020, Figure 3, Theorem 1).

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds.

What was found about post-LN's growth (measured 2026-12-06 on branch p22a from i22 at 0fde018, 2-core
CPU, 4 seeds each (2 at d=512), throw-away scripts around this file's ``run``; slopes of log ||E[grad W2]|| over relative depth):

- the decoder-only GPT in Xiong's setup (Xavier, unit-variance inputs, ReLU) grows only weakly: +0.07 (sd
  0.27) at d=64 with the GPT's FFN ratio 4, +0.46 (sd 0.21) with the paper's ratio 2, +0.29 (sd 0.22) at
  d=256 ratio 2; the GPT's own init (N(0, 0.02), residual outputs / sqrt(2L)) is flat (-0.01) in both
  placements, because its sublayers add almost nothing to the stream, so the LayerNorms rescale nothing;
- the norm of the mean gradient against the mean of the per-batch norms changes nothing (within 0.1: at init
  the minibatch gradients share their direction); the embedding scale does not matter for post-LN (its first
  LayerNorm renormalizes the stream anyway);
- the 6+6 encoder-decoder grows in its DECODER: +1.77 (sd 0.85) at d=64, +1.87 (sd 0.03) at d=512 FFN 1024
  (about 6x from the first to the last decoder block), while its encoder is flat (+0.24 at d=64, -0.07 at
  d=512).  Zeroing the decoder's cross-attention output makes the decoder flat (+0.14, sd 0.39).  The cause:
  at init a cross-attention adds the encoder's memory to the decoder stream (var(out) / var(x) 0.7-1.3 per
  block: the memory tokens share a common component that uniform attention does not average away) but passes
  almost no gradient back to its own input (its values are the memory's; the softmax is nearly flat), so the
  LayerNorm after it divides the gradient by about sqrt(2) per block going down, with nothing to make up for
  it.  Self-attention and FFN sublayers add variance forward and give gradient back in about equal measure,
  which is why a decoder-only stack (and the encoder) stays nearly flat.
"""

from __future__ import annotations

import functools
import math

from ..harness.lm import SIZES, XIONG, build_gpt, model_cfg
from ..plots import layer_profile_plot, pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, ci_text, combine_verdicts, compare, fmt, mean, paired_by_seed, threshold


DEPTH = PerMode({"quick": 6, "full": 8})  # the decoder-only profile's depth

DEPTHS = PerMode({"quick": [2, 4, 8, 12], "full": [2, 4, 8, 12, 16]})  # the depth sweep (Theorem 1)

BATCHES = PerMode({"quick": 16, "full": 32})  # minibatches averaged into E[grad] (GPT arms)

PAPER_BATCHES = 8  # minibatches of the encoder-decoder arm (its minibatch gradients agree within a few %)

PAPER = dict(d_model=512, d_ff=1024, n_head=4, n_enc=6, n_dec=6, batch=8, length=32)  # Xiong et al.'s IWSLT model

POST_FLOOR = -0.25  # post-LN "does not fall with L": the depth slope's interval above -1/4 (half the -1/2 of pre-LN)

PLACEMENTS = ("post", "pre")


def _profile(p: str) -> str:
    return f"{p}-LN GPT profile"


def _depth(p: str, n: int) -> str:
    return f"{p}-LN GPT L={n}"


def _paper(p: str) -> str:
    return f"{p}-LN 6+6 encoder-decoder d=512"


def grid(mode):
    gpt = [(_profile(p), {"arm": "gpt", "model": model_cfg(mode, n_layer=DEPTH[mode], placement=p, **XIONG),
                          "batches": BATCHES[mode]}) for p in PLACEMENTS]
    gpt += [(_depth(p, n), {"arm": "gpt", "model": model_cfg(mode, n_layer=n, placement=p, **XIONG),
                            "batches": BATCHES[mode]}) for p in PLACEMENTS for n in DEPTHS[mode]]
    if mode == "quick":
        return gpt
    return gpt + [(_paper(p), {"arm": "paper", "model": dict(PAPER, placement=p), "batches": PAPER_BATCHES})
                  for p in PLACEMENTS]


def _grad_norms(loss_of_batch, params: list, n_batches: int) -> tuple[list[float], list[float]]:
    """Per parameter: the norm of the gradient averaged over ``n_batches`` minibatches (Xiong et al.'s expected
    gradient) and, for comparison, the mean over minibatches of each minibatch gradient's norm."""
    import torch

    total = [torch.zeros_like(p) for p in params]
    norms = [0.0] * len(params)
    for b in range(n_batches):
        for k, g in enumerate(torch.autograd.grad(loss_of_batch(b), params)):
            total[k].add_(g)
            norms[k] += g.norm().item() / n_batches
    return [(t / n_batches).norm().item() for t in total], norms


def run(config: dict, seed: int) -> dict:
    """The gradient of each block's FFN output weight W2 at initialization, averaged over minibatches."""
    import torch

    from ...data import text

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if config["arm"] == "paper":
        from ..harness.seq2seq import Seq2SeqTransformer, seq2seq_batch

        cfg = dict(config["model"])
        batch, length = cfg.pop("batch"), cfg.pop("length")
        s2s = Seq2SeqTransformer(corpus.vocab_size, **cfg)
        params = [b.ffn.w2.weight for b in s2s.enc] + [b.ffn.w2.weight for b in s2s.dec]
        expected, norms = _grad_norms(lambda _: s2s(*seq2seq_batch(corpus.train, batch, length, gen)), params,
                                      config["batches"])
        n = cfg["n_enc"]
        return {"enc": expected[:n], "dec": expected[n:], "enc_mean_norm": norms[:n], "dec_mean_norm": norms[n:]}
    from ...train import LMTask

    model = build_gpt(config["model"], corpus.vocab_size)
    task = LMTask(corpus, config["model"]["block_size"], SIZES[config["mode"]]["batch"])
    params = [b.mlp.c_proj.weight for b in model.blocks]
    expected, norms = _grad_norms(lambda _: task.loss(model, task.train_batch(gen)), params, config["batches"])
    return {"ffn_out": expected, "ffn_out_mean_norm": norms}


def _fit(xs: list[float], ys: list[float]) -> float:
    mx, my = mean(xs), mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def log_slope(profile: list[float]) -> float:
    """Least-squares slope of log(value) against relative depth (first block 0, last block 1).

    Reads every block, not only the ends; for a geometric profile it is log(last / first), so a slope
    of log(1.25) means the fitted profile grows by a factor 1.25 from the input side to the output side.
    """
    n = len(profile)
    return _fit([k / (n - 1) for k in range(n)], [math.log(v) for v in profile])


def depth_slopes(records, placement: str) -> dict[int, float]:
    """Per seed with every depth: slope of log(last block's ||E[grad W2]||) against log(L)."""
    g = by_name(records)
    depths = sorted(int(name.rsplit("=", 1)[1]) for name in g if name.startswith(f"{placement}-LN GPT L="))
    last = {n: {r["seed"]: r["result"]["ffn_out"][-1] for r in g[_depth(placement, n)]} for n in depths}
    seeds = sorted(set.intersection(*(set(v) for v in last.values()))) if len(depths) > 1 else []
    return {s: _fit([math.log(n) for n in depths], [math.log(last[n][s]) for n in depths]) for s in seeds}


def _stacks(records) -> dict[str, tuple[list[dict], list[dict], str]]:
    """The measured stacks: name -> (post-LN records, pre-LN records, result key of the profile)."""
    g = by_name(records)
    out = {"decoder-only GPT": (g.get(_profile("post"), []), g.get(_profile("pre"), []), "ffn_out")}
    if g.get(_paper("post")) or g.get(_paper("pre")):
        for part, key in (("encoder", "enc"), ("decoder", "dec")):
            out[f"enc-dec {part}"] = (g.get(_paper("post"), []), g.get(_paper("pre"), []), key)
    return out


WHAT = "slope of log ||E[grad W2]|| over relative depth"


def _slope_of(r: dict, key: str) -> float:
    return log_slope(r["result"][key])


def verdict(records) -> Verdict:
    parts: dict[str, Verdict] = {}
    own: dict[str, Verdict] = {}
    numbers: dict[str, float] = {}
    for stack, (post, pre, key) in _stacks(records).items():
        a, b = paired_by_seed(post, pre, functools.partial(_slope_of, key=key))
        parts[f"contrast, {stack}"] = compare(a, b, expect="greater", paired=True, what=f"{stack}: {WHAT}",
                                              label_a="post-LN", label_b="pre-LN")
        for p, recs in (("post", post), ("pre", pre)):
            slopes = [log_slope(r["result"][key]) for r in recs]
            own[f"{stack} {p}-LN"] = threshold(slopes, what=f"{stack} {p}-LN {WHAT}", above=0.0)
            numbers[f"{stack} {p}-LN mean-of-norms slope"] = mean(log_slope(r["result"][key + "_mean_norm"])
                                                                  for r in recs if key + "_mean_norm" in r["result"])
    dpost, dpre = depth_slopes(records, "post"), depth_slopes(records, "pre")
    what_l = "slope of log(last block's ||E[grad W2]||) against log L"
    parts["depth sweep, post-LN does not fall"] = threshold(dpost.values(), what=f"post-LN {what_l}",
                                                             above=POST_FLOOR)
    parts["depth sweep, pre-LN falls"] = threshold(dpre.values(), what=f"pre-LN {what_l}", below=0.0)
    v = combine_verdicts(parts)
    own_text = "; ".join(f"{k} {ci_text(x)}" for k, x in own.items())
    v.summary += (f"; not judged, each placement's own {WHAT} (95% t): {own_text} (a pre-LN profile falls "
                  "toward the output because the residual stream it never renormalizes grows block by block, and "
                  "the final LayerNorm divides the gradient by that growing scale)")
    v.numbers.update({"own_slopes": {k: x.numbers["values"] for k, x in own.items()},
                      "depth_slopes": {"post": dpost, "pre": dpre}, **numbers})
    contrasts = {k: x for k, x in parts.items() if k.startswith("contrast")}
    contrast = ", ".join(f"{k[len('contrast, '):]} {ci_text(x)}" for k, x in contrasts.items())
    v.key_number = (f"post - pre slope: {contrast}; depth slope post {ci_text(parts['depth sweep, post-LN does not fall'])}, pre "
                    f"{ci_text(parts['depth sweep, pre-LN falls'])}")
    v.versus_paper = (
        "paper: at init the W2 gradient norm rises with the layer index in post-LN and stays about the same in "
        "pre-LN (Figure 3, 6+6 encoder-decoder, d=512, FFN 1024, Xavier init, IWSLT14), and the last layer's "
        "is O(d sqrt(ln d)) for post-LN whatever the depth L, O(d sqrt(ln d / L)) for pre-LN (Theorem 1: a "
        f"log-log slope of 0 and -1/2); here: post - pre slope {contrast}; own "
        f"slopes {own_text}; depth slopes post {ci_text(parts['depth sweep, post-LN does not fall'])}, pre "
        f"{ci_text(parts['depth sweep, pre-LN falls'])} (theory 0 and -0.5); the GPT arms are decoder-only "
        f"(d={SIZES['quick']['d_model']} quick, d={SIZES['full']['d_model']} full), the 6+6 encoder-decoder "
        "(character windows: the source window, then the window after it as the target) runs in full mode")
    return v


def plot(records, verdict, prefix):
    g = by_name(records)
    paths = [layer_profile_plot({k: [r["result"]["ffn_out"] for r in g[k]] for k in map(_profile, PLACEMENTS)
                                 if g.get(k)}, prefix, "Decoder-only GPT at init: ||E[grad W2]|| by block",
                                "||E[grad W2]||_F")]
    if g.get(_paper("post")):
        paths.append(layer_profile_plot(
            {f"{p}-LN {part}": [r["result"][key] for r in g.get(_paper(p), [])] for p in PLACEMENTS
             for part, key in (("encoder", "enc"), ("decoder", "dec")) if g.get(_paper(p))},
            prefix + "-encdec", "6+6 encoder-decoder, d=512, at init: ||E[grad W2]|| by block", "||E[grad W2]||_F"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, p in enumerate(PLACEMENTS):
        depths = sorted(int(n.rsplit("=", 1)[1]) for n in g if n.startswith(f"{p}-LN GPT L="))
        for n in depths:
            ys = [r["result"]["ffn_out"][-1] for r in g[_depth(p, n)]]
            ax.scatter([n] * len(ys), ys, color=f"C{i}", alpha=0.5, label=f"{p}-LN" if n == depths[0] else None)
        if depths:
            ax.plot(depths, [mean(r["result"]["ffn_out"][-1] for r in g[_depth(p, n)]) for n in depths], color=f"C{i}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of blocks L")
    ax.set_ylabel("last block's ||E[grad W2]||_F")
    ax.set_title("Theorem 1: the last block's W2 gradient against depth, at init")
    ax.legend(fontsize=8)
    return paths + [save_fig(fig, prefix + "-depth.png")]


SPEC = experiment(
    claim="C22", title="Gradient norm by layer at init: post-LN grows toward the output, pre-LN does not",
    statement="At initialization, post-LN's gradient norm grows toward the output layers while pre-LN's does not, "
              "and the last layer's gradient does not shrink with depth L in post-LN while in pre-LN it shrinks "
              "like 1/sqrt(L).",
    setup=f"At initialization, in Xiong et al.'s setup (Xavier-normal weights, unit-variance block inputs, ReLU "
          f"FFNs): the gradient of each block's FFN output weight W2 averaged over minibatches at fixed parameters, "
          f"then its Frobenius norm (their expected gradient; the mean of the per-batch norms is kept beside it). "
          f"(a) Contrast: per seed, the least-squares slope of log(norm) against relative depth (0 first block, 1 "
          f"last); post-LN's minus pre-LN's, paired by seed (the same data), 95% paired t interval above 0. "
          f"Stacks: a decoder-only GPT ({DEPTH['quick']} blocks d={SIZES['quick']['d_model']} quick, "
          f"{DEPTH['full']} blocks d={SIZES['full']['d_model']} full, {BATCHES['quick']}/{BATCHES['full']} "
          f"minibatches) and, in full mode only, Xiong et al.'s 6+6 encoder-decoder at d=512, FFN 1024, 4 heads "
          f"({PAPER_BATCHES} minibatches of 8 x 32 characters; its encoder and its decoder are each a stack). "
          f"Quick mode lacks the encoder-decoder, which is where post-LN's growth is (in the decoder: see the notes); "
          f"the decoder-only GPT grows only weakly. (b) Depth sweep (Theorem 1): the GPT at L = "
          f"{', '.join(map(str, DEPTHS['quick']))} blocks (quick; full adds 16); per seed, the slope of log(last "
          f"block's norm) against log L: post-LN's 95% t interval above {POST_FLOOR} (does not fall), pre-LN's "
          "below 0 (falls; theory -1/2). Every part must hold. Each placement's own slope over the stack is "
          "reported, not judged. 6 seeds.",
    grid=grid, seeds={"quick": 6, "full": 6}, run=run, verdict=verdict, plot=plot,
    paper="Xiong et al. 2020, Figure 3 (expected gradient of the FFN's W2 by layer at init: post-LN rising with the "
          "layer index, pre-LN about flat; 6+6 Transformer, d=512) and its depth panel with Theorem 1 (last "
          "layer's W2 gradient flat in L for post-LN, falling like 1/sqrt(L) for pre-LN).",
)

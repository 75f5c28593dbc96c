"""C22: Gradient norm by layer at init: post-LN grows toward the output, pre-LN is flat.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import SIZES, XIONG, build_gpt, model_cfg
from ..plots import layer_profile_plot
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, ci_text, combine_verdicts, fmt, mean, threshold, within


DEPTH = PerMode({"quick": 6, "full": 8, "paper": 12})  # paper: Xiong et al.'s 6-14 layers at d=512

BATCHES = PerMode({"quick": 32, "full": 64, "paper": 128})

FLAT = math.log(1.25)  # flat: the fitted profile changes by less than a factor 1.25 over the stack

ARMS = {"post": "post-LN, Xiong setup", "pre": "pre-LN, Xiong setup"}  # the judged arms

CONTRAST = {"post": "post-LN, GPT-2 init + GELU (contrast)", "pre": "pre-LN, GPT-2 init + GELU (contrast)"}


def grid(mode):
    depth, batches = DEPTH[mode], BATCHES[mode]
    grid = [(ARMS[p], {"model": model_cfg(mode, n_layer=depth, placement=p, **XIONG), "batches": batches})
            for p in ("post", "pre")]
    return grid + [(CONTRAST[p], {"model": model_cfg(mode, n_layer=depth, placement=p, init="gpt2"),
                                      "batches": batches}) for p in ("post", "pre")]


def run(config: dict, seed: int) -> dict:
    """Xiong et al.'s expected gradient at initialization, per block, for the FFN weights."""
    import torch

    from ...data import text
    from ...train import LMTask, expected_grad_norms

    corpus = text(config.get("text"))
    torch.manual_seed(seed)
    model = build_gpt(config["model"], corpus.vocab_size)
    task = LMTask(corpus, config["model"]["block_size"], SIZES[config["mode"]]["batch"])
    norms = expected_grad_norms(model, task, n_batches=config["batches"], seed=seed)
    depth = config["model"]["n_layer"]
    return {"ffn_out": [norms[f"blocks.{i}.mlp.c_proj.weight"] for i in range(depth)],
            "ffn_in": [norms[f"blocks.{i}.mlp.c_fc.weight"] for i in range(depth)],
            "attn_out": [norms[f"blocks.{i}.attn.c_proj.weight"] for i in range(depth)]}


def log_slope(profile: list[float]) -> float:
    """Least-squares slope of log(value) against relative depth (first block 0, last block 1).

    Reads every block, not only the ends; for a geometric profile it is log(last / first), so a slope
    of log(1.25) means the fitted profile grows by a factor 1.25 from the input side to the output side.
    """
    n = len(profile)
    xs = [k / (n - 1) for k in range(n)]
    ys = [math.log(v) for v in profile]
    mx, my = mean(xs), mean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def verdict(records) -> Verdict:
    g = by_name(records)
    post = [log_slope(r["result"]["ffn_out"]) for r in g.get(ARMS["post"], [])]
    pre = [log_slope(r["result"]["ffn_out"]) for r in g.get(ARMS["pre"], [])]
    what = "slope of log ||E[grad W2]|| over relative depth (log units per stack)"
    grows = threshold(post, what=f"post-LN {what}", above=FLAT)
    flat = within(pre, what=f"pre-LN {what}", tolerance=FLAT)
    v = combine_verdicts({"post-LN grows toward the output": grows, "pre-LN is flat": flat})
    factors = {k: fmt(math.exp(mean(log_slope(r["result"]["ffn_out"]) for r in vs))) for k, vs in g.items()}
    v.summary += (f"; fitted output/input factor exp(mean slope) per group (contrast groups are not judged): "
                  f"{factors}")
    v.numbers.update({"post_slopes": post, "pre_slopes": pre, "factors": factors})
    mpost, mpre = mean(post), mean(pre)
    v.key_number = f"output/input factor post-LN {fmt(math.exp(mpost))}x, pre-LN {fmt(math.exp(mpre))}x"
    contrast = ", ".join(f"{p}-LN {factors[name]}x" for p, name in CONTRAST.items() if name in factors)
    v.versus_paper = (
        "paper: the W2 gradient norm at init rises with the layer index for post-LN and stays about the same "
        "for pre-LN (Xiong et al. Figure 3, 6-layer encoder-decoder, d=512, IWSLT14, Xavier init, unit-variance "
        "inputs, ReLU; their theory: post-LN's last-layer W2 gradient is O(d sqrt(ln d)) whatever the depth, "
        "pre-LN's O(d sqrt(ln d / L))); here, same init, inputs and ReLU: fitted output/input factor post-LN "
        f"{fmt(math.exp(mpost))}x (slope {ci_text(grows)}), pre-LN {fmt(math.exp(mpre))}x (slope {ci_text(flat)}) "
        f"over {len(post)} and {len(pre)} seeds" + (f" (GPT-2 init + GELU contrast: {contrast})" if contrast else "")
        + f"; scale: a decoder-only character-level GPT, {DEPTH['quick']} blocks d=64 (quick) or "
        f"{DEPTH['full']} blocks d=96 (full)")
    return v


def plot(records, verdict, prefix):
    g = by_name(records)
    return [layer_profile_plot({k: [r["result"]["ffn_out"] for r in v] for k, v in g.items()}, prefix,
                                "Expected gradient norm of each block's FFN output weight at init",
                                "||E[grad W2]||_F")]


SPEC = experiment(
    claim="C22", title="Gradient norm by layer at init: post-LN grows toward the output, pre-LN is flat",
    statement="At initialization, post-LN's gradient norm grows toward the output layers while pre-LN's stays "
              "flat across depth.",
    setup="GPT at initialization in Xiong et al.'s setup: Xavier-normal block weights, unit-variance block inputs "
          "(embeddings N(0, 1/d) times sqrt(d/2)) and ReLU FFNs (quick: 6 blocks, d=64; full: 8 blocks, d=96); "
          "for each block, the gradient of the FFN's second weight W2 averaged over 32 (quick) or 64 (full) "
          "minibatches at fixed parameters, then its Frobenius norm (their expected gradient). Per seed, the "
          "least-squares slope of log(norm) against relative depth (0 at the first block, 1 at the last) over "
          "all blocks; 8 seeds per mode. Rule: post-LN's mean slope above log 1.25 (the fitted profile grows by "
          "more than 1.25x over the stack) by its 95% t interval, and pre-LN's within +-log 1.25 (equivalence, "
          "95% t interval); both must hold. A GPT-2-init/GELU arm (N(0, 0.02) weights and embeddings) is drawn "
          "and listed as a contrast, not judged.",
    grid=grid, seeds={"quick": 8, "full": 8}, run=run, verdict=verdict, plot=plot,
    paper="Xiong et al. 2020, Figure 3: expected gradient of W2 in the FFN by layer, post-LN increasing with "
          "the layer index, pre-LN staying about the same (6-layer Transformer, d=512, Xavier init).",
)

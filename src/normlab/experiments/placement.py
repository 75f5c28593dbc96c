"""Post-LN vs pre-LN placement (Xiong et al. 2020): warm-up, gradient profile at init, final quality (C21, C22, C24)."""

from __future__ import annotations

import math

from .lm import SIZES, bar_plot, build_gpt, final_loss, final_losses, lm_run, model_cfg, train_cfg
from .plots import layer_profile_plot, pyplot, save_fig
from .registry import register
from .spec import (PerMode, Verdict, by_name, combine_verdicts, compare, experiment, fmt, mean, paired_by_seed,
                   threshold)
from .stats import interval, judge_equivalence

# Xiong et al.'s setup: Xavier-initialized blocks, unit-variance block inputs (embeddings N(0, 1/d) scaled by
# sqrt(d/2)), ReLU FFNs.  C21 and C22 use it; C24 keeps the C18 sizes and GELU.
XIONG = dict(init="xavier", embed_scale=True, activation="relu")


def within(xs, *, what: str, tolerance: float) -> Verdict:
    """Judge "the mean of ``xs`` is 0 within +-``tolerance``" by its one-sample t interval (an equivalence test)."""
    xs = list(xs)
    iv = interval(what, xs)
    iv.status = judge_equivalence(iv.lo, iv.hi, tolerance=tolerance)
    iv.rule = (f"supported if the {iv.level:.0%} CI of the mean lies inside +-{fmt(tolerance)}; not supported if "
               "it lies wholly outside; otherwise inconclusive")
    return Verdict(iv.status, f"{what}: {iv.text()}, tolerance +-{fmt(tolerance)}", iv.rule,
                   {"values": xs, "ci": [iv.lo, iv.hi]}, key_number=fmt(iv.estimate), tests=[iv.to_dict()])


def _ci(v: Verdict) -> str:
    """The first judged interval of ``v`` as "estimate [lo, hi]"."""
    t = v.tests[0]
    return f"{fmt(t['estimate'])} [{fmt(t['lo'])}, {fmt(t['hi'])}]"


# ------------------------------------------------------------------------ C22
C22_DEPTH = PerMode({"quick": 6, "full": 8, "paper": 12})  # paper: Xiong et al.'s 6-14 layers at d=512
C22_BATCHES = PerMode({"quick": 32, "full": 64, "paper": 128})
FLAT = math.log(1.25)  # flat: the fitted profile changes by less than a factor 1.25 over the stack
C22_ARMS = {"post": "post-LN, Xiong setup", "pre": "pre-LN, Xiong setup"}  # the judged arms
C22_CONTRAST = {"post": "post-LN, GPT-2 init + GELU (contrast)", "pre": "pre-LN, GPT-2 init + GELU (contrast)"}


def _c22_grid(mode):
    depth, batches = C22_DEPTH[mode], C22_BATCHES[mode]
    grid = [(C22_ARMS[p], {"model": model_cfg(mode, n_layer=depth, placement=p, **XIONG), "batches": batches})
            for p in ("post", "pre")]
    return grid + [(C22_CONTRAST[p], {"model": model_cfg(mode, n_layer=depth, placement=p, init="gpt2"),
                                      "batches": batches}) for p in ("post", "pre")]


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


def _c22_verdict(records) -> Verdict:
    g = by_name(records)
    post = [log_slope(r["result"]["ffn_out"]) for r in g.get(C22_ARMS["post"], [])]
    pre = [log_slope(r["result"]["ffn_out"]) for r in g.get(C22_ARMS["pre"], [])]
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
    contrast = ", ".join(f"{p}-LN {factors[name]}x" for p, name in C22_CONTRAST.items() if name in factors)
    v.versus_paper = (
        "paper: the W2 gradient norm at init rises with the layer index for post-LN and stays about the same "
        "for pre-LN (Xiong et al. Figure 3, 6-layer encoder-decoder, d=512, IWSLT14, Xavier init, unit-variance "
        "inputs, ReLU; their theory: post-LN's last-layer W2 gradient is O(d sqrt(ln d)) whatever the depth, "
        "pre-LN's O(d sqrt(ln d / L))); here, same init, inputs and ReLU: fitted output/input factor post-LN "
        f"{fmt(math.exp(mpost))}x (slope {_ci(grows)}), pre-LN {fmt(math.exp(mpre))}x (slope {_ci(flat)}) "
        f"over {len(post)} and {len(pre)} seeds" + (f" (GPT-2 init + GELU contrast: {contrast})" if contrast else "")
        + f"; scale: a decoder-only character-level GPT, {C22_DEPTH['quick']} blocks d=64 (quick) or "
        f"{C22_DEPTH['full']} blocks d=96 (full)")
    return v


def _c22_plot(records, verdict, prefix):
    g = by_name(records)
    return [layer_profile_plot({k: [r["result"]["ffn_out"] for r in v] for k, v in g.items()}, prefix,
                                "Expected gradient norm of each block's FFN output weight at init",
                                "||E[grad W2]||_F")]


register(experiment(
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
    grid=_c22_grid, seeds={"quick": 8, "full": 8}, run=grad_profile_run, verdict=_c22_verdict, plot=_c22_plot,
    paper="Xiong et al. 2020, Figure 3: expected gradient of W2 in the FFN by layer, post-LN increasing with "
          "the layer index, pre-LN staying about the same (6-layer Transformer, d=512, Xavier init).",
))


# ------------------------------------------------------------------------ C21
C21_LR = 2e-3  # post-LN with warm-up trains here (within ~0.1-0.15 nats of pre-LN); without, it stalls
C21_DEPTHS = PerMode({"quick": (2, 6), "full": (2, 4, 8), "paper": (2, 6, 12)})
C21_STEPS = PerMode({"quick": 200, "full": 400, "paper": 4000})
C21_MIN = 0.1  # nats: the smallest warm-up cost (or growth of it) that counts


def _c21_name(placement: str, depth: int, warm: bool) -> str:
    return f"{placement}-L{depth}-{'warmup' if warm else 'nowarmup'}"


def _c21_grid(mode):
    steps = C21_STEPS[mode]
    return [(_c21_name(p, depth, warm),
             {"model": model_cfg(mode, n_layer=depth, d_model=64, placement=p, **XIONG),
              "train": train_cfg(mode, steps=steps, lr=C21_LR, warmup_steps=steps // 4 if warm else 0,
                                 betas=[0.9, 0.98], grad_clip=None, schedule="constant",
                                 log_every=max(1, steps // 50))})
            for depth in C21_DEPTHS[mode] for p in ("post", "pre") for warm in (True, False)]


def _depths_in(records) -> list[int]:
    return sorted({int(r["name"].split("-")[1][1:]) for r in records})


def _warmup_cost(records, placement: str, depth: int) -> dict[int, float]:
    """Per seed: final loss without warm-up minus with warm-up (a diverged run counts with its initial loss)."""
    without = final_losses(records, _c21_name(placement, depth, False))
    with_ = final_losses(records, _c21_name(placement, depth, True))
    return {s: without[s] - with_[s] for s in sorted(set(without) & set(with_))}


def _excess(records, depth: int) -> dict[int, float]:
    """Per seed: post-LN's warm-up cost minus pre-LN's at ``depth``."""
    post, pre = _warmup_cost(records, "post", depth), _warmup_cost(records, "pre", depth)
    return {s: post[s] - pre[s] for s in sorted(set(post) & set(pre))}


def _paired(a: dict, b: dict) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def _c21_verdict(records) -> Verdict:
    depths = _depths_in(records) or [0]
    shallow, deep = depths[0], depths[-1]  # with one depth only, the growth part has no pairs: inconclusive
    post, pre = _paired(_warmup_cost(records, "post", deep), _warmup_cost(records, "pre", deep))
    need = compare(post, pre, expect="greater", what=f"warm-up cost at {deep} blocks (final loss without minus "
                   "with warm-up, nats)", label_a="post-LN", label_b="pre-LN", min_effect=C21_MIN, paired=True)
    stable = threshold(_warmup_cost(records, "pre", deep).values(),
                       what=f"pre-LN's warm-up cost at {deep} blocks (nats)", below=C21_MIN)
    grow = compare(*(_paired(_excess(records, deep), _excess(records, shallow)) if deep != shallow else ([], [])),
                   expect="greater",
                   what="post-LN's excess warm-up cost over pre-LN's (nats)", label_a=f"{deep} blocks",
                   label_b=f"{shallow} blocks", min_effect=C21_MIN, paired=True)
    v = combine_verdicts({f"post-LN needs warm-up at {deep} blocks": need,
                          f"pre-LN does not at {deep} blocks": stable,
                          "post-LN's need grows with depth": grow})
    costs = {f"{p}-L{d}": mean(_warmup_cost(records, p, d).values()) for d in depths for p in ("post", "pre")}
    losses = {n: mean(final_losses(records, n).values()) for n in sorted(by_name(records))}
    warm_gap = interval(f"post-LN minus pre-LN final loss, both warmed up, {deep} blocks", *paired_by_seed(
        by_name(records).get(_c21_name("post", deep, True), []), by_name(records).get(_c21_name("pre", deep, True), []),
        final_loss), paired=True)
    diverged = {p: sum(r["result"]["status"] == "diverged" for r in records if r["name"].startswith(p)
                       and r["name"].endswith("-nowarmup")) for p in ("post", "pre")}
    v.summary += (f"; mean warm-up cost per depth: {', '.join(f'{k} {fmt(c)}' for k, c in costs.items())}; "
                  f"does post-LN train when warmed up? {warm_gap.text()} (not judged); runs without warm-up "
                  f"that diverged: post-LN {diverged['post']}, pre-LN {diverged['pre']}")
    v.numbers.update({"warmup_cost": costs, "final_loss": losses, "warmed_up_gap": warm_gap.to_dict(),
                      "diverged_without_warmup": diverged})
    cost = lambda p, d: fmt(costs.get(f"{p}-L{d}", math.nan))  # noqa: E731
    loss = lambda p, d, warm: fmt(losses.get(_c21_name(p, d, warm), math.nan))  # noqa: E731
    v.key_number = (f"warm-up cost at {deep} blocks: post-LN {cost('post', deep)} vs pre-LN {cost('pre', deep)} "
                    f"nats (at {shallow} blocks: post {cost('post', shallow)}, pre {cost('pre', shallow)})")
    v.versus_paper = (
        "paper: post-LN with Adam and no warm-up 8.45 BLEU vs about 34 with warm-up, pre-LN without warm-up about "
        "34 (IWSLT14 De-En, 6 layers, d=512, lr 5e-4); with a 500-step warm-up, 31.16 BLEU at lr 5e-4 vs 2.77 at "
        f"1e-3; here (lr {C21_LR:g}, Xiong's init): post-LN at {deep} blocks ends at {loss('post', deep, True)} "
        f"nats/char with warm-up vs {loss('post', deep, False)} without, pre-LN at {loss('pre', deep, True)} vs "
        f"{loss('pre', deep, False)}; excess cost {_ci(need)} nats; at {shallow} blocks post-LN's cost is "
        f"{cost('post', shallow)}; scale: a decoder-only character-level GPT, d=64, {C21_STEPS['quick']} (quick) "
        f"or {C21_STEPS['full']} (full) steps on CPU, loss instead of BLEU")
    return v


def _c21_plot(records, verdict, prefix):
    plt = pyplot()
    depths = _depths_in(records)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, p in enumerate(("post", "pre")):
        means = []
        for k, d in enumerate(depths):
            costs = list(_warmup_cost(records, p, d).values())
            ax.scatter([d + (i - 0.5) * 0.15] * len(costs), costs, color=f"C{i}", s=14, alpha=0.7,
                       label=f"{p}-LN (seeds)" if k == 0 else None)
            means.append(mean(costs))
        ax.plot(depths, means, color=f"C{i}", marker="o", label=f"{p}-LN (mean)")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xticks(depths)
    ax.set_xlabel("blocks")
    ax.set_ylabel("final loss without - with warm-up (nats)")
    ax.set_title(f"Cost of dropping warm-up, lr {C21_LR:g}, Adam (0.9, 0.98), no clipping")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-cost.png"), bar_plot(records, prefix, "Final loss with and without warm-up")]


register(experiment(
    claim="C21", title="Post-LN needs warm-up; pre-LN does not",
    statement="Post-LN transformers are hard to train at depth without a learning-rate warm-up; pre-LN "
              "transformers train stably without one.",
    setup=f"GPT in Xiong et al.'s setup (Xavier init, unit-variance block inputs, ReLU FFNs), d=64, at "
          f"{' and '.join(map(str, C21_DEPTHS['quick']))} blocks for {C21_STEPS['quick']} steps (quick) or "
          f"{', '.join(map(str, C21_DEPTHS['full']))} blocks for {C21_STEPS['full']} steps (full); Adam betas "
          f"(0.9, 0.98), no gradient clipping, lr {C21_LR:g} constant after a linear warm-up over the first "
          "quarter of the steps, or without warm-up (at this lr post-LN with warm-up trains to within ~0.1-0.15 "
          "nats of pre-LN). A run that diverges counts with its initial loss. Warm-up cost = final loss without "
          "minus with warm-up, per seed (runs of a seed share data order: paired intervals); 4 seeds per mode. "
          f"Rule (all three must hold, 95% CIs): at the deepest stack post-LN's cost exceeds pre-LN's by "
          f"more than {C21_MIN} nats (paired t); pre-LN's cost there is below {C21_MIN} nats (t); and post-LN's "
          f"excess cost over pre-LN's is larger at the deepest than at the shallowest stack by more than "
          f"{C21_MIN} nats (paired t).",
    grid=_c21_grid, seeds={"quick": 4, "full": 4}, run=lm_run, verdict=_c21_verdict, plot=_c21_plot,
    paper="Xiong et al. 2020, Figure 2/Table: post-LN with Adam and no warm-up reached 8.45 BLEU on IWSLT14 "
          "De-En against about 34 with warm-up; pre-LN without warm-up matched post-LN with it.",
))


# ------------------------------------------------------------------------ C24
def _c24_grid(mode):
    s = SIZES[mode]
    return [(p, {"model": model_cfg(mode, placement=p, init="xavier"),
                 "train": train_cfg(mode, warmup_steps=s["steps"] // 4, betas=[0.9, 0.98])})
            for p in ("post", "pre")]


def _c24_verdict(records) -> Verdict:
    g = by_name(records)
    pre, post = paired_by_seed(g.get("pre", []), g.get("post", []), final_loss)
    v = compare(pre, post, expect="greater", what="final validation loss (nats/char)", label_a="pre-LN",
                label_b="post-LN (warmed up)", paired=True)
    v.versus_paper = (
        "paper: pre-LN without warm-up reached about 34 BLEU on IWSLT14 De-En, as post-LN with warm-up did "
        "(Xiong et al.); Liu et al. 2020 report post-LN ahead when it trains; here: pre-LN minus post-LN "
        f"final loss {_ci(v)} nats/char over {len(pre)} seeds; scale: a character-level GPT at the C18 sizes, "
        "a few hundred steps on CPU, loss instead of BLEU")
    return v


register(experiment(
    claim="C24", title="Pre-LN can end slightly worse than a warmed-up post-LN",
    statement="At small scale, a pre-LN transformer can end slightly worse than a post-LN one trained with a "
              "good warm-up.",
    setup="GPT with Xavier init at the C18 sizes (quick: 2 blocks, d=64, 300 steps; full: 4 blocks, d=96, 400 "
          "steps), both with a warm-up over the first quarter of the steps and cosine decay, Adam betas (0.9, "
          "0.98); 5 seeds per mode, runs of a seed share data order. Rule: pre-LN's final validation loss minus "
          "post-LN's, paired by seed, 95% t interval wholly above 0.",
    grid=_c24_grid, seeds={"quick": 5, "full": 5}, run=lm_run, verdict=_c24_verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Post-LN (warmed up) vs pre-LN")],
    paper="Xiong et al. 2020 and Liu et al. 2020 (Admin): post-LN, when it trains, often reaches better final "
          "quality than pre-LN on translation.",
))

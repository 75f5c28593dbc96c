"""C21: Post-LN needs warm-up; pre-LN does not.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import XIONG, bar_plot, final_loss, final_losses, lm_run, model_cfg, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..stats import interval
from ..verdicts import by_name, ci_text, combine_verdicts, compare, fmt, mean, paired_by_seed, threshold


LR = 2e-3  # post-LN with warm-up trains here (within ~0.1-0.15 nats of pre-LN); without, it stalls

DEPTHS = PerMode({"quick": (2, 6), "full": (2, 4, 8), "paper": (2, 6, 12)})

STEPS = PerMode({"quick": 200, "full": 400, "paper": 4000})

MIN = 0.1  # nats: the smallest warm-up cost (or growth of it) that counts


def _name(placement: str, depth: int, warm: bool) -> str:
    return f"{placement}-L{depth}-{'warmup' if warm else 'nowarmup'}"


def grid(mode):
    steps = STEPS[mode]
    return [(_name(p, depth, warm),
             {"model": model_cfg(mode, n_layer=depth, d_model=64, placement=p, **XIONG),
              "train": train_cfg(mode, steps=steps, lr=LR, warmup_steps=steps // 4 if warm else 0,
                                 betas=[0.9, 0.98], grad_clip=None, schedule="constant",
                                 log_every=max(1, steps // 50))})
            for depth in DEPTHS[mode] for p in ("post", "pre") for warm in (True, False)]


def _depths_in(records) -> list[int]:
    return sorted({int(r["name"].split("-")[1][1:]) for r in records})


def _warmup_cost(records, placement: str, depth: int) -> dict[int, float]:
    """Per seed: final loss without warm-up minus with warm-up (a diverged run counts with its initial loss)."""
    without = final_losses(records, _name(placement, depth, False))
    with_ = final_losses(records, _name(placement, depth, True))
    return {s: without[s] - with_[s] for s in sorted(set(without) & set(with_))}


def _excess(records, depth: int) -> dict[int, float]:
    """Per seed: post-LN's warm-up cost minus pre-LN's at ``depth``."""
    post, pre = _warmup_cost(records, "post", depth), _warmup_cost(records, "pre", depth)
    return {s: post[s] - pre[s] for s in sorted(set(post) & set(pre))}


def _paired(a: dict, b: dict) -> tuple[list[float], list[float]]:
    seeds = sorted(set(a) & set(b))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def verdict(records) -> Verdict:
    depths = _depths_in(records) or [0]
    shallow, deep = depths[0], depths[-1]  # with one depth only, the growth part has no pairs: inconclusive
    post, pre = _paired(_warmup_cost(records, "post", deep), _warmup_cost(records, "pre", deep))
    need = compare(post, pre, expect="greater", what=f"warm-up cost at {deep} blocks (final loss without minus "
                   "with warm-up, nats)", label_a="post-LN", label_b="pre-LN", min_effect=MIN, paired=True)
    stable = threshold(_warmup_cost(records, "pre", deep).values(),
                       what=f"pre-LN's warm-up cost at {deep} blocks (nats)", below=MIN)
    grow = compare(*(_paired(_excess(records, deep), _excess(records, shallow)) if deep != shallow else ([], [])),
                   expect="greater",
                   what="post-LN's excess warm-up cost over pre-LN's (nats)", label_a=f"{deep} blocks",
                   label_b=f"{shallow} blocks", min_effect=MIN, paired=True)
    v = combine_verdicts({f"post-LN needs warm-up at {deep} blocks": need,
                          f"pre-LN does not at {deep} blocks": stable,
                          "post-LN's need grows with depth": grow})
    costs = {f"{p}-L{d}": mean(_warmup_cost(records, p, d).values()) for d in depths for p in ("post", "pre")}
    losses = {n: mean(final_losses(records, n).values()) for n in sorted(by_name(records))}
    warm_gap = interval(f"post-LN minus pre-LN final loss, both warmed up, {deep} blocks", *paired_by_seed(
        by_name(records).get(_name("post", deep, True), []), by_name(records).get(_name("pre", deep, True), []),
        final_loss), paired=True)
    diverged = {p: sum(r["result"]["status"] == "diverged" for r in records if r["name"].startswith(p)
                       and r["name"].endswith("-nowarmup")) for p in ("post", "pre")}
    v.summary += (f"; mean warm-up cost per depth: {', '.join(f'{k} {fmt(c)}' for k, c in costs.items())}; "
                  f"does post-LN train when warmed up? {warm_gap.text()} (not judged); runs without warm-up "
                  f"that diverged: post-LN {diverged['post']}, pre-LN {diverged['pre']}")
    v.numbers.update({"warmup_cost": costs, "final_loss": losses, "warmed_up_gap": warm_gap.to_dict(),
                      "diverged_without_warmup": diverged})
    cost = lambda p, d: fmt(costs.get(f"{p}-L{d}", math.nan))  # noqa: E731
    loss = lambda p, d, warm: fmt(losses.get(_name(p, d, warm), math.nan))  # noqa: E731
    v.key_number = (f"warm-up cost at {deep} blocks: post-LN {cost('post', deep)} vs pre-LN {cost('pre', deep)} "
                    f"nats (at {shallow} blocks: post {cost('post', shallow)}, pre {cost('pre', shallow)})")
    v.versus_paper = (
        "paper: post-LN with Adam and no warm-up 8.45 BLEU vs about 34 with warm-up, pre-LN without warm-up about "
        "34 (IWSLT14 De-En, 6 layers, d=512, lr 5e-4); with a 500-step warm-up, 31.16 BLEU at lr 5e-4 vs 2.77 at "
        f"1e-3; here (lr {LR:g}, Xiong's init): post-LN at {deep} blocks ends at {loss('post', deep, True)} "
        f"nats/char with warm-up vs {loss('post', deep, False)} without, pre-LN at {loss('pre', deep, True)} vs "
        f"{loss('pre', deep, False)}; excess cost {ci_text(need)} nats; at {shallow} blocks post-LN's cost is "
        f"{cost('post', shallow)}; scale: a decoder-only character-level GPT, d=64, {STEPS['quick']} (quick) "
        f"or {STEPS['full']} (full) steps on CPU, loss instead of BLEU")
    return v


def plot(records, verdict, prefix):
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
    ax.set_title(f"Cost of dropping warm-up, lr {LR:g}, Adam (0.9, 0.98), no clipping")
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-cost.png"), bar_plot(records, prefix, "Final loss with and without warm-up")]


SPEC = experiment(
    claim="C21", title="Post-LN needs warm-up; pre-LN does not",
    statement="Post-LN transformers are hard to train at depth without a learning-rate warm-up; pre-LN "
              "transformers train stably without one.",
    setup=f"GPT in Xiong et al.'s setup (Xavier init, unit-variance block inputs, ReLU FFNs), d=64, at "
          f"{' and '.join(map(str, DEPTHS['quick']))} blocks for {STEPS['quick']} steps (quick) or "
          f"{', '.join(map(str, DEPTHS['full']))} blocks for {STEPS['full']} steps (full); Adam betas "
          f"(0.9, 0.98), no gradient clipping, lr {LR:g} constant after a linear warm-up over the first "
          "quarter of the steps, or without warm-up (at this lr post-LN with warm-up trains to within ~0.1-0.15 "
          "nats of pre-LN). A run that diverges counts with its initial loss. Warm-up cost = final loss without "
          "minus with warm-up, per seed (runs of a seed share data order: paired intervals); 4 seeds per mode. "
          f"Rule (all three must hold, 95% CIs): at the deepest stack post-LN's cost exceeds pre-LN's by "
          f"more than {MIN} nats (paired t); pre-LN's cost there is below {MIN} nats (t); and post-LN's "
          f"excess cost over pre-LN's is larger at the deepest than at the shallowest stack by more than "
          f"{MIN} nats (paired t).",
    grid=grid, seeds={"quick": 4, "full": 4}, run=lm_run, verdict=verdict, plot=plot,
    paper="Xiong et al. 2020, Figure 2/Table: post-LN with Adam and no warm-up reached 8.45 BLEU on IWSLT14 "
          "De-En against about 34 with warm-up; pre-LN without warm-up matched post-LN with it.",
)

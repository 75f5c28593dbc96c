"""C34: DyT and DeepNorm-scaled post-LN against pre-LN.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds.

Every arm sweeps the same learning rates; each arm's configuration (its lr, and DyT's alpha0) is chosen on
the selection seeds and the chosen configurations are compared on the other seeds only, so the noise of the
choice does not enter the judged difference."""

from __future__ import annotations

import math

from ..harness.lm import SIZES, complete_seeds, final_loss, lm_run, model_cfg, per_seed, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import choose_on_seeds, combine_verdicts, compare, fmt, mean, threshold


SEEDS = {"quick": 4, "full": 6}

SELECT = PerMode({"quick": 1, "full": 2})  # the first seeds choose each arm's configuration; the rest judge

LRS = PerMode({"quick": [1e-3, 3e-3, 1e-2], "full": [1e-3, 3e-3, 1e-2, 3e-2]})  # every arm, both parts

STEPS = PerMode({"quick": 200, "full": 300})  # the DyT part (C18 sizes, unit-variance embeddings)

ALPHA0 = [0.5, 2.0]  # DyT's initial alpha: Zhu et al.'s default, and a larger one for a small width

# DeepNorm where it claims to help: depth, no warm-up.  Thin blocks and a short context keep it cheap.
DEEP = PerMode({"quick": dict(n_layer=12, d_model=32, n_head=2, block_size=32, steps=250),
                "full": dict(n_layer=16, d_model=32, n_head=2, block_size=32, steps=500),
                "paper": dict(n_layer=48, d_model=128, n_head=4, block_size=128, steps=3000)})

DEEP_ARMS = {"pre-LN deep": "pre", "post-LN deep": "post", "DeepNorm deep": "deepnorm"}

TOLERANCE = 0.05  # nats: "as good as" allows this much; "trails" needs more than this


def _dyt_arms(mode) -> dict[str, list[str]]:
    lrs = LRS[mode]
    arms = {"pre-LN": [f"pre-LN lr{lr:g}" for lr in lrs]}
    arms["DyT"] = [f"DyT a{a:g} lr{lr:g}" for a in ALPHA0 for lr in lrs]
    return arms


def _deep_arms(mode) -> dict[str, list[str]]:
    return {arm: [f"{arm} lr{lr:g}" for lr in LRS[mode]] for arm in DEEP_ARMS}


def grid(mode):
    steps, lrs = STEPS[mode], LRS[mode]
    out = []
    for lr in lrs:
        train = train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, log_every=max(1, steps // 25))
        out.append((f"pre-LN lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="layernorm",
                                                            embed_scale=True), "train": train}))
        for a in ALPHA0:
            out.append((f"DyT a{a:g} lr{lr:g}", {"model": model_cfg(mode, placement="pre", norm="dyt",
                                                                   dyt_alpha0=a, embed_scale=True),
                                                 "train": train}))
    deep = dict(DEEP[mode])
    dsteps = deep.pop("steps")
    for label, placement in DEEP_ARMS.items():
        for lr in lrs:  # no warm-up: DeepNorm's claim is that post-LN then trains at depth
            out.append((f"{label} lr{lr:g}", {  # Xavier in every arm, as DeepNet's baselines (DeepNorm: x beta)
                "model": model_cfg(mode, placement=placement, norm="layernorm", init="xavier", **deep),
                "train": train_cfg(mode, steps=dsteps, lr=lr, warmup_steps=0, log_every=max(1, dsteps // 25))}))
    return out


def split_seeds(records, names, n_select: int) -> tuple[list[int], list[int]]:
    """Seeds with a record for every name in ``names``, split into (selection, judging): the lowest
    ``n_select`` seed numbers choose, the others judge.  Seeds are split by number, not by which are complete,
    so a missing run never moves a seed from one side to the other (``verdicts.selection_split`` splits the
    seeds it is given, which a missing run would shift)."""
    seeds = complete_seeds(records, names)
    return [s for s in seeds if s < n_select], [s for s in seeds if s >= n_select]


def choose(records, names, seeds) -> str | None:
    """The config of ``names`` with the lowest mean final loss over ``seeds`` (ties: the first listed); a
    diverged run counts as its initial loss (``final_loss``), so a config that diverged can still be chosen
    when every one did."""
    return choose_on_seeds(records, names, final_loss, seeds)


def _losses(records, name: str | None, seeds) -> list[float]:
    """Final losses of config ``name`` on ``seeds`` ([] when no config could be chosen)."""
    return [] if name is None else [final_loss(per_seed(records, name)[s]) for s in seeds]


def _diffs(records, a: str | None, b: str | None, seeds) -> list[float]:
    """Per judging seed: final loss of ``a`` - final loss of ``b`` ([] when a config could not be chosen)."""
    if a is None or b is None:
        return []
    return [x - y for x, y in zip(_losses(records, a, seeds), _losses(records, b, seeds))]


def _no_worse(diffs, what: str, base_label: str) -> Verdict:
    v = threshold(diffs, below=TOLERANCE, what=what)
    v.rule = (f"one-sided (non-inferiority): supported if the 95% CI of the paired difference on the judging seeds "
              f"lies wholly below +{TOLERANCE} nats (no worse than {base_label} by more than that); not "
              "supported if it lies wholly above; otherwise inconclusive")
    v.tests[-1]["rule"] = v.rule
    return v


def _mode_of(records) -> str:
    """The mode the records were made in (their own ``mode``; else full's when every full lr has records)."""
    modes = {r.get("mode") for r in records} - {None}
    if len(modes) == 1:
        return str(modes.pop())
    names = {r["name"] for r in records}
    return "full" if all(f"pre-LN deep lr{lr:g}" in names for lr in LRS["full"]) else "quick"


def verdict(records) -> Verdict:
    mode = _mode_of(records)
    n_select = SELECT[mode]
    dyt_arms, deep_arms = _dyt_arms(mode), _deep_arms(mode)
    chosen, judged = {}, {}
    for part, arms in (("dyt", dyt_arms), ("deep", deep_arms)):
        select, judge = split_seeds(records, [n for names in arms.values() for n in names], n_select)
        judged[part] = judge
        for arm, names in arms.items():
            chosen[arm] = choose(records, names, select)
    jd, jp = judged["dyt"], judged["deep"]
    v_dyt = _no_worse(_diffs(records, chosen["DyT"], chosen["pre-LN"], jd),
                      f"final loss, DyT ({chosen['DyT']}) - pre-LN ({chosen['pre-LN']}), each chosen on the "
                      f"selection seeds, paired by judging seed (nats)", "pre-LN")
    pair = [_losses(records, chosen[a], jp) for a in ("post-LN deep", "DeepNorm deep")]
    if not (pair[0] and pair[1]):
        pair = [[], []]
    post = compare(*pair, expect="greater", paired=True, min_effect=TOLERANCE,
                   what=f"final loss at depth without warm-up ({chosen['post-LN deep']} vs "
                        f"{chosen['DeepNorm deep']}), paired by judging seed (nats)",
                   label_a="post-LN", label_b="DeepNorm")
    v_deep = _no_worse(_diffs(records, chosen["DeepNorm deep"], chosen["pre-LN deep"], jp),
                       f"final loss at depth without warm-up, DeepNorm ({chosen['DeepNorm deep']}) - pre-LN "
                       f"({chosen['pre-LN deep']}), paired by judging seed (nats)", "pre-LN")
    v = combine_verdicts({"DyT vs pre-LN": v_dyt, "post-LN trails DeepNorm at depth": post,
                          "DeepNorm vs pre-LN at depth": v_deep})

    def loss(name, seeds):
        return mean(final_loss(per_seed(records, name)[s]) for s in seeds) if name else math.nan

    sweep = {n: loss(n, sorted(per_seed(records, n))) for arms in (dyt_arms, deep_arms)
             for names in arms.values() for n in names}
    v.summary += (f"; chosen on seeds < {n_select}, judged on {len(jd)} (DyT) / {len(jp)} (depth) other seeds; "
                  "mean final loss per config over all seeds: " + ", ".join(f"{n} {fmt(x)}" for n, x in sweep.items()))
    v.numbers["mean_final"] = sweep
    v.numbers["chosen"] = chosen
    v.numbers["judging_seeds"] = {"dyt": jd, "deep": jp}
    judged_loss = {arm: loss(chosen[arm], jd if arm in dyt_arms else jp) for arm in chosen}
    v.numbers["judged_mean_final"] = judged_loss
    v.key_number = (f"DyT {fmt(judged_loss['DyT'])} vs pre-LN {fmt(judged_loss['pre-LN'])}: {v_dyt.status}; at "
                    f"depth pre-LN {fmt(judged_loss['pre-LN deep'])}, post-LN {fmt(judged_loss['post-LN deep'])}, "
                    f"DeepNorm {fmt(judged_loss['DeepNorm deep'])}: post-LN trails {post.status}, DeepNorm as "
                    f"good as pre-LN {v_deep.status}")
    depth = DEEP[mode]
    v.versus_paper = (
        "paper: Zhu et al. 2025: DyT matches LayerNorm (ViT-B 82.3 -> 82.5% top-1; LLMs at their tuned alpha0); "
        "Wang et al. 2022: an 18L-18L post-LN does not converge (their Figure 2c), DeepNorm trains stably to 1000 "
        "layers; "
        f"here: DyT - pre-LN {v_dyt.key_number} nats; at {depth['n_layer']} blocks without warm-up post-LN - "
        f"DeepNorm {post.key_number.split('diff ')[-1]} nats, DeepNorm - pre-LN {v_deep.key_number} nats; scale: "
        f"character models of d={SIZES[mode]['d_model']} ({SIZES[mode]['n_layer']} blocks, DyT) and "
        f"d={depth['d_model']} (depth) trained {STEPS[mode]} / {depth['steps']} steps, lrs "
        f"{', '.join(f'{lr:g}' for lr in LRS[mode])} for every arm")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    mode = _mode_of(records)
    lrs = LRS[mode]
    chosen = verdict.numbers.get("chosen", {}) if verdict is not None else {}
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    panels = [(axes[0], [("pre-LN", "pre-LN", [f"pre-LN lr{lr:g}" for lr in lrs])]
               + [(f"DyT alpha0={a:g}", "DyT", [f"DyT a{a:g} lr{lr:g}" for lr in lrs]) for a in ALPHA0],
               f"DyT vs pre-LN ({SIZES[mode]['n_layer']} blocks)"),
              (axes[1], [(arm.replace(" deep", ""), arm, names) for arm, names in _deep_arms(mode).items()],
               f"{DEEP[mode]['n_layer']} blocks, no warm-up")]
    for ax, arms, title in panels:
        for i, (label, arm, names) in enumerate(arms):
            shift = 1 + 0.04 * (i - (len(arms) - 1) / 2)  # arms side by side at each lr
            for lr, name in zip(lrs, names):
                vals = [final_loss(r) for r in records if r["name"] == name]
                ax.scatter([lr * shift] * len(vals), vals, color=f"C{i}", s=12, alpha=0.6)
                if chosen.get(arm) == name:
                    ax.scatter([lr * shift], [mean(vals)], s=120, facecolors="none", edgecolors=f"C{i}")
            means = [mean(final_loss(r) for r in records if r["name"] == n) for n in names]
            ax.plot([lr * shift for lr in lrs], means, "_-", ms=14, color=f"C{i}", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (dots: seeds; lines: mean)")
    fig.suptitle("Each arm's lr sweep; rings: the config chosen on the selection seeds")
    return [save_fig(fig, prefix + "-sweeps.png")]


SPEC = experiment(
    claim="C34", title="DyT and DeepNorm-scaled post-LN against pre-LN",
    statement="Normalization-free transformers (Dynamic Tanh) train as well as pre-LN; at depth without "
              "warm-up post-LN fails or trails, and DeepNorm-scaled post-LN trains as well as pre-LN.",
    setup=f"Every arm sweeps the same lrs ({', '.join(f'{lr:g}' for lr in LRS['quick'])} quick; "
          f"{', '.join(f'{lr:g}' for lr in LRS['full'])} full), cosine decay to 0.1 lr. Each arm's configuration "
          f"(lr; for DyT also alpha0 in {', '.join(f'{a:g}' for a in ALPHA0)}) is the one with the lowest mean "
          f"final validation loss on the selection seeds (the first {SELECT['quick']} quick, {SELECT['full']} "
          f"full, of {SEEDS['quick']} / {SEEDS['full']}); the chosen configs are compared on the other seeds "
          f"only, paired by seed. DyT part: the C18 GPT with unit-variance embeddings (as Zhu et al.'s inputs) in "
          f"both arms, {STEPS['quick']} steps quick / {STEPS['full']} full, 10% warm-up; supported if the 95% CI "
          f"of DyT - pre-LN lies wholly below +{TOLERANCE} nats. Depth part, where DeepNorm claims to help: "
          f"{DEEP['quick']['n_layer']} blocks quick / {DEEP['full']['n_layer']} full, thin (d="
          f"{DEEP['full']['d_model']}, context {DEEP['full']['block_size']}), no warm-up, "
          f"{DEEP['quick']['steps']} / {DEEP['full']['steps']} steps: pre-LN, post-LN and DeepNorm post-LN "
          "(residual x (2N)^1/4, beta-scaled Xavier init), all three Xavier-initialized as DeepNet's baselines (the "
          "GPT-2 init's 1/sqrt(2N) residual scaling would give pre- and post-LN a depth-aware init of their own, "
          "and its std 0.02 is far below Xavier's at d=32). Two judged parts: post-LN trails DeepNorm (95% CI of "
          f"post-LN - DeepNorm wholly above +{TOLERANCE}), and DeepNorm is no worse than pre-LN (CI wholly below "
          f"+{TOLERANCE}). The claim needs all three parts. Quick mode is weaker: 12 blocks, three lrs (no "
          "3e-2), one selection seed and three judging seeds; its depth runs still improve slowly at their end.",
    grid=grid, seeds=SEEDS, run=lm_run, verdict=verdict, plot=plot,
    paper="Zhu et al. 2025 (DyT): matches LayerNorm models across tasks (ViT-B 82.3 -> 82.5); Wang et al. 2022 "
          "(DeepNet), Figure 2(c) (read second-hand): an 18L-18L post-LN does not converge on IWSLT-14 De-En where "
          "a down-scaled init does; DeepNorm trains stably up to 1000 layers.",
)

"""C27: Mixing pre-LN and post-LN blocks is a bug source.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import bar_plot, final_loss, lm_run, model_cfg, train_for
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, ci_text, combine_verdicts, compare, paired_by_seed


DEPTH = PerMode({"quick": 4, "full": 6})

STEPS = PerMode({"quick": 150, "full": 300})

SEEDS = PerMode({"quick": 4, "full": 4})

MIN = 0.01  # nats: the smallest loss penalty that counts


def grid(mode):
    n = DEPTH[mode]
    mixed = ["pre", "post"] * (n // 2)
    return [(name, {"model": model_cfg(mode, n_layer=n, placement=p, init="xavier"),
                    "train": train_for(mode, STEPS[mode], lr=2e-3, betas=[0.9, 0.98])})
            for name, p in (("all pre", "pre"), ("all post", "post"), ("mixed pre/post", mixed))]


def verdict(records) -> Verdict:
    """Mixed is worse than the better pure model: worse than each of them, judged on the same seeds.

    No pure model is picked first (picking the better one by its mean on the judging seeds would let their noise
    choose the comparator): each comparison is a part, and the claim needs both.
    """
    g = by_name(records)
    parts = {}
    for label in ("all pre", "all post"):
        mixed, pure = paired_by_seed(g.get("mixed pre/post", []), g.get(label, []), final_loss)
        parts[f"worse than {label}"] = compare(mixed, pure, expect="greater", what="final validation loss (nats/char)",
                                               label_a="mixed pre/post", label_b=label, min_effect=MIN, paired=True)
    v = combine_verdicts(parts)
    v.key_number = "; ".join(f"mixed - {label}: {ci_text(parts['worse than ' + label])} nats"
                             for label in ("all pre", "all post"))
    return v


SPEC = experiment(
    claim="C27", title="Mixing pre-LN and post-LN blocks is a bug source",
    statement="A model that mixes pre-LN and post-LN blocks trains worse than a consistent one.",
    setup=f"GPT with Xavier init ({DEPTH['quick']} blocks, {STEPS['quick']} steps quick; "
          f"{DEPTH['full']} blocks, {STEPS['full']} steps full) alternating pre and post blocks, against "
          "all-pre and all-post, lr 2e-3 with warm-up and cosine decay, Adam betas (0.9, 0.98), same budget; "
          f"{SEEDS['quick']} seeds quick, {SEEDS['full']} full, the three arms of a seed share init seed "
          "and data order. Rule: mixed must be worse than the better pure model, i.e. than each of them (no "
          "model is picked on the seeds that judge): the 95% paired t interval of mixed minus each pure "
          f"model's final validation loss lies wholly above {MIN:g} nats; either wholly below: not supported "
          "(Holm-corrected over the two); otherwise inconclusive.",
    grid=grid, seeds=SEEDS, run=lm_run, verdict=verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Pure vs mixed placements")],
)

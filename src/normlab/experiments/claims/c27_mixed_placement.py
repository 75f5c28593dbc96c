"""C27: Mixing pre-LN and post-LN blocks is a bug source.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.lm import bar_plot, final_loss, final_losses, lm_run, model_cfg, train_for
from ..spec import PerMode, Verdict, experiment
from ..stats import interval
from ..verdicts import by_name, compare, mean, paired_by_seed


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
    g = by_name(records)
    pre, post = list(final_losses(records, "all pre").values()), list(final_losses(records, "all post").values())
    label = "all pre" if mean(pre) <= mean(post) else "all post"  # the better pure model, by mean
    mixed, better = paired_by_seed(g.get("mixed pre/post", []), g.get(label, []), final_loss)
    v = compare(mixed, better, expect="greater", what="final validation loss (nats/char)",
                label_a="mixed pre/post", label_b=f"the better pure model ({label})", min_effect=MIN, paired=True)
    other = "all post" if label == "all pre" else "all pre"
    vs_other = interval(f"mixed pre/post - {other} (not judged)", *paired_by_seed(
        g.get("mixed pre/post", []), g.get(other, []), final_loss), paired=True)
    v.summary += f"; against the other pure model: {vs_other.text()}"
    v.numbers["versus_other_pure"] = vs_other.to_dict()
    return v


SPEC = experiment(
    claim="C27", title="Mixing pre-LN and post-LN blocks is a bug source",
    statement="A model that mixes pre-LN and post-LN blocks trains worse than a consistent one.",
    setup=f"GPT with Xavier init ({DEPTH['quick']} blocks, {STEPS['quick']} steps quick; "
          f"{DEPTH['full']} blocks, {STEPS['full']} steps full) alternating pre and post blocks, against "
          "all-pre and all-post, lr 2e-3 with warm-up and cosine decay, Adam betas (0.9, 0.98), same budget; "
          f"{SEEDS['quick']} seeds quick, {SEEDS['full']} full, the three arms of a seed share init seed "
          "and data order. Rule: the better pure model is the one with the lower mean final loss; the 95% paired "
          f"t interval of mixed minus that model's final validation loss lies wholly above {MIN:g} nats; "
          "wholly below: not supported; otherwise inconclusive.",
    grid=grid, seeds=SEEDS, run=lm_run, verdict=verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Pure vs mixed placements")],
)

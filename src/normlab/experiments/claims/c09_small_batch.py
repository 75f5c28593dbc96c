"""C09: BatchNorm degrades at small batches; GroupNorm and LayerNorm hold.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.cnn import cnn_run, final_value, model_cfg, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import combine_verdicts, compare, fmt, mean


# One worker whose batch is the per-worker batch, so GN's and LN's batches change too (Wu & He's setup, on one
# worker); every batch size sees the same samples (Wu & He keep the epochs), so a batch of b takes 32/b times the
# steps of a batch of 32, and the lr follows AdamW's square-root rule, lr(b) = LR * sqrt(b / 32) (Wu & He scale
# SGD's lr linearly).  STEPS32 steps at 32 (4 epochs of the 4000 signals) bring GN within a few points of BN.
SIZES = PerMode({"quick": dict(batches=[32, 8], norms=("batchnorm", "groupnorm")),  # b=2 (16x the steps): full only
               "full": dict(batches=[32, 8, 2], norms=("batchnorm", "groupnorm", "layernorm")),
               "paper": dict(batches=[32, 16, 8, 4, 2], norms=("batchnorm", "groupnorm", "layernorm"))})  # Wu & He

STEPS32 = PerMode({"quick": 500, "full": 500, "paper": 1000})

WIDTHS = [16, 32]  # both modes: the full widths would cost 1.5x per step, on top of 16x the steps at b=2

LR = 0.02

MIN_EFFECT = 0.02  # BN must lose at least 2 accuracy points more than GN (LN)


def grid(mode):
    runs = []
    for norm in SIZES[mode]["norms"]:
        for b in SIZES[mode]["batches"]:
            steps = STEPS32[mode] * 32 // b
            train = train_cfg(mode, steps=steps, lr=LR * math.sqrt(b / 32), grad_clip=None,
                              log_every=max(1, steps // 50))
            model = model_cfg(mode, norm=norm, widths=WIDTHS)  # VGG-like: GN(32) 0.94 vs BN 0.96
            runs.append((f"{norm} per-worker {b}", {"model": model, "norm": norm,
                                                    "per_worker": b, "batch": b, "train": train}))
    return runs


def _acc_by(records, norm) -> dict[int, dict[int, float]]:
    """per-worker batch -> seed -> test accuracy (0 if the run diverged)."""
    out: dict[int, dict[int, float]] = {}
    for r in records:
        if r["config"]["norm"] == norm:
            acc = final_value(r, "test_acc")
            out.setdefault(r["config"]["per_worker"], {})[r["seed"]] = 0.0 if math.isnan(acc) else acc
    return out


WU_HE = {"batchnorm": {32: 23.6, 4: 27.3, 2: 34.7}, "groupnorm": {32: 24.1, 4: 24.2, 2: 24.1}}  # top-1 error, %


def _drops(records, norm) -> tuple[list[float], list[float]]:
    """Per seed (aligned on BN's seeds): accuracy at the largest per-worker batch minus at the smallest."""
    acc, ref = _acc_by(records, norm), _acc_by(records, "batchnorm")
    if not acc or not ref:
        return [], []
    seeds = sorted(set(acc[max(acc)]) & set(acc[min(acc)]) & set(ref[max(ref)]) & set(ref[min(ref)]))
    return ([ref[max(ref)][s] - ref[min(ref)][s] for s in seeds], [acc[max(acc)][s] - acc[min(acc)][s] for s in seeds])


def _gaps_by_batch(records, other: str) -> dict[int, dict]:
    """Per per-worker batch: the paired interval of BN's accuracy minus ``other``'s (negative: BN below)."""
    from ..stats import interval

    bn, ot = _acc_by(records, "batchnorm"), _acc_by(records, other)
    out = {}
    for b in sorted(set(bn) & set(ot), reverse=True):
        seeds = sorted(set(bn[b]) & set(ot[b]))
        out[b] = interval(f"accuracy BN - {other} at {b}", [bn[b][s] for s in seeds], [ot[b][s] for s in seeds],
                          paired=True).to_dict()
    return out


def verdict(records) -> Verdict:
    others = [n for n in ("groupnorm", "layernorm") if any(r["config"]["norm"] == n for r in records)]
    parts = {}
    for other in others or ["groupnorm"]:
        bn, ot = _drops(records, other)
        parts[f"BN vs {other}"] = compare(
            bn, ot, expect="greater", paired=True, min_effect=MIN_EFFECT,
            what="accuracy drop from the largest to the smallest per-worker batch", label_a="BatchNorm",
            label_b=other)
    v = combine_verdicts(parts) if len(parts) > 1 else next(iter(parts.values()))
    crossing = []
    for other in others:
        gaps = _gaps_by_batch(records, other)
        below = [b for b, t in gaps.items() if t["hi"] < 0]
        crossing.append(f"BN - {other} accuracy by per-worker batch (paired 95% CI): "
                        + ", ".join(f"{b}: {fmt(t['estimate'])} [{fmt(t['lo'])}, {fmt(t['hi'])}]"
                                    for b, t in gaps.items())
                        + (f" (BN below {other} at {', '.join(map(str, below))})" if below else
                           f" (BN never wholly below {other})"))
    v.summary += "; " + "; ".join(crossing)
    v.rule = ("one worker whose batch is the per-worker batch (AdamW lr scaled with its square root, the same "
              "samples seen at every batch); the drop is accuracy at the largest per-worker batch minus at the smallest, per "
              "seed; " + v.rule)
    err = {n: {b: 100 * (1 - mean(a.values())) for b, a in _acc_by(records, n).items()} for n in ("batchnorm",
                                                                                                   "groupnorm")}
    if err["batchnorm"] and err["groupnorm"]:
        here = "; ".join(f"{n} " + ", ".join(f"{fmt(e[b], 3)}% at {b}" for b in sorted(e, reverse=True))
                         for n, e in (("BN", err["batchnorm"]), ("GN", err["groupnorm"])))
        v.versus_paper = ("paper: ResNet-50 on ImageNet, 8 workers, lr 0.1 x per-worker batch / 32: top-1 error BN "
                          "23.6% at 32 images per worker, 27.3% at 4, 34.7% at 2 (+11.1 points); GN 24.1%, 24.2%, "
                          f"24.1% (flat); here (test error): {here}; scale: a small 1-D CNN on MNIST-1D (4000 "
                          "training signals), one worker, a few epochs instead of 100")
        bn, gn = _drops(records, "groupnorm")
        v.key_number = (f"drop 32->{min(err['batchnorm'])}: BN {fmt(mean(bn))} vs GN {fmt(mean(gn))}; "
                        f"diff {fmt(v.tests[0]['estimate'])} [{fmt(v.tests[0]['lo'])}, {fmt(v.tests[0]['hi'])}]")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    norms = [n for n in ("batchnorm", "groupnorm", "layernorm") if any(r["config"]["norm"] == n for r in records)]
    for i, norm in enumerate(norms):
        acc = _acc_by(records, norm)
        bs = sorted(acc, reverse=True)
        err = [[100 * (1 - a) for a in acc[b].values()] for b in bs]
        ax.plot(bs, [mean(e) for e in err], marker="o", color=f"C{i}", label=f"{norm} (here)")
        for b, e in zip(bs, err):
            ax.scatter([b] * len(e), e, color=f"C{i}", s=8, alpha=0.5)
    paper = ax.twinx()
    for i, norm in enumerate(n for n in norms if n in WU_HE):
        bs = sorted(WU_HE[norm], reverse=True)
        paper.plot(bs, [WU_HE[norm][b] for b in bs], ls="--", marker="x", color=f"C{i}", alpha=0.6,
                   label=f"{norm} (Wu & He, right axis)")
    paper.set_ylabel("Wu & He ResNet-50 ImageNet top-1 error (%)", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([32, 16, 8, 4, 2], ["32", "16", "8", "4", "2"])
    ax.invert_xaxis()
    ax.set_xlabel("per-worker batch (= the optimizer's batch; same samples seen at every size)")
    ax.set_ylabel("test error here (%)")
    ax.set_title("Error vs per-worker batch (dots: seeds; dashed: Wu & He 2018)", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    paper.legend(fontsize=7, loc="upper center")
    return [save_fig(fig, prefix + "-batch.png")]


SPEC = experiment(
    claim="C09", title="BatchNorm degrades at small batches; GroupNorm and LayerNorm hold",
    statement="Accuracy with BatchNorm falls as the batch its statistics see shrinks (below ~16-32), while "
              "GroupNorm and LayerNorm stay put.",
    setup="VGG-like 1-D CNN on MNIST-1D (3 conv units, widths 16/32, in both modes), one worker whose batch is the "
          "per-worker batch, so BN's, GN's and LN's batches all change: per-worker "
          f"{'/'.join(map(str, SIZES['quick']['batches']))} (quick: BN, GN) or "
          f"{'/'.join(map(str, SIZES['full']['batches']))} (full: BN, GN, LN); every size sees the same samples "
          f"({STEPS32['quick']} steps at 32, 4 epochs; 32/b times as many at b), AdamW with lr "
          f"{LR:g} x sqrt(b/32) (Adam's square-root rule; Wu & He scaled SGD's linearly), 10% warm-up + "
          "cosine, no clipping; seeds: quick 3, full 4; test accuracy in eval mode. Judged: per seed, accuracy at "
          "32 minus at the smallest batch, BN's minus GN's (and LN's in full), paired by seed, above "
          f"{MIN_EFFECT}; the per-size BN - GN differences (paired CIs) show where BN crosses below.",
    grid=grid, seeds={"quick": 3, "full": 4}, run=cnn_run, verdict=verdict, plot=plot,
    quick_differs="quick stops at a per-worker batch of 8 and leaves LayerNorm out: the batch of 2, where Wu & He "
                  "see BN's largest loss, is full mode's",
    paper="Wu & He 2018, Figure 1 (ResNet-50, ImageNet, 8 workers): BN 23.6% error at 32 images/worker vs 34.7% "
          "at 2; GN 24.1% at both.",
)

"""C35: BatchNorm's small-batch remedies: Batch Renorm, Ghost BN, GroupNorm + WS, FRN.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.cnn import bars, cnn_run, model_cfg, train_cfg
from ..spec import Verdict, experiment
from ..stats import combine
from ..verdicts import by_name, combine_verdicts, compare, fmt, mean, threshold


def _acc(r: dict) -> float:
    """Final test accuracy of a training record (0 if the run diverged: it lost everything)."""
    res = r["result"]
    if res.get("status", "ok") != "ok":
        return 0.0
    return res["final"].get("test_acc", math.nan) if "final" in res else res.get("test_acc", math.nan)


#: per mode: the small per-process batches, steps at every size (the optimizer's batch is 32 throughout), seeds
SIZES = {"quick": dict(per_process=[2], steps=300), "full": dict(per_process=[2, 4], steps=500)}

WIDTHS = [16, 32]  # both modes: per-process simulation runs 32/b forwards a step

RENORM = dict(norm_momentum=0.01, renorm_rmax=3.0, renorm_dmax=5.0)  # Keras's renorm_momentum 0.99

RENORM_WARMUP = 0.25  # the limits relax over the first quarter of training

MIN_LOSS = 0.02  # BN must lose at least 2 accuracy points at the small batch for there to be something to recover


def _model(mode: str, **overrides) -> dict:
    return model_cfg(mode, arch="resnet", widths=WIDTHS, **overrides)


def grid(mode):
    s = SIZES[mode]
    steps = s["steps"]
    train = train_cfg(mode, steps=steps)
    runs = [("BN at 32", {"model": _model(mode, norm="batchnorm"), "norm": "batchnorm", "batch": 32,
                          "train": train}),
            ("GN+WS", {"model": _model(mode, norm="gn+ws"), "norm": "gn+ws", "batch": 32, "train": train}),
            ("FRN", {"model": _model(mode, norm="frn"), "norm": "frn", "batch": 32, "train": train})]
    for b in s["per_process"]:
        calls = steps * 32 // b  # forward calls in training: the per-process simulation runs 32 / b a step
        runs += [
            (f"BN at {b}", {"model": _model(mode, norm="batchnorm"), "norm": "batchnorm", "batch": 32,
                            "ghost_batch": b, "per_process": b, "train": train}),
            (f"Batch Renorm at {b}", {"model": _model(mode, norm="batchrenorm", **RENORM,
                                                          renorm_warmup_steps=int(calls * RENORM_WARMUP)),
                                      "norm": "batchrenorm", "batch": 32, "ghost_batch": b, "per_process": b,
                                      "train": train}),
            (f"Ghost BN over {b}", {"model": _model(mode, norm="ghostbn", virtual_batch_size=b), "norm": "ghostbn",
                                    "batch": 32, "per_process": b, "train": train}),
        ]
    return runs


#: remedy label -> the run name at per-process batch b (the batch-free ones do not depend on b: one run serves all)
REMEDIES = {"Batch Renorm": "Batch Renorm at {b}", "Ghost BN": "Ghost BN over {b}", "GN+WS": "GN+WS",
                "FRN": "FRN"}

WU_HE_4 = {"BN at 32": 23.6, "BN at 4": 27.3, "Batch Renorm at 4": 26.3, "GN at 4": 24.2}  # top-1 error, %


def _sizes(records) -> list[int]:
    return sorted({r["config"]["per_process"] for r in records if "per_process" in r["config"]})


def verdict(records) -> Verdict:
    g = by_name(records)
    sizes = _sizes(records) or [2]
    parts: dict[str, Verdict] = {}
    premises: dict[int, Verdict] = {}
    fractions = []
    bn32 = {r["seed"]: _acc(r) for r in g.get("BN at 32", [])}
    for b in sizes:
        bnb = {r["seed"]: _acc(r) for r in g.get(f"BN at {b}", [])}
        ref = {s: (bn32[s], bnb[s]) for s in sorted(set(bn32) & set(bnb))}
        premises[b] = compare([a for a, _ in ref.values()], [c for _, c in ref.values()], expect="greater",
                              paired=True, min_effect=MIN_LOSS, what=f"test accuracy, per-process batch {b}",
                              label_a="BN at 32", label_b=f"BN at {b}")
        for label, pattern in REMEDIES.items():
            arm = {r["seed"]: _acc(r) for r in g.get(pattern.format(b=b), [])}
            seeds = sorted(set(arm) & set(ref))
            # above the midpoint between BN at b and BN at 32: more than half of BN's loss recovered
            margins = [arm[s] - (ref[s][0] + ref[s][1]) / 2 for s in seeds]
            v = threshold(margins, above=0.0, what=f"{label} at {b} minus the midpoint of BN at {b} and BN at 32")
            loss = mean(ref[s][0] - ref[s][1] for s in seeds)
            frac = mean(arm[s] - ref[s][1] for s in seeds) / loss if seeds and loss > 0 else math.nan
            fractions.append(f"{label} at {b}: {fmt(mean(arm[s] for s in seeds))} ({fmt(frac, 2)} of the loss)")
            v.numbers["recovered_fraction"] = frac
            parts[f"{label} at {b}"] = v
    v = combine_verdicts(parts)
    # per size: its remedies count where BN lost accuracy there; a size where BN lost none has nothing to recover
    # (left out), one where the loss is undecided is undecided
    by_size = {}
    for b, p in premises.items():
        mine = [part.status for k, part in parts.items() if k.endswith(f" at {b}")]
        by_size[b] = {"supported": combine(mine), "inconclusive": "inconclusive"}.get(p.status)
    judged = [st for st in by_size.values() if st is not None]
    v.status = combine(judged) if judged else "inconclusive"
    v.tests = [t for p in premises.values() for t in p.tests] + v.tests
    losses = "; ".join(f"BN at 32 - BN at {b}: {p.key_number} ({p.status})" for b, p in premises.items())
    notes = [f"at {b}: BN lost less than {MIN_LOSS}, nothing to recover (left out)" for b, st in by_size.items()
             if st is None] + [f"at {b}: BN's loss is undecided" for b, p in premises.items()
                               if p.status == "inconclusive"]
    v.summary = (f"BN's loss {losses}" + (f" [{'; '.join(notes)}]" if notes else "") + "; " + v.summary
                 + "; accuracy of each remedy and the fraction of BN's loss it recovered: " + "; ".join(fractions))
    v.rule = (f"the premise, per per-process batch b: BN at 32 - BN at b (paired t interval by seed) above "
              f"{MIN_LOSS}; a size where it is not supported has no loss to recover and is left out, one where "
              "it is inconclusive is inconclusive; at a size where it holds, per remedy, the per-seed accuracy minus "
              "the midpoint of BN at b and BN at 32 (t interval): supported if wholly above 0 (more than half of "
              "BN's loss recovered), not supported if wholly below; every remedy at every judged size must be "
              "supported, one not supported refutes the claim (no judged size: inconclusive). " + v.rule)
    v.key_number = "; ".join(f"{k}: {fmt(p.numbers['recovered_fraction'], 2)} of BN's loss" for k, p in parts.items())
    v.versus_paper = ("paper: Wu & He 2018, ResNet-50 on ImageNet, top-1 error at 4 images per GPU: BN 27.3%, Batch "
                      "Renorm 26.3%, GN 24.2% (BN at 32: 23.6%): Batch Renorm recovers 27% of BN's loss, GN about "
                      f"all of it; here: {'; '.join(fractions)}; scale: a small residual 1-D CNN on MNIST-1D, a few "
                      "hundred steps, the per-process batches simulated in one process")
    return v


def plot(records, verdict, prefix):
    g = by_name(records)
    order = ["BN at 32"] + [n for b in _sizes(records) for n in
                            (f"BN at {b}", f"Batch Renorm at {b}", f"Ghost BN over {b}")] + ["GN+WS", "FRN"]
    return [bars({n: [_acc(r) for r in g[n]] for n in order if g.get(n)}, prefix + "-acc.png",
                 "Test accuracy at small per-process batches (optimizer batch 32)", "test accuracy")]


SPEC = experiment(
    claim="C35", title="BatchNorm's small-batch remedies: Batch Renorm, Ghost BN, GroupNorm + WS, FRN",
    statement="At small per-process batches (2-4), Batch Renormalization, Ghost BatchNorm over the same small "
              "batch, GroupNorm with Weight Standardization and Filter Response Normalization recover most of the "
              "accuracy BatchNorm loses (against BatchNorm at 32).",
    setup="Residual 1-D CNN (stem + 2 blocks, widths 16/32, both modes) on MNIST-1D, AdamW lr 3e-3, 10% warm-up + "
          f"cosine, {SIZES['quick']['steps']} (quick) / {SIZES['full']['steps']} (full) steps of 32 signals, test "
          "accuracy in eval mode; seeds: quick 4, full 5. The per-process batch b (quick 2; full 2 and 4) is "
          "simulated as the suite's SyncBN claim does: the model runs on chunks of b signals (BatchNorm sees b, "
          "running statistics updated by each chunk), the gradient step uses all 32. Arms: BN at 32; at b: BN, "
          "Batch Renorm (rmax 3, dmax 5 relaxed from (1, 0) over the first quarter of the forward calls, running "
          "momentum 0.01 as Keras's renorm_momentum 0.99), Ghost BN with virtual batch b on the whole batch (one "
          "forward, one pooled running update per step); GroupNorm (4 groups) after weight-standardized convs and "
          "FRN + TLU, which do not depend on the batch, once. Judged per remedy and b: accuracy minus the midpoint "
          "of BN at b and BN at 32, per seed, by a 95% t interval (above 0: more than half of BN's loss "
          f"recovered); the premise, BN at 32 - BN at b above {MIN_LOSS} (paired by seed), must hold.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=cnn_run, verdict=verdict,
    plot=plot,
    paper="Wu & He 2018, Table/Figure on batch size (ResNet-50, ImageNet): at 4 images per GPU BN 27.3%, Batch "
          "Renorm 26.3%, GN 24.2% top-1 error, against BN's 23.6% at 32; Ioffe 2017: Batch Renorm helps at small "
          "or non-i.i.d. minibatches; Singh & Krishnan 2019 and Qiao et al. 2019: FRN and WS + GN match BN "
          "without its batch dependence.",
)

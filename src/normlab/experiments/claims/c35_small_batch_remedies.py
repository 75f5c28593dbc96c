"""C35: BatchNorm's small-batch remedies: Batch Renorm, GroupNorm + WS, FRN, each at its own learning rate.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.chunked_renorm import chunk_renorms
from ..harness.cnn import bars, build_net, model_cfg, summary, train_cfg, train_net
from ..harness.plain_stem import plain_stem_net
from ..spec import PerMode, Verdict, experiment
from ..stats import combine, interval, judge_direction, judge_threshold, p_beyond
from ..verdicts import (by_name, choose_on_seeds, combine_verdicts, compare, fmt, holm_parts, mean,
                        selection_split)


def _acc(r: dict) -> float:
    """Final test accuracy of a training record (0 if the run diverged: it lost everything)."""
    res = r["result"]
    if res.get("status", "ok") != "ok":
        return 0.0
    return res["final"].get("test_acc", math.nan) if "final" in res else res.get("test_acc", math.nan)


#: per mode: the small per-process batches, the steps (the optimizer's batch is 32 throughout), the learning rates
#: every arm is tried at, and how many of the seeds choose each arm's learning rate (the others judge)
SIZES = PerMode({"quick": dict(per_process=[2], steps=200, lrs=[3e-3, 1e-2, 3e-2], select=1),
                 "full": dict(per_process=[2, 4], steps=800, lrs=[1e-3, 3e-3, 1e-2, 3e-2], select=2)})

WIDTHS = [16, 32]  # both modes

#: Batch Renorm as Wu & He ran it (rmax 1.5, dmax 0.5), reached by Ioffe's ramp from (1, 0); running momentum
#: 0.01 as Keras's renorm_momentum 0.99 (the statistics r and d correct toward must be steady)
RENORM = dict(norm_momentum=0.01, renorm_rmax=1.5, renorm_dmax=0.5)

RENORM_WARMUP = 0.25  # the limits relax from (1, 0) over the first quarter of training's steps

MIN_LOSS = 0.02  # BN must lose at least 2 accuracy points at the small batch for there to be something to recover

MIN_SHARE = 0.2  # "recovers part": at least a fifth of BN's loss (Wu & He's Batch Renorm: about 0.27 at 4/GPU)

#: the arms at every per-process batch b, and the batch-free ones (they do not depend on b: one run serves all)
SMALL_ARMS = ("BN at {b}", "Batch Renorm at {b}")
REMEDIES = {"Batch Renorm": "Batch Renorm at {b}", "GN+WS": "GN+WS", "FRN": "FRN"}


def _model(**overrides) -> dict:
    return model_cfg("quick", arch="resnet", widths=WIDTHS, **overrides)


def _arms(mode: str) -> list[tuple[str, dict]]:
    """(arm, config without a learning rate): BN at 32, BN and Batch Renorm at each b, GN+WS and FRN."""
    s = SIZES[mode]
    arms: list[tuple[str, dict]] = [
        ("BN at 32", {"model": _model(norm="batchnorm"), "norm": "batchnorm"}),
        ("GN+WS", {"model": _model(norm="gn+ws"), "norm": "gn+ws", "ws_stem": False}),
        ("FRN", {"model": _model(norm="frn"), "norm": "frn"})]
    for b in s["per_process"]:
        arms += [
            # BN on processes of b: each chunk of b normalized with its own statistics, exactly as BatchNorm on b,
            # rank 0's running statistics (ChunkedBatchRenorm with r = 1, d = 0: BatchNorm; one forward)
            (f"BN at {b}", {"model": _model(norm="batchrenorm", renorm_rmax=1.0, renorm_dmax=0.0,
                                            renorm_warmup_steps=0),
                            "norm": "batchnorm", "renorm_chunk": b, "per_process": b}),
            # Batch Renorm on processes of b: each chunk normalized, and corrected by r and d, as BatchRenorm on b
            # (ChunkedBatchRenorm, one forward; rank 0's running statistics; the ramp counts steps)
            (f"Batch Renorm at {b}", {"model": _model(norm="batchrenorm", **RENORM,
                                                      renorm_warmup_steps=int(s["steps"] * RENORM_WARMUP)),
                                      "norm": "batchrenorm", "renorm_chunk": b, "per_process": b}),
        ]
    return arms


def run_name(arm: str, lr: float) -> str:
    return f"{arm}, lr {lr:g}"


def grid(mode):
    s = SIZES[mode]
    # BN at 32 is also evaluated at three quarters of training: its gain over the last quarter shows the plateau
    return [(run_name(arm, lr), {**cfg, "arm": arm, "batch": 32, "train": train_cfg(
                mode, steps=s["steps"], lr=lr, eval_every=s["steps"] // 4 if arm == "BN at 32" else 0)})
            for arm, cfg in _arms(mode) for lr in s["lrs"]]


def run(config: dict, seed: int) -> dict:
    """Train one arm: GN+WS with a plain stem conv (``ws_stem`` false), Batch Renorm per chunk of b."""
    import torch

    torch.manual_seed(seed)
    net = build_net(config["model"]) if config.get("ws_stem", True) else plain_stem_net(config["model"])
    if config.get("renorm_chunk"):
        chunk_renorms(net, config["renorm_chunk"])
    return summary(train_net(config, seed, net=net)[2])


def _sizes(records) -> list[int]:
    return sorted({r["config"]["per_process"] for r in records if "per_process" in r["config"]})


def _select(records) -> int:
    """How many seeds choose the learning rates: the records' mode's number (quick's without a mode)."""
    mode = next((r["config"].get("mode") for r in records if r["config"].get("mode")), "quick")
    return SIZES[mode]["select"]


def chosen(records, select: int) -> tuple[dict[str, str], list[int], list[int]]:
    """Each arm's run (its learning rate) chosen by mean test accuracy on the selection seeds; the seeds
    split as (selection, judging)."""
    seeds = sorted({r["seed"] for r in records})
    if len(seeds) <= select:
        return {}, seeds, []
    sel, judge = selection_split(seeds, select)
    arms: dict[str, list[str]] = {}
    for r in records:
        names = arms.setdefault(r["config"].get("arm", r["name"]), [])
        if r["name"] not in names:
            names.append(r["name"])
    pick = {arm: choose_on_seeds(records, names, _acc, sel, lower_is_better=False) for arm, names in arms.items()}
    return {a: n for a, n in pick.items() if n is not None}, sel, judge


def recovered(arm, small, big, *, what: str) -> Verdict:
    """Judge "``arm`` recovers at least MIN_SHARE of what BN loses between ``big`` (BN at 32) and ``small``
    (BN at b)", per seed (paired).

    The share is a ratio; it is judged through the linear per-seed quantity
    arm - small - MIN_SHARE * (big - small), whose t interval lies above 0
    exactly when the data put the share above MIN_SHARE (a Fieller-type
    test, no division by a noisy loss).  Supported: wholly above 0; below the
    bar: wholly below 0 while arm - small lies wholly above 0 (it recovers
    something, less than claimed); not supported: wholly below 0 otherwise;
    else inconclusive.
    """
    lin = [a - s - MIN_SHARE * (b - s) for a, s, b in zip(arm, small, big)]
    iv = interval(f"{what}: remedy - BN at b - {MIN_SHARE:g} x (BN at 32 - BN at b)", lin)
    some = interval(f"{what}: remedy - BN at b", arm, small, paired=True)
    status = judge_threshold(iv.lo, iv.hi, above=0.0)
    if status == "not supported" and judge_direction(some.lo, some.hi, expect="greater") == "supported":
        status = "below the bar"
    iv.status = status
    iv.p_against = p_beyond(iv, 0.0, "below")
    iv.rule = (f"supported if the 95% t interval (paired by seed) of remedy - BN at b - {MIN_SHARE:g} x (BN at 32 - "
               f"BN at b) lies wholly above 0 (more than {MIN_SHARE:g} of BN's loss recovered); below the bar if it "
               "lies wholly below 0 while remedy - BN at b lies wholly above 0; not supported if wholly below 0 "
               "otherwise; else inconclusive")
    loss = mean(b - s for s, b in zip(small, big))
    share = mean(a - s for a, s in zip(arm, small)) / loss if arm and loss > 0 else math.nan
    summary = (f"{what}: {fmt(mean(arm))} vs BN at b {fmt(mean(small))} and BN at 32 {fmt(mean(big))}; share of BN's "
               f"loss recovered {fmt(share, 2)}; remedy - BN at b {some.text()}; judged quantity {iv.text()}")
    return Verdict(status, summary, iv.rule, {"share": share, "gain": [some.lo, some.estimate, some.hi],
                                              "ci": [iv.lo, iv.hi]},
                   key_number=f"share {fmt(share, 2)}", tests=[iv.to_dict()])


def _plateau(records, name: str | None, seeds) -> float:
    """BN at 32's test-accuracy gain over the last quarter of training (mean over ``seeds``): near 0 = plateau."""
    gains = []
    for r in records:
        if r["name"] == name and r["seed"] in seeds and r["result"].get("status") == "ok":
            ev = [e["test_acc"] for e in r["result"].get("evals", []) if "test_acc" in e]
            if len(ev) >= 2:
                gains.append(ev[-1] - ev[-2])
    return mean(gains)


def verdict(records) -> Verdict:
    select = _select(records)
    pick, sel, judge = chosen(records, select)
    by_seed = {n: {r["seed"]: _acc(r) for r in rs if r["seed"] in judge} for n, rs in by_name(records).items()}

    def acc(arm: str) -> dict[int, float]:
        return by_seed.get(pick.get(arm, ""), {})

    sizes = _sizes(records) or [2]
    parts: dict[str, Verdict] = {}
    premises: dict[int, Verdict] = {}
    shares = []
    bn32 = acc("BN at 32")
    for b in sizes:
        bnb = acc(f"BN at {b}")
        common = sorted(set(bn32) & set(bnb))
        premises[b] = compare([bn32[s] for s in common], [bnb[s] for s in common], expect="greater", paired=True,
                              min_effect=MIN_LOSS, what=f"test accuracy, per-process batch {b}",
                              label_a="BN at 32", label_b=f"BN at {b}")
        for label, pattern in REMEDIES.items():
            arm = acc(pattern.format(b=b))
            seeds = sorted(set(arm) & set(common))
            v = recovered([arm[s] for s in seeds], [bnb[s] for s in seeds], [bn32[s] for s in seeds],
                          what=f"{label} at {b}")
            shares.append(f"{label} at {b}: {fmt(mean(arm[s] for s in seeds))} ({fmt(v.numbers['share'], 2)} of "
                          "the loss)")
            parts[f"{label} at {b}"] = v
    parts = holm_parts(parts)  # refuted by any one remedy at any size: Holm's correction over the parts
    v = combine_verdicts(parts, holm=False)
    # per size: its remedies count where BN lost accuracy there; a size where BN lost less than MIN_LOSS has
    # nothing to recover (left out), one where the loss is undecided is undecided
    by_size: dict[int, str | None] = {}
    for b, p in premises.items():
        mine = [part.status for k, part in parts.items() if k.endswith(f" at {b}")]
        by_size[b] = (combine(mine) if p.status == "supported" else "inconclusive" if p.status == "inconclusive"
                      else None)
    judged = [st for st in by_size.values() if st is not None]
    v.status = combine(judged) if judged else "inconclusive"
    v.tests = [t for p in premises.values() for t in p.tests] + v.tests
    losses = "; ".join(f"BN at 32 - BN at {b}: {p.key_number} ({p.status})" for b, p in premises.items())
    notes = [f"at {b}: BN lost less than {MIN_LOSS} ({p.status}), nothing to recover (left out)"
             for b, p in premises.items() if by_size[b] is None] + \
        [f"at {b}: BN's loss is undecided" for b, p in premises.items() if p.status == "inconclusive"]
    lrs = "; ".join(f"{a}: {n.rsplit('lr ', 1)[-1]}" for a, n in sorted(pick.items()))
    top = {r["config"].get("arm", r["name"]): r["config"]["train"]["lr"] for r in records if "train" in r["config"]}
    for r in records:
        if "train" in r["config"]:
            arm = r["config"].get("arm", r["name"])
            top[arm] = max(top[arm], r["config"]["train"]["lr"])
    edge = sorted(a for a, n in pick.items() if a in top and n == run_name(a, top[a]))
    if edge:
        lrs += f" (at the top of the grid, the best may lie above it: {', '.join(edge)})"
    plateau = _plateau(records, pick.get("BN at 32"), judge)
    v.summary = (f"BN's loss {losses}" + (f" [{'; '.join(notes)}]" if notes else "") + "; " + v.summary
                 + f"; learning rates chosen on seeds {sel} (judged on {judge}): {lrs}; BN at 32's test accuracy "
                 f"over the last quarter of training {'+' if plateau >= 0 else ''}{fmt(plateau, 2)} (plateau: "
                 "near 0); accuracy of each remedy and the share of BN's loss it recovered: " + "; ".join(shares))
    v.rule = (f"each arm at the learning rate with the best mean test accuracy on the selection seeds (the last "
              f"{select}), judged on the other seeds; the premise, per per-process batch b: BN at 32 - BN at b (paired "
              f"t interval by seed) above {MIN_LOSS}; a size where it is not supported or below the bar has no loss to "
              "recover and is left out, one where it is inconclusive is inconclusive; at a size where it holds, per "
              f"remedy: its share of BN's loss above {MIN_SHARE:g}, judged on remedy - BN at b - {MIN_SHARE:g} x "
              "(BN at 32 - BN at b) per seed; every remedy at every judged size must be supported; a refutation by one "
              "remedy counts after Holm's correction over the remedies and sizes (no judged size: inconclusive). "
              + v.rule)
    v.key_number = "; ".join(f"{k}: {fmt(p.numbers['share'], 2)} of BN's loss" for k, p in parts.items())
    v.versus_paper = ("paper: Wu & He 2018, ResNet-50 on ImageNet, top-1 error at 4 images per GPU: BN 27.3%, Batch "
                      "Renorm 26.3%, GN 24.2% (BN at 32: 23.6%): Batch Renorm recovers 0.27 of BN's loss, GN 0.84; "
                      f"here (share of BN's accuracy loss): {'; '.join(shares)}; scale: a small residual 1-D CNN on "
                      "MNIST-1D, hundreds of steps, the per-process batches simulated in one process")
    return v


def plot(records, verdict, prefix):
    pick, _, judge = chosen(records, _select(records))
    g = by_name(records)
    order = ["BN at 32"] + [a.format(b=b) for b in _sizes(records) for a in SMALL_ARMS] + ["GN+WS", "FRN"]
    return [bars({f"{a} (lr {pick[a].rsplit('lr ', 1)[-1]})": [_acc(r) for r in g[pick[a]] if r["seed"] in judge]
                  for a in order if a in pick}, prefix + "-acc.png",
                 "Test accuracy at small per-process batches (optimizer batch 32), each arm at its chosen lr",
                 "test accuracy")]


SPEC = experiment(
    claim="C35", title="BatchNorm's small-batch remedies: Batch Renorm, GroupNorm + WS, FRN",
    statement="At small per-process batches (2-4), Batch Renormalization, GroupNorm with Weight Standardization "
              "and Filter Response Normalization recover part of the accuracy BatchNorm loses against BatchNorm at "
              "32, each at its own tuned learning rate (Ghost BatchNorm is a large-batch regularizer, not a remedy: "
              "at batch b it normalizes each chunk exactly as BatchNorm at b does).",
    setup=(f"Residual 1-D CNN (stem + 2 blocks, widths 16/32) on MNIST-1D, AdamW, 10% warm-up + cosine, "
          f"{SIZES['quick']['steps']} (quick) / {SIZES['full']['steps']} (full) steps of 32 signals, test accuracy "
          f"in eval mode. Every arm is trained at learning rates 3e-3, 1e-2, 3e-2 (full: 1e-3 too); its learning "
          f"rate is the one with the best mean test accuracy on the selection seeds (quick: 1 of 5 seeds, full: 2 of"
          f" 7), and it is judged on the other seeds only. Per-process batches b (quick 2; full 2 and 4), simulated "
          f"in one process, one forward a step (ChunkedBatchRenorm, tested against Batch Renorm and BatchNorm run "
          f"on each chunk): each chunk of b is normalized with its own statistics and corrected by r and d against "
          f"the running statistics, which are the first chunk's (rank 0's, which DistributedDataParallel broadcasts "
          f"by default; one update a step). BN at b: r = 1, d = 0, i.e. BatchNorm on each process, momentum 0.1. "
          f"Batch Renorm at b: with Wu & He's settings rmax 1.5, dmax 0.5 reached by Ioffe's "
          f"ramp from (1, 0) over the first quarter of the steps, running momentum 0.01; the gradient step uses all "
          f"32. GroupNorm (4 groups) after weight-standardized convs, the stem's conv left plain (a 1x3 filter "
          f"standardized to zero mean is only high-pass; BiT's stem filter has 147 weights), and FRN + TLU do not "
          f"depend on the batch: one run each. Judged per remedy and b: the share of BN's loss (BN at 32 - BN at b) "
          f"it recovers, above {MIN_SHARE:g}, through remedy - BN at b - {MIN_SHARE:g} x (BN at 32 - BN at b) per "
          f"seed (95% t interval; below the bar if it recovers something, less than {MIN_SHARE:g}); the premise, BN "
          f"at 32 - BN at b above {MIN_LOSS} (paired by seed), must hold; Holm's correction over the parts. BN at "
          f"32's test-accuracy gain over the last quarter is reported (plateau). Ghost BN is not measured (it would "
          f"be a large-batch regularizer). Quick mode is weaker: batch 2 only, 200 steps (BN at 32 still climbing), "
          f"three learning rates, one selection seed."),
    grid=grid, seeds={"quick": 5, "full": 7}, run=run, verdict=verdict, plot=plot,
    paper="Wu & He 2018, Figure 1 and Table 3 (ResNet-50, ImageNet, top-1 error vs images per GPU; Batch Renorm's "
          "number from their text): at 4 images per GPU BN 27.3%, Batch Renorm 26.3%, GN 24.2%, against BN's 23.6% "
          "at 32 (Batch Renorm recovers about a "
          "quarter of BN's loss, GN nearly all); Ioffe 2017: Batch Renorm helps at small or non-i.i.d. minibatches; "
          "Qiao et al. 2019 and Singh & Krishnan 2019: GN + WS and FRN match BN without its batch dependence.",
)

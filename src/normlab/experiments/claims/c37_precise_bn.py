"""C37: Recomputed population statistics match or beat the EMA.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.cnn import bars, model_cfg, summary, test_accuracy, train_cfg, train_net
from ..spec import Verdict, experiment
from ..verdicts import by_name, combine_verdicts, compare, fmt, mean, paired_by_seed, threshold


#: arm -> (steps per mode, lr schedule, BatchNorm momentum): the reference is trained to the end of a cosine schedule
#: with torch's momentum 0.1; "short" stops early at a constant lr (an intermediate checkpoint); "lagging EMA" keeps a
#: long average (momentum 0.01: a horizon of ~100 steps) over weights that keep moving (a constant lr: with a cosine
#: decay the weights settle and, over 600 steps, even that average catches up)
ARMS = {
    "trained, EMA momentum 0.1": ({"quick": 300, "full": 600}, "cosine", 0.1),
    "short (stopped early, constant lr)": ({"quick": 60, "full": 100}, "constant", 0.1),
    "lagging EMA (momentum 0.01, constant lr)": ({"quick": 300, "full": 600}, "constant", 0.01),
}


REFERENCE = "trained, EMA momentum 0.1"

BATCH = 32  # the recomputing pass normalizes at the training batch size, over the whole training set

MARGIN = 0.005  # "match": the recomputed statistics may lose at most half an accuracy point

MIN_GAIN = 0.01  # "most when ...": the gain must exceed the reference's by a point


def grid(mode):
    runs = []
    for name, (steps, schedule, momentum) in ARMS.items():
        runs.append((name, {"model": model_cfg(mode, arch="resnet", norm="batchnorm", norm_momentum=momentum),
                            "train": train_cfg(mode, steps=steps[mode], schedule=schedule), "batch": 32,
                            "recompute_batch": BATCH}))
    return runs


def run(config: dict, seed: int) -> dict:
    """Train a BatchNorm ConvNet; test accuracy with its EMA running statistics and with statistics recomputed over
    one pass of the (shuffled) training set in batches of the training size; how far the two statistics differ."""
    import torch

    from ...tools import recompute_batchnorm_stats
    from ...tools.precise import batchnorm_layers

    net, data, rec = train_net(config, seed)
    acc_ema = test_accuracy(net, data)
    ema = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in batchnorm_layers(net).items()}
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))
    was = net.training
    net.eval()  # nothing but BatchNorm changes mode here; the pass normalizes BN with batch statistics
    recompute_batchnorm_stats(net, data.x_train[order].split(config["recompute_batch"]))
    net.train(was)
    acc_precise = test_accuracy(net, data)
    drift = {n: {"mean": ((m.running_mean - ema[n][0]).abs().mean() / m.running_var.sqrt().mean()).item(),
                 "log_var": (m.running_var.log() - ema[n][1].clamp_min(1e-12).log()).abs().mean().item()}
             for n, m in batchnorm_layers(net).items()}
    return {**summary(rec), "acc_ema": acc_ema, "acc_precise": acc_precise, "stat_drift": drift}


def _gain(r: dict) -> float:
    return r["result"]["acc_precise"] - r["result"]["acc_ema"]


def verdict(records) -> Verdict:
    g = by_name(records)
    parts: dict[str, Verdict] = {}
    for name in ARMS:
        gains = [_gain(r) for r in sorted(g.get(name, []), key=lambda r: r["seed"])]
        v = threshold(gains, above=-MARGIN, what=f"{name}: test accuracy, recomputed - EMA statistics")
        parts[f"match or beat: {name}"] = v
    ref = g.get(REFERENCE, [])
    for name in ARMS:
        if name == REFERENCE:
            continue
        a, b = paired_by_seed(g.get(name, []), ref, _gain)
        parts[f"larger gain: {name}"] = compare(a, b, expect="greater", paired=True, min_effect=MIN_GAIN,
                                                what="gain of recomputed over EMA statistics", label_a=name,
                                                label_b=REFERENCE)
    v = combine_verdicts(parts)
    lines = []
    for name in ARMS:
        rs = g.get(name, [])
        drift = [mean(d["log_var"] for d in r["result"]["stat_drift"].values()) for r in rs]
        lines.append(f"{name}: EMA {fmt(mean(r['result']['acc_ema'] for r in rs))} -> recomputed "
                     f"{fmt(mean(r['result']['acc_precise'] for r in rs))} (|log var ratio| {fmt(mean(drift), 2)})")
    v.summary = "mean test accuracy: " + "; ".join(lines) + ". Parts: " + v.summary
    v.rule = (f"per arm, 'match or beat': the t interval of the per-seed gain (recomputed - EMA accuracy, same trained "
              f"net) lies wholly above -{MARGIN} (supported), wholly below (not supported); 'most when short or "
              f"lagging': each of those arms' gain minus the reference's (paired by seed) above {MIN_GAIN}. "
              + v.rule)
    v.key_number = "; ".join(f"{k}: {p.key_number}" for k, p in parts.items())
    v.versus_paper = ("paper: Wu & Johnson 2021 report precise statistics matching or beating EMA, with the largest "
                      "gains for short training, small EMA momentum and large-learning-rate phases; here: "
                      + "; ".join(lines) + "; scale: a residual 1-D CNN on MNIST-1D, statistics recomputed over the "
                      "4000 training signals in batches of 32")
    return v


SPEC = experiment(
    claim="C37", title="Recomputed population statistics match or beat the EMA",
    statement="BatchNorm statistics recomputed over a pass of training data with the final weights (precise BN) "
              "match or beat the EMA running statistics, most when training was short or the EMA lags the weights.",
    setup="Residual 1-D CNN with BatchNorm on MNIST-1D (quick widths 16/32, full 16/32/64), AdamW lr 3e-3 with 10% "
          "warm-up, three arms: trained (300 quick / 600 full steps, cosine, torch's momentum 0.1), short (60 / 100 "
          "steps at a constant lr: an intermediate checkpoint) and lagging EMA (300 / 600 steps at a constant lr, "
          "momentum 0.01: a ~100-step average over moving weights); seeds: quick 4, full 5. Per trained net: test "
          "accuracy with its EMA statistics, then with normlab.recompute_batchnorm_stats over the whole training "
          "set in shuffled batches of 32 (BN normalizing with batch statistics, as in training). Judged: per arm, "
          f"recomputed - EMA above -{MARGIN} (t interval over seeds); the short and lagging arms' gains above "
          f"the trained arm's by {MIN_GAIN} (paired by seed).",
    grid=grid, seeds={"quick": 4, "full": 5}, run=run, verdict=verdict,
    plot=lambda records, verdict, prefix: [bars(
        {f"{n}: {k}": [r["result"][key] for r in rs] for n, rs in by_name(records).items()
         for k, key in (("EMA", "acc_ema"), ("recomputed", "acc_precise"))},
        prefix + "-acc.png", "EMA vs recomputed BatchNorm statistics", "test accuracy")],
    paper="Wu & Johnson 2021 (Rethinking 'Batch' in BatchNorm): PreciseBN's population statistics are more accurate "
          "than EMA's, which lag the weights under large learning rates, small momentum or short training.",
)

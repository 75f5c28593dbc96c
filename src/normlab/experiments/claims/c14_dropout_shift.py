"""C14: Dropout before BatchNorm shifts its variance between train and test.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.cnn import build_net, model_cfg, reestimate, summary, test_accuracy, train_cfg, train_net
from ..plots import pyplot, save_fig, seed_lines
from ..spec import PerMode, Verdict, experiment
from ..stats import interval
from ..verdicts import by_name, compare, fmt, mean, paired_by_seed


STEPS = PerMode({"quick": 150, "full": 500})

MIN_SHIFT = 0.05  # the shift ratio must exceed the no-dropout net's by more than this


def grid(mode):
    base = model_cfg(mode, norm="batchnorm")
    t = train_cfg(mode, steps=STEPS[mode])
    return [("no dropout", {"model": base, "place": "none", "train": t}),
            ("dropout before every BN", {"model": {**base, "dropout": 0.5, "dropout_place": "before_norm"},
                                         "place": "before", "train": t}),
            ("dropout after the last BN", {"model": base, "place": "after_last", "p": 0.5, "train": t})]


def variance_shift(net, x) -> dict[str, float]:
    """Per BN layer: mean over channels of max(running_var / real_var, real_var / running_var), real_var being
    the variance of the layer's input over ``x`` in eval mode (dropout off)."""
    import torch

    from ...layers import BatchNorm

    seen: dict = {}
    handles: list = []
    for name, m in net.named_modules():
        if isinstance(m, BatchNorm):
            handles.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: seen.setdefault(name, []).append(args[0].detach())))
    net.eval()
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    out = {}
    for name, m in net.named_modules():
        if name in seen:
            a = torch.cat(seen[name])
            real = a.transpose(0, 1).flatten(1).var(1, unbiased=False).clamp_min(1e-12)
            rv = m.running_var.clamp_min(1e-12)
            out[name] = torch.maximum(rv / real, real / rv).mean().item()
    return out


def run(config: dict, seed: int) -> dict:
    import torch

    net = build_net(config["model"])
    if config["place"] == "after_last":
        net.head = torch.nn.Sequential(torch.nn.Dropout(config["p"]), net.head)
    net, data, rec = train_net(config, seed, net=net)
    shift = variance_shift(net, data.x_test)
    stale = test_accuracy(net, data)
    reestimate(net, data.x_train)
    return {**summary(rec), "shift": shift, "acc_stale": stale, "acc_reestimated": test_accuracy(net, data),
            "shift_after_reestimate": variance_shift(net, data.x_test)}


def _shift(r) -> float:
    return mean(r["result"]["shift"].values())


def verdict(records) -> Verdict:
    g = by_name(records)
    before, none, after = (g.get(n, []) for n in ("dropout before every BN", "no dropout", "dropout after the last BN"))
    v = compare(*paired_by_seed(before, none, _shift), expect="greater", paired=True, min_effect=MIN_SHIFT,
                what="variance shift (mean over BN layers)", label_a="dropout before BN", label_b="no dropout")

    def acc(rs, key="acc_stale"):
        return [r["result"][key] for r in rs]

    cost = interval("test accuracy, dropout before BN - no dropout (running stats)",
                    *paired_by_seed(before, none, lambda r: r["result"]["acc_stale"]), paired=True)
    fix = interval("test accuracy, dropout before BN: re-estimated - running stats", acc(before, "acc_reestimated"),
                   acc(before), paired=True)
    v.summary += ("; reported, not judged: test accuracy with the running stats / after re-estimating them with "
                  "dropout off: " + "; ".join(f"{n} {mean(acc(rs)):.3f} / {mean(acc(rs, 'acc_reestimated')):.3f}"
                                              for n, rs in g.items())
                  + f"; accuracy cost of dropout before BN {cost.text()}; recovered by re-estimating {fix.text()}; "
                  f"variance shift with dropout only after the last BN {fmt(mean(_shift(r) for r in after))}")
    v.key_number = f"shift {v.key_number}"
    v.versus_paper = (
        "paper: Li et al. 2019, DenseNet on CIFAR-100: 77.42% test accuracy without dropout vs 68.55% with dropout "
        "before BN (-8.9 points), with variance shifts max(running var / real var, real var / running var) well "
        f"above 1; here: shift {fmt(mean(_shift(r) for r in before))} (dropout 0.5 before every BN) vs "
        f"{fmt(mean(_shift(r) for r in none))} (no dropout), test accuracy {mean(acc(before)):.3f} vs "
        f"{mean(acc(none)):.3f} ({fmt(100 * cost.estimate)} points), {mean(acc(before, 'acc_reestimated')):.3f} "
        "after re-estimating; scale: a small VGG-like 1-D CNN on MNIST-1D (4000 signals, 10 classes) trained for "
        "hundreds of steps, not a DenseNet on CIFAR-100 trained for hundreds of epochs")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    seed_lines(ax, records, lambda r: (range(len(r["result"]["shift"])), list(r["result"]["shift"].values())),
               marker="o")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("BatchNorm layer (input side -> output side)")
    ax.set_ylabel("variance shift max(rv/v, v/rv), channel mean")
    ax.set_title("Running variance vs the test-time variance (one line per seed)", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-shift.png")]


SPEC = experiment(
    claim="C14", title="Dropout before BatchNorm shifts its variance between train and test",
    statement="Dropout placed before BN makes the variance BN saw in training differ from the test-time "
              "variance (Li et al. 2019), costing accuracy; re-estimating the statistics with dropout off, or "
              "dropout only after the last BN, avoids it.",
    setup="VGG-like 1-D CNN with BN on MNIST-1D: no dropout, dropout 0.5 before every BN, dropout 0.5 only before "
          "the head; AdamW lr 3e-3, 150 (quick) / 500 (full) steps, 4 (quick) / 5 (full) seeds. Variance shift per "
          "BN layer on the test set, test accuracy with the running statistics and after re-estimating them on "
          "the training set with dropout off. Judged: the mean shift over BN layers, dropout before BN - no "
          "dropout, by a 95% t interval paired by seed, above 0.05; accuracies are reported with their intervals.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=run, verdict=verdict, plot=plot,
    paper="Li et al. 2019 (Understanding the Disharmony between Dropout and Batch Normalization): variance shift "
          "ratios well above 1 with dropout before BN, and accuracy gains from placing dropout after all BN "
          "layers.",
)

"""C33: Weight normalization vs BatchNorm on a small CNN.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.cnn import bars, build_net, cnn_run, final_value, load_data, model_cfg, summary, train_cfg, train_net
from ..plots import curves_plot
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, equivalent, fmt, mean, paired_by_seed


STEPS = PerMode({"quick": 200, "full": 500})


def grid(mode):
    steps = STEPS[mode]
    norms = ("weightnorm", "batchnorm") if mode == "quick" else ("weightnorm", "batchnorm", "none")
    return [(norm, {"model": model_cfg(mode, norm=norm, arch="resnet"), "norm": norm,
                    "train": train_cfg(mode, steps=steps)}) for norm in norms]


def data_dependent_init(net, x) -> None:
    """Salimans & Kingma's init: layer by layer, scale g and set the bias so each unit's pre-activation
    has zero mean and unit variance on the batch ``x``."""
    import torch

    layers = [m for m in net.modules() if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight")]
    for m in layers:
        seen: dict[str, torch.Tensor] = {}
        handle = m.register_forward_hook(lambda mod, args, out: seen.setdefault("out", out.detach()))
        with torch.no_grad():
            net(x)
        handle.remove()
        out = seen["out"]
        dims = [d for d in range(out.ndim) if d != 1]
        mu, sd = out.mean(dims), out.std(dims).clamp_min(1e-6)
        with torch.no_grad():
            g = m.parametrizations.weight.original0
            g.div_(sd.view(g.shape))
            m.bias.sub_(mu).div_(sd)


def run(config: dict, seed: int) -> dict:
    """cnn_run, with Salimans & Kingma's data-dependent init for weight-normalized nets."""
    import torch

    if config["norm"] != "weightnorm":
        return cnn_run(config, seed)
    data = load_data(config.get("data"))
    torch.manual_seed(seed)
    net = build_net(config["model"])
    idx = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[:256]
    data_dependent_init(net, data.x_train[idx])
    return summary(train_net(config, seed, net=net, data=data)[2])


TOLERANCE = 0.03  # "about as well": test accuracy within 3 points of BN's


def verdict(records) -> Verdict:
    g = by_name(records)
    wn, bn = paired_by_seed(g.get("weightnorm", []), g.get("batchnorm", []), lambda r: final_value(r, "test_acc"))
    v = equivalent(wn, bn, paired=True, tolerance=TOLERANCE, what="final test accuracy",
                   label_a="weight norm", label_b="BatchNorm")
    none = [final_value(r, "test_acc") for r in g.get("none", [])]
    if none:
        v.summary += f"; no normalization {fmt(mean(none))} (n={len(none)}, not judged)"
    v.rule += "; paired by seed"
    v.key_number = f"acc WN {fmt(mean(wn))} vs BN {fmt(mean(bn))}; " + v.key_number
    return v


SPEC = experiment(
    claim="C33", title="Weight normalization vs BatchNorm on a small CNN",
    statement="Weight normalization (w = g v / ||v||) trains the same small nets about as well as BatchNorm.",
    setup="Residual 1-D CNN on MNIST-1D with weight-normalized convs and head (no activation norm) and the "
          "paper's data-dependent init (256 training signals), with BatchNorm, and (full mode, not judged) with "
          f"nothing (torch's default init); AdamW lr 3e-3, warm-up + cosine, {STEPS['quick']} (quick) / "
          f"{STEPS['full']} (full) steps; seeds: quick 4, full 5. Judged as an equivalence test: the paired "
          f"(by seed) 95% CI of the test-accuracy difference WN - BN must lie inside +-{TOLERANCE:g}.",
    grid=grid, seeds={"quick": 4, "full": 5}, run=run, verdict=verdict,
    plot=lambda records, verdict, prefix: [curves_plot(records, prefix, "weight norm vs BN vs none",
                                                        "training loss (nats)"),
                                           bars({n: [final_value(r, "test_acc") for r in rs] for n, rs in
                                                 by_name(records).items()}, prefix + "-acc.png",
                                                "final test accuracy", "test accuracy")],
    paper="Salimans & Kingma 2016, CIFAR-10 test error of their ConvPool-CNN (read second-hand): weight norm alone "
          "did not beat BN (8.46% vs 8.05%); weight norm with mean-only BN did (7.31%).",
)

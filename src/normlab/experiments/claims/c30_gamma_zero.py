"""C30: gamma = 0 at init stops the signal and the gradient.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..harness.cnn import build_net, final_value, load_data, model_cfg, summary, train_cfg, train_net
from ..plots import curves_plot
from ..spec import PerMode, Verdict, experiment
from ..verdicts import by_name, combine_verdicts, compare, fmt, mean, paired_by_seed, threshold


VANISHED = 1e-3  # the first conv's gradient 'vanishes' below this fraction of gamma=1's

STEPS = PerMode({"quick": 100, "full": 300})


def grid(mode):
    steps = STEPS[mode]
    base = model_cfg(mode, norm="batchnorm", arch="resnet")
    arms = [("gamma=1", 1.0, False), ("gamma=0", 0.0, False)]
    if mode == "full":  # the contrast (not judged)
        arms.append(("gamma=0 on each block's last norm only", 1.0, True))
    return [(name, {"model": {**base, "gamma_init": g}, "zero_last": zl, "train": train_cfg(mode, steps=steps)})
            for name, g, zl in arms]


def run(config: dict, seed: int) -> dict:
    """Gradient reaching the first conv and the logits' spread at init, then a training run."""
    import torch
    import torch.nn.functional as F

    data = load_data(config.get("data"))
    torch.manual_seed(seed)
    net = build_net(config["model"])
    if config.get("zero_last"):  # Goyal et al.'s zero-init of the last BN in each residual branch
        with torch.no_grad():
            for name, m in net.named_modules():
                if name.endswith("unit2.norm"):
                    m.weight.zero_()
    x, y = data.x_train[:128], data.y_train[:128]
    logits = net.train()(x)
    F.cross_entropy(logits, y).backward()
    init = {"first_conv_grad": net.stem.conv.weight.grad.norm().item(), "logit_std": logits.std().item()}
    net.zero_grad(set_to_none=True)
    _, _, rec = train_net(config, seed, net=net, data=data)
    return {**summary(rec), "init": init}


def verdict(records) -> Verdict:
    g = by_name(records)
    zero, one = g.get("gamma=0", []), g.get("gamma=1", [])
    g0, g1 = paired_by_seed(zero, one, lambda r: r["result"]["init"]["first_conv_grad"])
    grad = threshold([a / b for a, b in zip(g0, g1)], below=VANISHED,
                     what="first conv's gradient norm at init, gamma=0 / gamma=1 (per seed)")
    l0, l1 = paired_by_seed(zero, one, lambda r: final_value(r, "train_loss"))
    loss = compare(l0, l1, expect="greater", paired=True, what="final training loss", label_a="gamma=0",
                   label_b="gamma=1", min_effect=0.1)
    v = combine_verdicts({"gradient vanishes at init": grad, "training stalls": loss})
    zl = g.get("gamma=0 on each block's last norm only", [])
    v.summary = (f"gradient norm at the first conv at init: gamma=0 {fmt(mean(g0))} vs gamma=1 {fmt(mean(g1))}, "
                 f"ratio {grad.tests[0]['estimate']:.3g}; logit std at init "
                 f"{fmt(mean(r['result']['init']['logit_std'] for r in zero))} vs "
                 f"{fmt(mean(r['result']['init']['logit_std'] for r in one))}; " + loss.summary
                 + (f"; zero-init of each block's last norm only: final train loss "
                    f"{fmt(mean(final_value(r, 'train_loss') for r in zl))} (not judged)" if zl else ""))
    v.key_number = f"train loss {fmt(mean(l0))} vs {fmt(mean(l1))}; grad ratio {grad.tests[0]['estimate']:.3g}"
    return v


SPEC = experiment(
    claim="C30", title="gamma = 0 at init stops the signal and the gradient",
    statement="Initializing every norm's gamma to 0 zeroes the signal after the first norm and the gradient to "
              "earlier layers, so training stalls; gamma = 1 trains.",
    setup="Residual 1-D CNN with BatchNorm on MNIST-1D: every gamma 1, every gamma 0, and (full mode, not judged) "
          "gamma 0 only on the last norm of each residual block (the 'zero-init residual' trick, for contrast); "
          "gradient at the first conv and logit spread at init on 128 signals, then AdamW lr 3e-3 for "
          f"{STEPS['quick']} (quick) / {STEPS['full']} (full) steps; seeds: 4. Judged: the per-seed ratio "
          f"of the first conv's gradient (gamma=0 / gamma=1) below {VANISHED:g} (t interval) and the final "
          "training loss gamma=0 - gamma=1 above 0.1 nats (paired by seed); both must hold.",
    grid=grid, seeds={"quick": 4, "full": 4}, run=run, verdict=verdict,
    plot=lambda records, verdict, prefix: [curves_plot(records, prefix, "gamma initialization",
                                                        "training loss (nats)")],
    paper="Goyal et al. 2017: zero-initializing the last BN gamma of each residual block is a useful trick; "
          "zeroing every gamma (no skip around the stem) blocks all signal.",
)

"""Training stability without (or with other) normalization: qk-norm and lr sensitivity, init scale, DyT and DeepNorm (C26, C31, C34)."""

from __future__ import annotations

import math

from .lm import bar_plot, final_loss, final_losses, lm_run, model_cfg, train_cfg
from .plots import pyplot, save_fig
from .registry import register
from .spec import Verdict, compare, experiment, fmt, mean, spread

C26_STEPS = {"quick": 200, "full": 300}  # the C26 lr sweep (14 configs)


# ------------------------------------------------------------------------ C26
C26_LRS = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]


def _c26_grid(mode):
    steps = C26_STEPS[mode]
    out = []
    for qk in ("none", "layernorm"):
        for lr in C26_LRS:
            out.append((f"qk-{qk}-lr{lr:g}", {
                "model": model_cfg(mode, placement="pre", qk_norm=qk),
                "train": train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, instruments=["attn_logits"],
                                    instrument_every=max(1, steps // 10), log_every=max(1, steps // 40),
                                    diverge_factor=3.0)}))
    return out


def _sensitivity(records, qk: str) -> tuple[list[float], dict]:
    """Wortsman et al.: mean over the lr sweep of min(final, initial) - best, per seed."""
    out, best_lr = [], {}
    for s in sorted({r["seed"] for r in records}):
        finals, initial = [], []
        for lr in C26_LRS:
            rr = [r for r in records if r["name"] == f"qk-{qk}-lr{lr:g}" and r["seed"] == s]
            if not rr:
                continue
            res = rr[0]["result"]
            init_loss = res["first_loss"]
            final = final_loss(rr[0])
            finals.append(min(final, init_loss) if math.isfinite(final) else init_loss)
            initial.append(init_loss)
        if finals:
            best = min(finals)
            out.append(mean(f - best for f in finals))
            best_lr[s] = best
    return out, best_lr


def _max_logit(r) -> float:
    vals = [e["attn_logits"].get("blocks.0.attn", math.nan) for e in r["result"]["instruments"] if "attn_logits" in e]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals) if vals else math.nan


def _c26_verdict(records) -> Verdict:
    plain, _ = _sensitivity(records, "none")
    qk, _ = _sensitivity(records, "layernorm")
    v = compare(plain, qk, expect="greater", what="lr sensitivity (mean over lrs of min(final, initial) - best)",
                label_a="no qk-norm", label_b="qk-layernorm", min_effect=0.02)
    logits = {q: max((_max_logit(r) for r in records if r["name"].startswith(f"qk-{q}")), default=math.nan)
              for q in ("none", "layernorm")}
    v.summary += (f"; largest layer-0 attention logit over the sweep: no qk-norm {fmt(logits['none'])}, "
                  f"qk-layernorm {fmt(logits['layernorm'])}")
    v.numbers["max_attn_logit_layer0"] = logits
    return v


def _c26_plot(records, verdict, prefix):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for i, qk in enumerate(("none", "layernorm")):
        for s in sorted({r["seed"] for r in records}):
            rr = {r["name"]: r for r in records if r["seed"] == s and r["name"].startswith(f"qk-{qk}-")}
            lrs = [lr for lr in C26_LRS if f"qk-{qk}-lr{lr:g}" in rr]
            axes[0].plot(lrs, [final_loss(rr[f"qk-{qk}-lr{lr:g}"]) for lr in lrs], "o-", color=f"C{i}",
                         alpha=0.8, label=f"qk-norm: {qk}" if s == 0 else None)
            axes[1].plot(lrs, [_max_logit(rr[f"qk-{qk}-lr{lr:g}"]) for lr in lrs], "o-", color=f"C{i}", alpha=0.8,
                         label=f"qk-norm: {qk}" if s == 0 else None)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (diverged: initial)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("max attention logit, layer 0")
    fig.suptitle("Learning-rate sweep with and without QK-LayerNorm")
    return [save_fig(fig, prefix + "-sweep.png")]


register(experiment(
    claim="C26", title="QK-norm makes training less sensitive to the learning rate",
    statement="At high learning rates attention logits grow and training diverges unless Q and K are "
              "normalized; QK-norm lowers learning-rate sensitivity.",
    setup=f"Pre-LN GPT (C18 sizes; {C26_STEPS['quick']} steps quick, {C26_STEPS['full']} full) over lrs "
          "3e-4..3e-1 with warm-up and cosine "
          "decay, with and without LayerNorm on queries and keys (per head); the largest layer-0 attention logit "
          "is recorded through training.",
    grid=_c26_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c26_verdict, plot=_c26_plot,
    paper="Wortsman et al. 2023, Figure 1/3: without qk-layernorm, runs whose attention logits grew past ~1e4 "
          "diverged at high lr; with it, lr sensitivity dropped markedly at every model size.",
))


# ------------------------------------------------------------------------ C31
C31_SCALES = [1.0, 4.0, 16.0, 64.0]


def _c31_grid(mode):
    out = []
    for norm in ("layernorm", "none"):
        for scale in C31_SCALES:
            out.append((f"{'pre-LN' if norm == 'layernorm' else 'no norm'} x{scale:g}",
                        {"model": model_cfg(mode, n_layer=4, placement="pre", norm=norm, init_scale=scale),
                         "train": train_cfg(mode, diverge_factor=3.0)}))
    return out


def _tolerated(records, prefix: str) -> list[float]:
    """Per seed: log of the largest init scale whose final loss is within 0.1 nats of that model's best."""
    out = []
    for s in sorted({r["seed"] for r in records}):
        losses = {sc: final_losses(records, f"{prefix} x{sc:g}").get(s) for sc in C31_SCALES}
        losses = {k: v for k, v in losses.items() if v is not None and math.isfinite(v)}
        if losses:
            best = min(losses.values())
            out.append(math.log(max(k for k, v in losses.items() if v <= best + 0.1)))
    return out


def _c31_verdict(records) -> Verdict:
    pre, none = _tolerated(records, "pre-LN"), _tolerated(records, "no norm")
    v = compare(pre, none, expect="greater", what="log of the largest init scale trained to within 0.1 nats of "
                "the best", label_a="pre-LN", label_b="no normalization")
    v.key_number = f"largest good scale: pre-LN x{fmt(math.exp(mean(pre)))}, none x{fmt(math.exp(mean(none)))}" \
        if pre and none else v.key_number
    return v


register(experiment(
    claim="C31", title="Pre-LN tolerates larger initialization scales",
    statement="Pre-LN models tolerate larger initialization scales than un-normalized residual networks.",
    setup="4-block GPT, pre-LN LayerNorm or no norm, every initial weight scaled by 1, 4, 16, 64 (GPT-2 init "
          "times the scale), same budget as C18.",
    grid=_c31_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c31_verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Final loss by init scale")],
))


# ------------------------------------------------------------------------ C34
def _c34_grid(mode):
    return [(name, {"model": model_cfg(mode, **m), "train": train_cfg(mode)}) for name, m in (
        ("pre-LN", dict(placement="pre", norm="layernorm")),
        ("DyT (pre placement)", dict(placement="pre", norm="dyt")),
        ("DeepNorm post-LN", dict(placement="deepnorm", norm="layernorm")))]


def _c34_verdict(records) -> Verdict:
    base = list(final_losses(records, "pre-LN").values())
    parts, keys, worse, unclear = [], [], [], []
    for name in ("DyT (pre placement)", "DeepNorm post-LN"):
        other = list(final_losses(records, name).values())
        if not other or not base:
            unclear.append(name)
            continue
        diff = mean(other) - mean(base)
        bound = max(spread(other), spread(base), 0.03)
        parts.append(f"{name} {fmt(mean(other))} vs pre-LN {fmt(mean(base))} (diff {fmt(diff)}, bound {fmt(bound)})")
        keys.append(f"{name.split(' (')[0]} {fmt(mean(other))}")
        if diff > bound:
            worse.append(name)
    status = "inconclusive" if unclear else ("not supported" if worse else "supported")
    return Verdict(status, "; ".join(parts) + (f"; worse than pre-LN: {', '.join(worse)}" if worse else ""),
                   "supported if each normalization-free variant ends no worse than pre-LN by more than "
                   "max(seed spread, 0.03 nats); not supported if one does",
                   {"pre": base},
                   key_number=", ".join(keys) + (f" vs pre-LN {fmt(mean(base))}" if keys else ""))


register(experiment(
    claim="C34", title="DyT and DeepNorm-scaled post-LN against pre-LN",
    statement="Normalization-free transformers (Dynamic Tanh) and DeepNorm-scaled post-LN train as well as "
              "pre-LN on the same budget.",
    setup="The C18 GPT and budget with pre-LN LayerNorm, DyT in the pre-LN positions (alpha0 = 0.5), and "
          "DeepNorm (post-LN, residual x (2N)^1/4, beta-scaled Xavier init).",
    grid=_c34_grid, seeds={"quick": 2, "full": 3}, run=lm_run, verdict=_c34_verdict,
    plot=lambda recs, v, prefix: [bar_plot(recs, prefix, "Normalization-free and DeepNorm vs pre-LN")],
    paper="Zhu et al. 2025 (DyT): matches LayerNorm models across tasks; Wang et al. 2022 (DeepNet): stable "
          "post-LN up to 1000 layers.",
))



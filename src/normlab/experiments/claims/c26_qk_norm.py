"""C26: QK-norm makes training less sensitive to the learning rate.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.lm import SIZES, complete_seeds, final_loss, lm_run, model_cfg, per_seed, train_cfg
from ..plots import pyplot, save_fig
from ..spec import PerMode, Verdict, experiment
from ..verdicts import combine_verdicts, compare, fmt, mean


LRS = [3e-4, 3e-3, 3e-2, 3e-1]  # spans Wortsman et al.'s sweep 3e-4..3e-1 one decade apart (they add the half-decades)

SWEEP = PerMode({"quick": LRS, "full": LRS,
                     "paper": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]})  # paper: their 7 learning rates

STEPS = PerMode({"quick": 90, "full": 200})

ZLOSS = 1e-4  # Wortsman et al.: z-loss 1e-4 * log^2 Z in both arms

DECAY = 1e-4  # ... and weight decay 1e-4 independent of the lr (AdamW's decay is multiplied by the lr)

SENS_EFFECT = 0.02  # nats: a smaller drop in lr sensitivity is not counted as an effect

LOGIT_EFFECT = 1.0  # log10: qk-norm must keep the largest logit at least 10x smaller

ARMS = {"none": "no qk-norm", "layernorm": "qk-layernorm"}


def _name(qk: str, lr: float) -> str:
    return f"qk-{qk}-lr{lr:g}"


def grid(mode):
    steps = STEPS[mode]
    out = []
    for qk in ARMS:
        for lr in SWEEP[mode]:
            out.append((_name(qk, lr), {
                "model": model_cfg(mode, placement="pre", qk_norm=qk, z_loss=ZLOSS),
                "train": train_cfg(mode, steps=steps, lr=lr, warmup_steps=steps // 10, weight_decay=DECAY / lr,
                                   instruments=["attn_logits"], instrument_every=max(1, steps // 10),
                                   log_every=max(1, steps // 25), diverge_factor=3.0)}))
    return out


def _diverged(r) -> bool:
    """Wortsman et al.'s sense: the loss went non-finite or the run ended above its initial loss."""
    res = r["result"]
    final = res["final"].get("val_loss", math.nan) if res["status"] == "ok" else math.nan
    first = res["first_loss"]
    return res["status"] != "ok" or not math.isfinite(final) or (first is not None and final > first)


def _swept_lrs(records) -> list[float]:
    """The learning rates of the sweep the records hold (the mode's sweep)."""
    return sorted({float(r["name"].rsplit("-lr", 1)[1]) for r in records if "-lr" in r["name"]}) or list(LRS)


def _sensitivity(records, qk: str, seeds) -> dict[int, float]:
    """Wortsman et al.'s lr sensitivity per seed: mean over the lr sweep of min(final, initial) - best."""
    out = {}
    for s in seeds:
        finals = []
        for lr in _swept_lrs(records):
            r = per_seed(records, _name(qk, lr))[s]
            first, final = r["result"]["first_loss"], final_loss(r)
            finals.append(min(final, first) if math.isfinite(final) else first)
        out[s] = mean(f - min(finals) for f in finals)
    return out


def _max_logit(r) -> float:
    vals = [e["attn_logits"].get("blocks.0.attn", math.nan) for e in r["result"].get("instruments", [])
            if "attn_logits" in e]
    vals = [v for v in vals if math.isfinite(v)]
    return max(vals) if vals else math.nan


def _sweep_logit(records, qk: str, s: int) -> float:
    """log10 of the largest layer-0 attention logit over the whole lr sweep of one seed."""
    vals = [_max_logit(per_seed(records, _name(qk, lr))[s]) for lr in _swept_lrs(records)]
    vals = [v for v in vals if math.isfinite(v)]
    return math.log10(max(vals)) if vals and max(vals) > 0 else math.nan


def verdict(records) -> Verdict:
    lrs = _swept_lrs(records)
    seeds = complete_seeds(records, [_name(q, lr) for q in ARMS for lr in lrs])
    sens = {q: _sensitivity(records, q, seeds) for q in ARMS}
    sensitivity = compare([sens["none"][s] for s in seeds], [sens["layernorm"][s] for s in seeds],
                          expect="greater", paired=True, min_effect=SENS_EFFECT,
                          what=f"lr sensitivity (mean over the {len(lrs)} lrs of min(final, initial) - best, nats)",
                          label_a="no qk-norm", label_b="qk-layernorm")
    logit_seeds = [s for s in seeds if all(math.isfinite(_sweep_logit(records, q, s)) for q in ARMS)]
    logits = {q: [_sweep_logit(records, q, s) for s in logit_seeds] for q in ARMS}
    growth = compare(logits["none"], logits["layernorm"], expect="greater", paired=True,
                     min_effect=LOGIT_EFFECT,
                     what="log10 of the largest layer-0 attention logit over the lr sweep",
                     label_a="no qk-norm", label_b="qk-layernorm")
    v = combine_verdicts({"lr sensitivity": sensitivity, "attention logits": growth})
    diverged = {q: sum(_diverged(r) for r in records if r["name"].startswith(f"qk-{q}-")) for q in ARMS}
    runs = {q: sum(1 for r in records if r["name"].startswith(f"qk-{q}-")) for q in ARMS}
    div_text = ", ".join(f"{ARMS[q]} {diverged[q]}/{runs[q]}" for q in ARMS)
    v.summary += f"; diverged runs (non-finite, or final loss above the initial): {div_text}"
    v.numbers["diverged"] = {q: [diverged[q], runs[q]] for q in ARMS}
    top = {q: 10 ** max(logits[q]) if logits[q] else math.nan for q in ARMS}
    v.numbers["max_attn_logit_layer0"] = top
    v.key_number = (f"sensitivity {fmt(mean(sens['none'].values()))} vs {fmt(mean(sens['layernorm'].values()))}; "
                    f"max logit {fmt(top['none'])} vs {fmt(top['layernorm'])}; diverged {div_text}")
    v.versus_paper = (
        "paper: Wortsman et al. 2023 (models 9.4M-1.2B parameters, lrs 3e-4..3e-1, z-loss and weight decay in "
        "both arms): every run whose attention logits passed about 1e4 diverged, and qk-layernorm lowered lr "
        "sensitivity at every size (a 1.2B model trains at lr 0.3); "
        f"here: largest layer-0 logit {fmt(top['none'])} without qk-norm vs {fmt(top['layernorm'])} with, "
        f"diverged {div_text}, sensitivity {fmt(mean(sens['none'].values()))} vs "
        f"{fmt(mean(sens['layernorm'].values()))} nats; scale: a "
        f"{SIZES['quick']['n_layer']}-{SIZES['full']['n_layer']} block character model of d="
        f"{SIZES['quick']['d_model']}-{SIZES['full']['d_model']} trained {STEPS['quick']}-"
        f"{STEPS['full']} steps, where the paper's smallest model is ~9M parameters trained far longer")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for i, qk in enumerate(ARMS):
        for k, s in enumerate(sorted({r["seed"] for r in records})):
            rr = {r["name"]: r for r in records if r["seed"] == s and r["name"].startswith(f"qk-{qk}-")}
            lrs = [lr for lr in _swept_lrs(records) if _name(qk, lr) in rr]
            axes[0].plot(lrs, [final_loss(rr[_name(qk, lr)]) for lr in lrs], "o-", color=f"C{i}",
                         alpha=0.6, label=ARMS[qk] if k == 0 else None)
            bad = [lr for lr in lrs if _diverged(rr[_name(qk, lr)])]
            axes[0].plot(bad, [final_loss(rr[_name(qk, lr)]) for lr in bad], "x", color="k", ms=8,
                         label="diverged" if (i, k) == (0, 0) and bad else None)
            axes[1].plot(lrs, [_max_logit(rr[_name(qk, lr)]) for lr in lrs], "o-", color=f"C{i}", alpha=0.6,
                         label=ARMS[qk] if k == 0 else None)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("final validation loss (diverged: initial)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("max attention logit, layer 0")
    fig.suptitle("Learning-rate sweep with and without QK-LayerNorm (one line per seed)")
    return [save_fig(fig, prefix + "-sweep.png")]


SPEC = experiment(
    claim="C26", title="QK-norm makes training less sensitive to the learning rate",
    statement="At high learning rates attention logits grow and training diverges unless Q and K are "
              "normalized; QK-norm lowers learning-rate sensitivity.",
    setup=f"Pre-LN GPT (C18 sizes; {STEPS['quick']} steps quick, {STEPS['full']} full; 5 seeds quick, "
          "6 full) over lrs 3e-4, 3e-3, 3e-2, 3e-1 (Wortsman et al.'s range, one decade apart), 10% warm-up then cosine decay, z-loss 1e-4 and "
          "lr-independent weight decay 1e-4 (AdamW weight_decay = 1e-4/lr) in both arms, with and without "
          "LayerNorm on queries and keys (per head). Two parts, both paired by seed (paired t, 95%): lr "
          f"sensitivity (mean over the lrs of min(final, initial) - best) lower with qk-norm by more than "
          f"{SENS_EFFECT} nats, and log10 of the largest layer-0 attention logit over the sweep higher "
          f"without qk-norm by more than {LOGIT_EFFECT:g} (10x). Diverged runs (non-finite loss, or final "
          "loss above the initial) are counted per arm.",
    grid=grid, seeds={"quick": 5, "full": 6}, run=lm_run, verdict=verdict, plot=plot,
    paper="Wortsman et al. 2023, Figure 1/3: without qk-layernorm, runs whose attention logits grew past ~1e4 "
          "diverged at high lr; with it, lr sensitivity dropped markedly at every model size.",
)

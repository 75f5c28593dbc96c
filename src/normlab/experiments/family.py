"""The rest of the family on MNIST-1D: BatchNorm's small-batch remedies (C35), folding BatchNorm into the conv
(C36), recomputed population statistics (C37), batch-free normalizers (C38)."""

from __future__ import annotations

import math
import statistics
import time

from .batchnorm import train_eval_run
from .plots import pyplot, save_fig
from .registry import register
from .spec import Verdict, by_name, combine_verdicts, compare, exact, experiment, fmt, mean, paired_by_seed, threshold
from .stats import combine, interval
from .vision import bars, build_net, cnn_run, model_cfg, summary, test_accuracy, train_cfg, train_net


def _acc(r: dict) -> float:
    """Final test accuracy of a training record (0 if the run diverged: it lost everything)."""
    res = r["result"]
    if res.get("status", "ok") != "ok":
        return 0.0
    return res["final"].get("test_acc", math.nan) if "final" in res else res.get("test_acc", math.nan)


# ------------------------------------------------------------------------ C35
#: per mode: the small per-process batches, steps at every size (the optimizer's batch is 32 throughout), seeds
C35 = {"quick": dict(per_process=[2], steps=300), "full": dict(per_process=[2, 4], steps=500)}
C35_WIDTHS = [16, 32]  # both modes: per-process simulation runs 32/b forwards a step
C35_RENORM = dict(norm_momentum=0.01, renorm_rmax=3.0, renorm_dmax=5.0)  # Keras's renorm_momentum 0.99
C35_RENORM_WARMUP = 0.25  # the limits relax over the first quarter of training
C35_MIN_LOSS = 0.02  # BN must lose at least 2 accuracy points at the small batch for there to be something to recover


def _c35_model(mode: str, **overrides) -> dict:
    return model_cfg(mode, arch="resnet", widths=C35_WIDTHS, **overrides)


def _c35_grid(mode):
    s = C35[mode]
    steps = s["steps"]
    train = train_cfg(mode, steps=steps)
    runs = [("BN at 32", {"model": _c35_model(mode, norm="batchnorm"), "norm": "batchnorm", "batch": 32,
                          "train": train}),
            ("GN+WS", {"model": _c35_model(mode, norm="gn+ws"), "norm": "gn+ws", "batch": 32, "train": train}),
            ("FRN", {"model": _c35_model(mode, norm="frn"), "norm": "frn", "batch": 32, "train": train})]
    for b in s["per_process"]:
        calls = steps * 32 // b  # forward calls in training: the per-process simulation runs 32 / b a step
        runs += [
            (f"BN at {b}", {"model": _c35_model(mode, norm="batchnorm"), "norm": "batchnorm", "batch": 32,
                            "ghost_batch": b, "per_process": b, "train": train}),
            (f"Batch Renorm at {b}", {"model": _c35_model(mode, norm="batchrenorm", **C35_RENORM,
                                                          renorm_warmup_steps=int(calls * C35_RENORM_WARMUP)),
                                      "norm": "batchrenorm", "batch": 32, "ghost_batch": b, "per_process": b,
                                      "train": train}),
            (f"Ghost BN over {b}", {"model": _c35_model(mode, norm="ghostbn", virtual_batch_size=b), "norm": "ghostbn",
                                    "batch": 32, "per_process": b, "train": train}),
        ]
    return runs


#: remedy label -> the run name at per-process batch b (the batch-free ones do not depend on b: one run serves all)
C35_REMEDIES = {"Batch Renorm": "Batch Renorm at {b}", "Ghost BN": "Ghost BN over {b}", "GN+WS": "GN+WS",
                "FRN": "FRN"}
WU_HE_4 = {"BN at 32": 23.6, "BN at 4": 27.3, "Batch Renorm at 4": 26.3, "GN at 4": 24.2}  # top-1 error, %


def _c35_sizes(records) -> list[int]:
    return sorted({r["config"]["per_process"] for r in records if "per_process" in r["config"]})


def _c35_verdict(records) -> Verdict:
    g = by_name(records)
    sizes = _c35_sizes(records) or [2]
    parts: dict[str, Verdict] = {}
    premises: dict[int, Verdict] = {}
    fractions = []
    bn32 = {r["seed"]: _acc(r) for r in g.get("BN at 32", [])}
    for b in sizes:
        bnb = {r["seed"]: _acc(r) for r in g.get(f"BN at {b}", [])}
        ref = {s: (bn32[s], bnb[s]) for s in sorted(set(bn32) & set(bnb))}
        premises[b] = compare([a for a, _ in ref.values()], [c for _, c in ref.values()], expect="greater",
                              paired=True, min_effect=C35_MIN_LOSS, what=f"test accuracy, per-process batch {b}",
                              label_a="BN at 32", label_b=f"BN at {b}")
        for label, pattern in C35_REMEDIES.items():
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
    notes = [f"at {b}: BN lost less than {C35_MIN_LOSS}, nothing to recover (left out)" for b, st in by_size.items()
             if st is None] + [f"at {b}: BN's loss is undecided" for b, p in premises.items()
                               if p.status == "inconclusive"]
    v.summary = (f"BN's loss {losses}" + (f" [{'; '.join(notes)}]" if notes else "") + "; " + v.summary
                 + "; accuracy of each remedy and the fraction of BN's loss it recovered: " + "; ".join(fractions))
    v.rule = (f"the premise, per per-process batch b: BN at 32 - BN at b (paired t interval by seed) above "
              f"{C35_MIN_LOSS}; a size where it is not supported has no loss to recover and is left out, one where "
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


def _c35_plot(records, verdict, prefix):
    g = by_name(records)
    order = ["BN at 32"] + [n for b in _c35_sizes(records) for n in
                            (f"BN at {b}", f"Batch Renorm at {b}", f"Ghost BN over {b}")] + ["GN+WS", "FRN"]
    return [bars({n: [_acc(r) for r in g[n]] for n in order if g.get(n)}, prefix + "-acc.png",
                 "Test accuracy at small per-process batches (optimizer batch 32)", "test accuracy")]


register(experiment(
    claim="C35", title="BatchNorm's small-batch remedies: Batch Renorm, Ghost BN, GroupNorm + WS, FRN",
    statement="At small per-process batches (2-4), Batch Renormalization, Ghost BatchNorm over the same small "
              "batch, GroupNorm with Weight Standardization and Filter Response Normalization recover most of the "
              "accuracy BatchNorm loses (against BatchNorm at 32).",
    setup="Residual 1-D CNN (stem + 2 blocks, widths 16/32, both modes) on MNIST-1D, AdamW lr 3e-3, 10% warm-up + "
          f"cosine, {C35['quick']['steps']} (quick) / {C35['full']['steps']} (full) steps of 32 signals, test "
          "accuracy in eval mode; seeds: quick 4, full 5. The per-process batch b (quick 2; full 2 and 4) is "
          "simulated as the suite's SyncBN claim does: the model runs on chunks of b signals (BatchNorm sees b, "
          "running statistics updated by each chunk), the gradient step uses all 32. Arms: BN at 32; at b: BN, "
          "Batch Renorm (rmax 3, dmax 5 relaxed from (1, 0) over the first quarter of the forward calls, running "
          "momentum 0.01 as Keras's renorm_momentum 0.99), Ghost BN with virtual batch b on the whole batch (one "
          "forward, one pooled running update per step); GroupNorm (4 groups) after weight-standardized convs and "
          "FRN + TLU, which do not depend on the batch, once. Judged per remedy and b: accuracy minus the midpoint "
          "of BN at b and BN at 32, per seed, by a 95% t interval (above 0: more than half of BN's loss "
          f"recovered); the premise, BN at 32 - BN at b above {C35_MIN_LOSS} (paired by seed), must hold.",
    grid=_c35_grid, seeds={"quick": 4, "full": 5}, run=cnn_run, verdict=_c35_verdict,
    plot=_c35_plot,
    paper="Wu & He 2018, Table/Figure on batch size (ResNet-50, ImageNet): at 4 images per GPU BN 27.3%, Batch "
          "Renorm 26.3%, GN 24.2% top-1 error, against BN's 23.6% at 32; Ioffe 2017: Batch Renorm helps at small "
          "or non-i.i.d. minibatches; Singh & Krishnan 2019 and Qiao et al. 2019: FRN and WS + GN match BN "
          "without its batch dependence.",
))


# ------------------------------------------------------------------------ C36
#: timed models: (label, ConvNet config, batch); quick: one ResNet-style 2-D net; full adds a wider, deeper one and
#: the suite's 1-D MNIST-1D net at evaluation batch size
C36_MODELS = {
    "quick": [("ResNet-style 2-D, 32x32, widths 16/32/64", dict(dim=2, input_size=32, widths=[16, 32, 64],
                                                                blocks_per_stage=1, arch="resnet"), 16)],
    "full": [("ResNet-style 2-D, 32x32, widths 16/32/64", dict(dim=2, input_size=32, widths=[16, 32, 64],
                                                               blocks_per_stage=1, arch="resnet"), 16),
             ("ResNet-style 2-D, 32x32, widths 32/64/128, 2 blocks", dict(dim=2, input_size=32, widths=[32, 64, 128],
                                                                          blocks_per_stage=2, arch="resnet"), 16),
             ("ResNet-style 1-D, MNIST-1D, widths 16/32/64", dict(dim=1, input_size=40, widths=[16, 32, 64],
                                                                 blocks_per_stage=1, arch="resnet"), 256)],
}
#: fresh processes per model (the replicates: a process's memory layout moves a conv's speed by more than the
#: folding saves, so the interval is over processes), judged rounds per process, calls per round
C36_PROCESSES = {"quick": 5, "full": 7}  # odd: a median is one process
C36_ROUNDS = {"quick": 10, "full": 15}
C36_WARMUP_ROUNDS = 2
C36_CALLS = 5  # calls per timing; a round's time is their median
C36_NETS = 4  # nets (random statistics and affine) checked for exactness per dtype
C36_EXACT = {"float64": 1e-12, "float32": 1e-5}  # max |folded - original| / max |original|


def _random_bn_state(net, gen) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so folding has work to do."""
    import torch

    from ..tools.precise import batchnorm_layers

    with torch.no_grad():
        for m in batchnorm_layers(net).values():
            c = m.running_mean.numel()
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            m.weight.copy_(torch.randn(c, generator=gen) * 0.5 + 1)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.5)


def _c36_net(model: dict, seed: int, dtype):
    import torch

    torch.manual_seed(seed)
    net = build_net({**model, "norm": "batchnorm"}).to(dtype)
    _random_bn_state(net, torch.Generator().manual_seed(seed))
    return net.eval()


def _c36_input(model: dict, batch: int, seed: int, dtype):
    import torch

    shape = (batch, 1, *(model["input_size"],) * model["dim"])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)


def _steady_allocator() -> bool:
    """glibc: keep freed memory in the process (no mmap, no trimming), so a timed call reuses its pages.

    Otherwise every activation can be a fresh mmap whose page faults (slow on a VM) dominate the time, and
    folding, which allocates one output less per BatchNorm, looks far faster than its compute saving.  Set
    only in the child process that times (a worker's allocator stays as it is for the runs after it).
    """
    import ctypes
    import ctypes.util
    import platform

    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2 ** 31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return False


def _time_fold(config: dict, seed: int, threads: int, steady: bool) -> dict:
    """In a fresh process: interleaved rounds of the original and the folded net (float32, no grad)."""
    import torch

    from ..tools import fold_batchnorm

    torch.set_num_threads(threads)
    steady = _steady_allocator() if steady else False
    model, batch = config["model"], config["batch"]
    net = _c36_net(model, seed, torch.float32)
    folded = fold_batchnorm(net)
    x = _c36_input(model, batch, seed, torch.float32)
    fns = {"original": net, "folded": folded}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            for _ in range(2):
                f(x)
        for r in range(config["warmup_rounds"] + config["rounds"]):
            order = ("original", "folded") if r % 2 == 0 else ("folded", "original")
            per: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(config["calls"]):  # alternate within the round too: a disturbance hits both
                for k in order:
                    t0 = time.perf_counter()
                    fns[k](x)
                    per[k].append((time.perf_counter() - t0) * 1e3)
            if r >= config["warmup_rounds"]:
                for k in fns:
                    times[k].append(statistics.median(per[k]))
    return {**times, "steady_allocator": steady}


def fold_run(config: dict, seed: int) -> dict:
    """Exactness of fold_batchnorm in float64 and float32 on several nets, then CPU inference timing of one net
    before and after folding: interleaved rounds in each of several fresh processes with freed memory reused
    (judged), and in one with the allocator as it is (fresh pages' faults included, reported)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import torch

    from ..tools import fold_batchnorm

    model = config["model"]
    errors: dict[str, list[float]] = {}
    folded_count = []
    for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
        for k in range(config["nets"]):
            net = _c36_net(model, 1000 * seed + k, dtype)
            x = _c36_input(model, 8, 1000 * seed + k, dtype)
            folded, report = fold_batchnorm(net, report=True)
            with torch.no_grad():
                a, b = net(x), folded(x)
            errors.setdefault(name, []).append(((a - b).abs().max() / a.abs().max()).item())
            folded_count.append([sum(e.folded for e in report), len(report)])
    threads = torch.get_num_threads()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        processes = [pool.submit(_time_fold, config, seed, threads, True).result()
                     for _ in range(config["processes"])]
        fresh = pool.submit(_time_fold, config, seed, threads, False).result()
    return {"errors": errors, "folded": folded_count, "processes": processes, "fresh_pages": fresh,
            "threads": threads, "torch": torch.__version__}


def _c36_grid(mode):
    return [(label, {"model": model, "batch": batch, "nets": C36_NETS, "processes": C36_PROCESSES[mode],
                     "rounds": C36_ROUNDS[mode], "warmup_rounds": C36_WARMUP_ROUNDS, "calls": C36_CALLS})
            for label, model, batch in C36_MODELS[mode]]


def _log_mean(xs) -> float:
    return mean(math.log(x) for x in xs)


def _ratio_ci(iv: dict) -> str:
    if not (math.isfinite(iv["lo"]) and math.isfinite(iv["hi"])):
        return f"{math.exp(iv['estimate']):.3f} (no CI)"
    return f"{math.exp(iv['estimate']):.3f} [{math.exp(iv['lo']):.3f}, {math.exp(iv['hi']):.3f}]"


def _c36_verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "no records", "needs the folding runs",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the folding runs")])
    parts: dict[str, Verdict] = {}
    for dtype, bound in C36_EXACT.items():
        worst = max(max(r["result"]["errors"][dtype]) for r in records)
        every = all(f == n and n > 0 for r in records for f, n in r["result"]["folded"])
        ok = worst <= bound and every
        status = "supported" if ok else "not supported"
        rule = (f"supported if every BatchNorm of the ResNet-style nets was folded and max |folded - original| / "
                f"max |original| <= {bound:g} in {dtype} over {C36_NETS} nets per configuration (random statistics "
                "and affine); otherwise not supported")
        what = f"{dtype}: max relative output difference after folding"
        parts[f"exact in {dtype}"] = Verdict(status, f"{what} {fmt(worst)} (every BN folded: {every})", rule,
                                             {"max_relative_difference": worst, "every_bn_folded": every},
                                             key_number=f"{dtype} {fmt(worst)}",
                                             tests=[exact(worst, what=what, status=status, rule=rule,
                                                          n=len(records) * C36_NETS)])
    ratios = []
    for r in records:
        procs = r["result"]["processes"]
        logs = [_log_mean(p["folded"]) - _log_mean(p["original"]) for p in procs]  # per process
        v = compare([_log_mean(p["folded"]) for p in procs], [_log_mean(p["original"]) for p in procs],
                    expect="less", paired=True, what=f"{r['name']}, per fresh process (mean over its rounds)",
                    label_a="log t_folded", label_b="log t_original")
        iv = v.tests[0]
        est = iv["estimate"]
        text = _ratio_ci(iv)
        slower = sum(x > 0 for x in logs)
        orig = statistics.median(t for p in procs for t in p["original"])
        fold = statistics.median(t for p in procs for t in p["folded"])
        line = (f"{r['name']} (batch {r['config']['batch']}): {text}, i.e. {1 / math.exp(est):.2f}x faster "
                f"(median {fmt(orig)} -> {fmt(fold)} ms; {slower} of {len(logs)} processes slower)")
        fresh = r["result"].get("fresh_pages")
        if fresh:
            fp = interval("", [math.log(x) for x in fresh["folded"]], [math.log(x) for x in fresh["original"]],
                          paired=True).to_dict()
            line += (f"; with fresh pages (allocator as it is, page faults included; reported, one process, per "
                     f"round): {_ratio_ci(fp)} ({fmt(statistics.median(fresh['original']))} -> "
                     f"{fmt(statistics.median(fresh['folded']))} ms)")
        ratios.append(line)
        v.key_number = f"t_folded / t_original {text}"
        v.numbers["per_process_log_ratio"] = logs
        parts[f"faster: {r['name']}"] = v
    v = combine_verdicts(parts)
    v.summary = ("folded / original CPU inference time (geometric mean over fresh processes of each one's "
                 "geometric-mean ratio over its rounds, 95% t interval, paired by process): " + "; ".join(ratios)
                 + ". Exactness: " + "; ".join(p.summary for k, p in parts.items() if k.startswith("exact")))
    v.rule = ("exactness, per dtype (deterministic, zero-width intervals); speed, per timed model: each fresh "
              "process's mean log(t_folded / t_original) over its rounds (the two called alternately within a "
              "round, which goes first alternating by round; freed memory reused, so page faults do not count); the "
              "95% t interval over processes (the replicates: now and then a process runs one of the two nets "
              "20-30% slower throughout, a layout effect the rounds within it cannot average out) wholly below 0: "
              "supported; wholly above: not supported; otherwise inconclusive. " + v.rule)
    v.key_number = "; ".join(ratios[:1]) + "; " + "; ".join(p.key_number for k, p in parts.items()
                                                          if k.startswith("exact"))
    v.versus_paper = ("paper: none gives a number for this; folding is standard in inference toolchains (torch.ao's "
                      "fuse_modules, TensorRT, ONNX Runtime); here: " + "; ".join(ratios) + "; one CPU thread, "
                      "float32, no torch.compile")
    return v


def _c36_plot(records, verdict, prefix):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, r in enumerate(records):
        for j, p in enumerate(r["result"]["processes"]):
            ax.plot([a / b for a, b in zip(p["folded"], p["original"])], marker=".", color=f"C{i}", alpha=0.7,
                    label=r["name"] if j == 0 else None)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("round (one line per fresh process)")
    ax.set_ylabel("t_folded / t_original (< 1: folding is faster)")
    ax.set_title("CPU inference time after folding BatchNorm into the convs", fontsize=9)
    ax.legend(fontsize=7)
    return [save_fig(fig, prefix + "-timing.png")]


register(experiment(
    claim="C36", title="Folding BatchNorm into the preceding conv is exact and speeds up CPU inference",
    statement="Folding an eval-mode BatchNorm into the convolution before it is exact (to float rounding) and "
              "speeds up CPU inference.",
    setup="normlab's ConvNet in resnet mode (every BatchNorm right after a conv) with random running statistics "
          "and affine parameters, eval mode, folded by normlab.fold_batchnorm. Exactness: 4 nets per timed "
          f"configuration and dtype, max |folded - original| / max |original| <= {C36_EXACT['float64']:g} (float64), "
          f"{C36_EXACT['float32']:g} (float32), every BN folded. Timing (run alone, one thread, float32, no grad): "
          "quick, a 2-D ResNet-style net on 32x32 inputs (widths 16/32/64), batch 16; full adds widths 32/64/128 "
          "with 2 blocks per stage and the suite's 1-D MNIST-1D net at batch 256; each model is timed in "
          f"{C36_PROCESSES['quick']} (quick) / {C36_PROCESSES['full']} (full) fresh processes with freed memory "
          "reused (glibc: no mmap, no trimming): called twice, "
          f"{C36_WARMUP_ROUNDS} warm-up rounds discarded, then {C36_ROUNDS['quick']} / {C36_ROUNDS['full']} rounds "
          f"of {C36_CALLS} calls each, original and folded alternating (which goes first alternates by round), "
          "median per round; once more in one process with the allocator as it is (fresh pages' faults included; "
          "reported). Judged per model on the 95% t interval over processes of the mean log(t_folded / "
          "t_original). One seed (the processes are the replicates).",
    grid=_c36_grid, seeds={"quick": 1, "full": 1}, run=fold_run, verdict=_c36_verdict, plot=_c36_plot,
    exclusive=True,
    paper="No paper number; the folding identity W' = W gamma / sqrt(var + eps), b' = (b - mean) gamma / sqrt(var + "
          "eps) + beta is what inference toolchains apply (torch.ao fuse_modules, TensorRT).",
))


# ------------------------------------------------------------------------ C37
#: arm -> (steps per mode, lr schedule, BatchNorm momentum): the reference is trained to the end of a cosine schedule
#: with torch's momentum 0.1; "short" stops early at a constant lr (an intermediate checkpoint); "lagging EMA" keeps a
#: long average (momentum 0.01: a horizon of ~100 steps) over weights that keep moving (a constant lr: with a cosine
#: decay the weights settle and, over 600 steps, even that average catches up)
C37_ARMS = {
    "trained, EMA momentum 0.1": ({"quick": 300, "full": 600}, "cosine", 0.1),
    "short (stopped early, constant lr)": ({"quick": 60, "full": 100}, "constant", 0.1),
    "lagging EMA (momentum 0.01, constant lr)": ({"quick": 300, "full": 600}, "constant", 0.01),
}
C37_REFERENCE = "trained, EMA momentum 0.1"
C37_BATCH = 32  # the recomputing pass normalizes at the training batch size, over the whole training set
C37_MARGIN = 0.005  # "match": the recomputed statistics may lose at most half an accuracy point
C37_MIN_GAIN = 0.01  # "most when ...": the gain must exceed the reference's by a point


def _c37_grid(mode):
    runs = []
    for name, (steps, schedule, momentum) in C37_ARMS.items():
        runs.append((name, {"model": model_cfg(mode, arch="resnet", norm="batchnorm", norm_momentum=momentum),
                            "train": train_cfg(mode, steps=steps[mode], schedule=schedule), "batch": 32,
                            "recompute_batch": C37_BATCH}))
    return runs


def precise_run(config: dict, seed: int) -> dict:
    """Train a BatchNorm ConvNet; test accuracy with its EMA running statistics and with statistics recomputed over
    one pass of the (shuffled) training set in batches of the training size; how far the two statistics differ."""
    import torch

    from ..tools import recompute_batchnorm_stats
    from ..tools.precise import batchnorm_layers

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


def _c37_verdict(records) -> Verdict:
    g = by_name(records)
    parts: dict[str, Verdict] = {}
    for name in C37_ARMS:
        gains = [_gain(r) for r in sorted(g.get(name, []), key=lambda r: r["seed"])]
        v = threshold(gains, above=-C37_MARGIN, what=f"{name}: test accuracy, recomputed - EMA statistics")
        parts[f"match or beat: {name}"] = v
    ref = g.get(C37_REFERENCE, [])
    for name in C37_ARMS:
        if name == C37_REFERENCE:
            continue
        a, b = paired_by_seed(g.get(name, []), ref, _gain)
        parts[f"larger gain: {name}"] = compare(a, b, expect="greater", paired=True, min_effect=C37_MIN_GAIN,
                                                what="gain of recomputed over EMA statistics", label_a=name,
                                                label_b=C37_REFERENCE)
    v = combine_verdicts(parts)
    lines = []
    for name in C37_ARMS:
        rs = g.get(name, [])
        drift = [mean(d["log_var"] for d in r["result"]["stat_drift"].values()) for r in rs]
        lines.append(f"{name}: EMA {fmt(mean(r['result']['acc_ema'] for r in rs))} -> recomputed "
                     f"{fmt(mean(r['result']['acc_precise'] for r in rs))} (|log var ratio| {fmt(mean(drift), 2)})")
    v.summary = "mean test accuracy: " + "; ".join(lines) + ". Parts: " + v.summary
    v.rule = (f"per arm, 'match or beat': the t interval of the per-seed gain (recomputed - EMA accuracy, same trained "
              f"net) lies wholly above -{C37_MARGIN} (supported), wholly below (not supported); 'most when short or "
              f"lagging': each of those arms' gain minus the reference's (paired by seed) above {C37_MIN_GAIN}. "
              + v.rule)
    v.key_number = "; ".join(f"{k}: {p.key_number}" for k, p in parts.items())
    v.versus_paper = ("paper: Wu & Johnson 2021 report precise statistics matching or beating EMA, with the largest "
                      "gains for short training, small EMA momentum and large-learning-rate phases; here: "
                      + "; ".join(lines) + "; scale: a residual 1-D CNN on MNIST-1D, statistics recomputed over the "
                      "4000 training signals in batches of 32")
    return v


register(experiment(
    claim="C37", title="Recomputed population statistics match or beat the EMA",
    statement="BatchNorm statistics recomputed over a pass of training data with the final weights (precise BN) "
              "match or beat the EMA running statistics, most when training was short or the EMA lags the weights.",
    setup="Residual 1-D CNN with BatchNorm on MNIST-1D (quick widths 16/32, full 16/32/64), AdamW lr 3e-3 with 10% "
          "warm-up, three arms: trained (300 quick / 600 full steps, cosine, torch's momentum 0.1), short (60 / 100 "
          "steps at a constant lr: an intermediate checkpoint) and lagging EMA (300 / 600 steps at a constant lr, "
          "momentum 0.01: a ~100-step average over moving weights); seeds: quick 4, full 5. Per trained net: test "
          "accuracy with its EMA statistics, then with normlab.recompute_batchnorm_stats over the whole training "
          "set in shuffled batches of 32 (BN normalizing with batch statistics, as in training). Judged: per arm, "
          f"recomputed - EMA above -{C37_MARGIN} (t interval over seeds); the short and lagging arms' gains above "
          f"the trained arm's by {C37_MIN_GAIN} (paired by seed).",
    grid=_c37_grid, seeds={"quick": 4, "full": 5}, run=precise_run, verdict=_c37_verdict,
    plot=lambda records, verdict, prefix: [bars(
        {f"{n}: {k}": [r["result"][key] for r in rs] for n, rs in by_name(records).items()
         for k, key in (("EMA", "acc_ema"), ("recomputed", "acc_precise"))},
        prefix + "-acc.png", "EMA vs recomputed BatchNorm statistics", "test accuracy")],
    paper="Wu & Johnson 2021 (Rethinking 'Batch' in BatchNorm): PreciseBN's population statistics are more accurate "
          "than EMA's, which lag the weights under large learning rates, small momentum or short training.",
))


# ------------------------------------------------------------------------ C38
C38_STEPS = {"quick": 75, "full": 250}
C38_BATCH_FREE = ("frn", "evonorm_s0", "groupnorm")
C38_BATCH_DEPENDENT = ("batchnorm", "evonorm_b0")
C38_ROUNDING = 1e-5  # below this relative logit change the two agree to float32 rounding
C38_VISIBLE = 1e-2  # above it: a real discrepancy


def _c38_grid(mode):
    return [(norm, {"model": model_cfg(mode, norm=norm), "norm": norm,
                    "train": train_cfg(mode, steps=C38_STEPS[mode])})
            for norm in (*C38_BATCH_FREE, *C38_BATCH_DEPENDENT)]


def _c38_verdict(records) -> Verdict:
    g = by_name(records)
    parts: dict[str, Verdict] = {}
    for norm in C38_BATCH_FREE:
        worst = [max(r["result"]["eval_vs_train"], r["result"]["batch_composition"]) for r in g.get(norm, [])]
        parts[f"{norm}: identical"] = threshold(
            worst, below=C38_ROUNDING, what=f"{norm} relative logit change (largest of eval vs in a batch, and batch "
                                            "vs batch)")
    for norm in C38_BATCH_DEPENDENT:
        for key, what in (("eval_vs_train", "eval mode vs inside a random training batch"),
                          ("batch_composition", "a random batch vs a batch of its own class")):
            parts[f"{norm}: {what}"] = threshold([r["result"][key] for r in g.get(norm, [])], above=C38_VISIBLE,
                                                 what=f"{norm} relative logit change, {what}")
    v = combine_verdicts(parts)
    v.rule = (f"batch-free norms: the t interval of the larger relative logit change wholly below {C38_ROUNDING:g} "
              f"(float32 rounding); BatchNorm and EvoNorm-B0: both changes wholly above {C38_VISIBLE:g}; every part "
              "must hold. " + v.rule)
    v.key_number = "; ".join(f"{k}: {p.key_number}" for k, p in parts.items())
    return v


def _c38_plot(records, prefix) -> str:
    """The two relative logit changes per norm, on a log axis (batch-free norms sit at float32 rounding)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    groups = by_name(records)
    names = [n for n in (*C38_BATCH_FREE, *C38_BATCH_DEPENDENT) if groups.get(n)]
    for j, (label, key) in enumerate((("eval vs in a batch", "eval_vs_train"),
                                      ("batch vs batch", "batch_composition"))):
        for i, n in enumerate(names):
            vals = [max(r["result"][key], 1e-12) for r in groups[n]]
            x = i + (j - 0.5) * 0.3
            ax.bar(x, math.exp(mean(math.log(v) for v in vals)), width=0.28, color=f"C{j}", alpha=0.4,
                   label=label if i == 0 else None)
            ax.scatter([x] * len(vals), vals, color=f"C{j}", s=10, zorder=3)
    ax.axhline(C38_ROUNDING, color="k", ls=":", lw=0.8)
    ax.axhline(C38_VISIBLE, color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("relative logit change ||a - b|| / ||b||")
    ax.set_title("One signal's logits across modes and batches (dots: seeds; dotted: float32 rounding bound)",
                 fontsize=8)
    ax.legend(fontsize=7)
    return save_fig(fig, prefix + "-gap.png")


register(experiment(
    claim="C38", title="Batch-free normalizers have no train/eval discrepancy; BatchNorm and EvoNorm-B0 do",
    statement="FRN, EvoNorm-S0 and GroupNorm give a sample the same output in training and eval mode and whatever "
              "its batch; BatchNorm and EvoNorm-B0 do not.",
    setup=f"VGG-like 1-D CNN with FRN + TLU, EvoNorm-S0 (4 groups), GroupNorm (4 groups), BatchNorm or EvoNorm-B0, "
          f"trained {C38_STEPS['quick']} (quick) / {C38_STEPS['full']} (full) steps on MNIST-1D; seeds: quick 4, "
          "full 5; for 32 test signals, the logits in eval mode, in training mode inside 31 random training signals "
          "and inside 31 of its own class (training-mode passes on a copy): relative change ||a - b|| / ||b|| "
          f"averaged per seed (C10's measurement). Judged by 95% t intervals over seeds: below {C38_ROUNDING:g} for "
          f"the batch-free norms (the larger of the two changes), above {C38_VISIBLE:g} for both changes of "
          "BatchNorm and EvoNorm-B0.",
    grid=_c38_grid, seeds={"quick": 4, "full": 5}, run=train_eval_run, verdict=_c38_verdict,
    plot=lambda records, verdict, prefix: [_c38_plot(records, prefix)],
    paper="Singh & Krishnan 2019 (FRN) and Liu et al. 2020 (EvoNorm-S0) are independent of the batch by "
          "construction; EvoNorm-B0 keeps BatchNorm's batch variance and its moving average.",
))

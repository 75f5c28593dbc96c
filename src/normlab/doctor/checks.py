"""The checks: one function per id, registered in :data:`CHECKS` in the order the report lists them.

Each check reads the :class:`~normlab.doctor.engine.Context` (the model, the
observed forward, the norms found by probing) and returns findings.  Where a
measurement decides, the message gives the number; the claim id names the
experiment of normlab's evidence suite that backs the advice.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .engine import LOW_PRECISION, Context, NormInfo
from .probe import class_kind, effective_gamma, eps_of, gamma_of, is_sync_batchnorm, is_weighted_class, rms
from .report import Finding
from .trace import Call

__all__ = ["Check", "CHECKS", "check_ids"]

SMALL_BATCH = 16  # C09: below about 16 samples per statistic BatchNorm's accuracy falls (Wu & He 2018)
MOMENTUM_KERAS = 0.5  # torch's momentum weighs the new batch; >= 0.5 means the last batch or two dominate
LOGIT_WARN = 1e3  # C26: attention logits this far beyond O(1); runs that passed ~1e4 diverged
OUTLIER_SHARE = 0.5  # C20: one feature holds more than half of a row's mean square
STALE_Z = 1.0  # C15: running mean more than one batch std away (median over channels) ...
STALE_RATIO = 4.0  # ... or running variance off by 4x (std off by 2x)
DROPOUT_SHIFT = 1.1  # C14: train/eval variance ratio of a BatchNorm's input worth reporting


@dataclass(frozen=True)
class Check:
    """A registered check: its id, what it finds, the claim behind it, and what it needs to run."""

    id: str
    title: str
    claim: str | None
    needs: str  # "static" (the model alone), "inputs", "optimizer", "causal"
    fn: Callable[[Context], list[Finding]]


CHECKS: dict[str, Check] = {}


def check_ids() -> list[str]:
    return list(CHECKS)


def _register(id: str, title: str, claim: str | None = None, needs: str = "static"):
    def deco(fn: Callable[[Context], list[Finding]]) -> Callable[[Context], list[Finding]]:
        CHECKS[id] = Check(id, title, claim, needs, fn)
        return fn
    return deco


def _f(ctx: Context, check: str, severity: str, name: str, message: str, fix: str,
       claim: str | None | bool = True, autofix: tuple | None = None) -> Finding:
    c = CHECKS[check].claim if claim is True else (claim or None)
    return Finding(check, severity, ctx.full(name), message, fix, c, autofix)


def _q(ctx: Context, name: str) -> str:
    """A module's name for a message: its full dotted name, quoted."""
    return f"'{ctx.full(name)}'" if name or ctx.prefix else "the model"


def _g(v: float) -> str:
    """A number for a message: 3 significant digits."""
    if v != v or v in (math.inf, -math.inf):
        return str(v)
    return f"{v:.3g}"


def _top_level_items(text: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur.strip())
    return items


def _desc(m: nn.Module) -> str:
    """A short constructor-like description: ``BatchNorm2d(8)``, ``Conv2d(3, 8, kernel_size=(3, 3))``."""
    try:
        items = _top_level_items(m.extra_repr())
    except Exception:  # noqa: BLE001
        items = []
    keep = [i for i in items if "=" not in i or i.startswith("kernel_size=")] or items[:2]
    text = ", ".join(keep)
    return f"{type(m).__name__}({text})" if len(text) <= 40 else type(m).__name__


def _batch_norms(ctx: Context) -> list[NormInfo]:
    return [n for n in ctx.norms.values() if n.batch_coupled or n.kind == "batch"]


def _sequential_pairs(ctx: Context):
    """(name, module, next name, next module) of neighbours in every nn.Sequential (static checks)."""
    for name, m in ctx.user_modules.items():
        if isinstance(m, nn.Sequential):
            kids = list(m.named_children())
            for (a, ma), (b, mb) in zip(kids, kids[1:]):
                pre = f"{name}." if name else ""
                yield pre + a, ma, pre + b, mb


# ---------------------------------------------------------------------------------------------- static checks
@_register("bn-momentum-convention", "BatchNorm momentum in the TF/Keras convention (>= 0.5)")
def bn_momentum(ctx: Context) -> list[Finding]:
    out = []
    for name, m in ctx.user_modules.items():
        mom = getattr(m, "momentum", None)
        if not isinstance(getattr(m, "running_mean", None), Tensor) or not isinstance(mom, (int, float)) \
                or isinstance(mom, bool) or not getattr(m, "track_running_stats", True):
            continue
        if mom >= MOMENTUM_KERAS:
            # a warning, not an error: true and auto-fixable, but eval still works, with running statistics that
            # are about the last batch; Hugging Face's MobileNetV2 (0.997) and EfficientNet (0.99) ship it, and a
            # CI gate on errors must pass those popular models
            out.append(_f(ctx, "bn-momentum-convention", "warning", name,
                          f"{_desc(m)} has momentum={mom:g}: in torch running = (1 - momentum) * running + momentum * "
                          f"batch, so its running statistics are {mom * 100:.3g}% the last batch (torch's default is 0.1); "
                          f"{mom:g} is the TensorFlow/Keras convention, where momentum weighs the old value",
                          f"momentum={1 - mom:.3g} (torch's equivalent of Keras's {mom:g}; torch's default 0.1 suits "
                          "most training)", autofix=("set", "momentum", round(1 - mom, 9))))
        elif mom == 0 and m.training:
            out.append(_f(ctx, "bn-momentum-convention", "warning", name,
                          f"{_desc(m)} has momentum=0: its running statistics never move from their initial values, "
                          "and eval mode normalizes with them",
                          "momentum=0.1 (torch's default), or None for a cumulative average",
                          autofix=("set", "momentum", 0.1)))
    return out


@_register("bn-eval-batch-stats", "BatchNorm without running statistics: eval depends on the batch", "C10")
def bn_eval_batch_stats(ctx: Context) -> list[Finding]:
    out = []
    for n in ctx.norms.values():
        if not n.batch_coupled or not n.eval_batch_coupled:
            continue
        how = "track_running_stats=False" if getattr(n.module, "track_running_stats", True) is False else \
            "measured: its eval-mode output still pools dim 0"
        out.append(_f(ctx, "bn-eval-batch-stats", "warning", n.name,
                      f"{_desc(n.module)} ({how}) normalizes with the statistics of whatever batch it gets, in eval "
                      "mode too: a sample's prediction depends on the other samples of its batch, and a batch of one "
                      "gives beta (C10: BatchNorm's train/eval discrepancy)",
                      "track_running_stats=True (torch's default) so that eval uses running statistics; or a "
                      "batch-free norm (GroupNorm, LayerNorm) if the batch coupling is not wanted"))
    return out


def _stats_dtype(ctx: Context, n: NormInfo) -> torch.dtype:
    low = ctx._cache.get("lowprec", {}).get(n.name)
    if low is not None:
        return low
    dt = next((c.x_dtype for c in n.calls if c.x_dtype is not None), None)
    if dt is None:
        g = gamma_of(n.module)
        dt = g[1].dtype if g else torch.float32
    return torch.float64 if dt == torch.float64 else torch.float32


@_register("eps-too-small", "eps = 0, or too small for the dtype of the statistics", "C29")
def eps_too_small(ctx: Context) -> list[Finding]:
    _lowprec_evidence(ctx)  # the statistics' dtype, where they are computed in low precision
    out = []
    for n in ctx.norms.values():
        eps, attr = eps_of(n.module)
        sdt = _stats_dtype(ctx, n)
        if isinstance(eps, (int, float)) and eps == 0:
            out.append(_f(ctx, "eps-too-small", "error", n.name,
                          f"{_desc(n.module)} has {attr}=0: a constant row (or channel) has variance 0 and the "
                          "output is 0/0 = NaN, and near-constant rows blow rounding noise up to unit scale (C29)",
                          f"{attr}=1e-5 (torch's default; 1e-6 for ConvNeXt-style LayerNorm)",
                          autofix=("set", attr, 1e-5) if attr else None))
        elif isinstance(eps, (int, float)) and eps > 0 and float(torch.tensor(eps, dtype=sdt)) == 0:
            out.append(_f(ctx, "eps-too-small", "error", n.name,
                          f"{_desc(n.module)} has {attr}={eps:g}, which is 0 in {str(sdt)[6:]}, the dtype its "
                          "statistics are computed in: constant rows give NaN (C29)",
                          f"compute the statistics in float32, or use {attr} >= "
                          f"{_g(float(torch.finfo(sdt).tiny))}", autofix=("set", attr, _eps_needed(sdt))))
        elif n.probe is not None and n.probe.zeros_nonfinite:
            dt = n.probe.zeros_dtype or n.probe.dtype
            need = _eps_needed(dt)
            settable = attr is not None and isinstance(eps, (int, float)) and eps < need
            out.append(_f(ctx, "eps-too-small", "error", n.name, _eps_nonfinite_message(n, dt, eps, attr),
                          _eps_nonfinite_fix(dt, eps, attr), autofix=("set", attr, need) if settable else None))
    return out


def _eps_needed(dt: torch.dtype) -> float:
    """An eps that ``dt`` holds as a normal number, with room: 1e-5, or 10x the dtype's smallest normal."""
    return max(1e-5, float(f"{10 * torch.finfo(dt).tiny:.0e}")) if dt.is_floating_point else 1e-5


def _eps_nonfinite_message(n: NormInfo, dt: torch.dtype, eps, attr: str | None) -> str:
    name = str(dt)[6:]
    if attr is None:
        held = "it has no eps that normlab can read"
    elif isinstance(eps, (int, float)):
        stored = float(torch.tensor(eps, dtype=dt)) if dt.is_floating_point else eps
        held = f"{attr}={eps:g} is {stored:g} in {name}" + (
            f", below {name}'s smallest normal number {_g(float(torch.finfo(dt).tiny))}"
            if dt.is_floating_point and 0 < abs(eps) < torch.finfo(dt).tiny else "")
    else:
        held = f"{attr}={eps}"
    return (f"{_desc(n.module)} returns NaN/inf for an all-zero input in {name}, the dtype it runs in (measured; "
            f"{held}): nothing keeps the division by the standard deviation finite there (C29)")


def _eps_nonfinite_fix(dt: torch.dtype, eps, attr: str | None) -> str:
    need = _eps_needed(dt)
    if attr is None:
        return f"add eps to the variance inside the square root ({need:g} or more in {str(dt)[6:]})"
    if isinstance(eps, (int, float)) and eps >= need:
        return (f"{attr}={eps:g} is enough in {str(dt)[6:]} if it is added before the square root: compute the "
                "statistics in float32 (x.float()), add eps there, and cast the result back")
    return f"{attr}={need:g} (what {str(dt)[6:]} needs), or compute the statistics in float32 and cast back"


@_register("frozen-bn-updates", "frozen BatchNorm parameters, but the layer still trains its statistics", "C15")
def frozen_bn_updates(ctx: Context) -> list[Finding]:
    out = []
    for name, m in ctx.user_modules.items():
        if not isinstance(getattr(m, "running_mean", None), Tensor) or not getattr(m, "track_running_stats", False):
            continue
        params = [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if isinstance(p, Tensor)]
        if not params or any(p.requires_grad for p in params) or getattr(m, "frozen", False) or not m.training:
            continue
        if getattr(m, "momentum", 0.1) == 0:
            continue
        moved = ctx.moved.get(name)
        seen = f"; in the example's training-mode forward its running_mean moved by {_g(moved)}" if moved else ""
        out.append(_f(ctx, "frozen-bn-updates", "warning", name,
                      f"{_desc(m)} has requires_grad=False on gamma/beta but is in training mode, so each forward "
                      f"still replaces its running statistics with batch statistics{seen}: the frozen layer drifts "
                      "(and normalizes with batch statistics while training)",
                      "keep it in eval mode: call .eval() on it after every model.train(), or nl.freeze_batchnorm"
                      "(model), which keeps BatchNorm frozen through .train() (C15: freezing BN matters when "
                      "fine-tuning on shifted data)", autofix=("freeze-bn",)))
    return out


@_register("norm-weight-decay", "weight decay on norm gamma/beta", needs="optimizer")
def norm_weight_decay(ctx: Context) -> list[Finding]:
    wd_of: dict[int, tuple[float, int]] = {}
    for i, group in enumerate(getattr(ctx.optimizer, "param_groups", [])):
        wd = float(group.get("weight_decay", 0.0) or 0.0)
        for p in group["params"]:
            wd_of[id(p)] = (wd, i)
    out = []
    for n in ctx.norms.values():
        decayed = []
        for pname, p in n.module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) not in wd_of or wd_of[id(p)][0] <= 0:
                continue
            if pname == "weight" and getattr(n.module, "zero_centered_gamma", False):
                continue  # stored as an offset from 1: decay pulls gamma toward 1, by design
            decayed.append((pname, *wd_of[id(p)]))
        if not decayed:
            continue
        wd, group = decayed[0][1], decayed[0][2]
        names = {"gamma" if p in ("weight", "gamma", "scale", "g") else "beta" if p in ("bias", "beta") else p
                 for p, _, _ in decayed}
        what = " and ".join(sorted(names, key=lambda p: (p != "gamma", p != "beta", p)))
        out.append(_f(ctx, "norm-weight-decay", "warning", n.name,
                      f"the optimizer decays {_desc(n.module)}'s {what} (weight_decay={wd:g}, param group {group}): "
                      f"{_decay_effect(names)}; norm parameters are normally left out of weight decay",
                      f"build the optimizer from nl.param_groups(model, weight_decay={wd:g}), which leaves norm "
                      "parameters and biases out of decay, e.g. torch.optim.AdamW(nl.param_groups(model, "
                      f"{wd:g}), lr=...)", autofix=("weight-decay", wd)))
    return out


def _decay_effect(names: set[str]) -> str:
    parts = []
    if "gamma" in names:
        parts.append("decay pulls gamma toward 0, shrinking the normalized signal")
    if "beta" in names:
        parts.append("decay pulls beta toward 0, an offset it has no reason to shrink")
    rest = sorted(names - {"gamma", "beta"})
    if rest:
        parts.append(f"decay pulls {', '.join(rest)} toward 0")
    return "; ".join(parts)


@_register("ddp-without-syncbn", "BatchNorm under (Distributed)DataParallel with small per-process batches", "C16")
def ddp_without_syncbn(ctx: Context) -> list[Finding]:
    if ctx.wrapper is None:
        return []
    world = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
    procs = f"{world} processes" if world else "several processes"
    out = []
    for n in _batch_norms(ctx):
        if is_sync_batchnorm(n.module):
            continue
        batch = next((c.x_shape[0] for c in n.calls if c.x_shape), None)
        if batch is not None and batch >= SMALL_BATCH:
            continue
        seen = f"its own {batch} samples" if batch is not None else "its own part of the batch"
        out.append(_f(ctx, "ddp-without-syncbn", "warning" if batch is not None else "info", n.name,
                      f"the model is wrapped in {ctx.wrapper} ({procs}) and {_desc(n.module)} normalizes each "
                      f"process's {seen}: its statistics are those of the per-process batch, not the global one "
                      f"(C16: SyncBatchNorm equals BatchNorm over the global batch and rescues small per-process "
                      "batches)" + ("" if batch is not None else "; fine if every process sees 16 or more samples"),
                      "convert before wrapping: model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) "
                      "(CUDA/NCCL), or use normlab.SyncBatchNorm (also CPU/gloo); DataParallel: move to "
                      "DistributedDataParallel with SyncBatchNorm",
                      autofix=("syncbn",) if ctx.wrapper == "DistributedDataParallel" else None))
    return out


# ---------------------------------------------------------------------------------------------- wiring
def _removes_channel_bias(ctx: Context, n: NormInfo, c: Call, channel_dim: int) -> bool:
    """Measured: adding a constant per producer channel to the norm's input leaves its output unchanged."""
    if c.x is None or c.x_key is None:
        return False
    x = c.x.double()
    shape = [1] * x.ndim
    shape[channel_dim] = x.shape[channel_dim]
    b = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(x.device)
    m = copy.deepcopy(n.work).double().train()
    args, kwargs = list(c.args), dict(c.kwargs)

    def call(t: Tensor):
        a, kw = list(args), dict(kwargs)
        if isinstance(c.x_key, int):
            a[c.x_key] = t
        else:
            kw[c.x_key] = t
        return m(*a, **kw)
    try:
        with torch.no_grad():
            y0, y1 = call(x), call(x + b)
    except Exception:  # noqa: BLE001 -- e.g. a batch of one in training mode: not measurable
        return False
    if not isinstance(y0, Tensor) or not isinstance(y1, Tensor):
        return False
    return bool((y0 - y1).abs().max() <= 1e-6 * (y0.abs().max() + 1e-30))


@_register("bias-before-norm", "a conv/linear bias that the next norm removes")
def bias_before_norm(ctx: Context) -> list[Finding]:
    """Decided by measurement: the bias is reported when adding any constant per channel leaves the norm's output
    unchanged (BatchNorm, InstanceNorm, GroupNorm with one channel per group: a statistic per channel).  A
    LayerNorm over the features, or a channels-first one, removes only the bias's mean across the channels and
    keeps the rest, so there the bias is a real parameter; GroupNorm with several channels per group removes
    each group's mean of it: a note."""
    out: list[Finding] = []
    seen: set[str] = set()
    drops: list[tuple[str, str]] = []  # (layer, norm) whose bias the norm removes
    fix = ("bias=False on the {layer}: the norm's beta does the same job (a {norm} subtracts every per-channel "
           "constant, so the bias gets no gradient and only costs parameters)")
    group_fix = ("nothing is wrong; bias=False is the usual choice before GroupNorm (its beta shifts each channel "
                 "after the normalization)")

    def group_note(name: str, layer: nn.Module, norm_name: str, norm: nn.Module) -> Finding:
        per = getattr(norm, "num_channels", 0) // max(getattr(norm, "num_groups", 1), 1)
        return _f(ctx, "bias-before-norm", "info", name,
                  f"{_desc(layer)}'s bias feeds {_q(ctx, norm_name)} ({_desc(norm)}), which removes only its mean "
                  f"over each group of {per} channels: the rest still shifts channels against each other before "
                  "the group statistics", group_fix, claim=None)

    if ctx.trace is not None:
        for n in ctx.norms.values():
            for c in n.calls[:1]:
                prod = next(iter(ctx.trace.producer_chain(c, lambda p: p.y_is_x)), None)
                if prod is None or prod.y_id != c.x_id or prod.name in seen:
                    continue
                layer = prod.module
                bias = getattr(layer, "bias", None)
                if not isinstance(bias, Tensor) or not (isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd))):
                    continue
                cdim = 1 if isinstance(layer, nn.modules.conv._ConvNd) else len(c.x_shape) - 1
                seen.add(prod.name)
                if _removes_channel_bias(ctx, n, c, cdim):
                    drops.append((prod.name, n.name))
                    out.append(_f(ctx, "bias-before-norm", "warning", prod.name,
                                  f"{_desc(layer)} adds a bias that {_q(ctx, n.name)} ({_desc(n.module)}) removes "
                                  "right away (measured: a constant added per channel leaves the norm's output "
                                  f"unchanged): {bias.numel()} parameters that never change the output",
                                  fix.format(layer=type(layer).__name__, norm=type(n.module).__name__)))
                elif class_kind(n.module) == "group":
                    out.append(group_note(prod.name, layer, n.name, n.module))
        if drops and _bias_drop_exact(ctx, drops):  # measured: the model's outputs stay the same without them
            norm_of = dict(drops)
            out = [replace(f, autofix=("drop-bias", ctx.full(norm_of[_rel(ctx, f.module)])))
                   if f.severity == "warning" and _rel(ctx, f.module) in norm_of else f for f in out]
        return out
    for a, ma, b, mb in _sequential_pairs(ctx):
        if not isinstance(ma, (nn.Linear, nn.modules.conv._ConvNd)) or getattr(ma, "bias", None) is None:
            continue
        kind = class_kind(mb)
        one_per_group = kind == "group" and getattr(mb, "num_groups", 0) == getattr(mb, "num_channels", -1)
        if kind in ("batch", "instance") or one_per_group:
            out.append(_f(ctx, "bias-before-norm", "warning", a,
                          f"{_desc(ma)} has a bias and feeds {_q(ctx, b)} ({_desc(mb)}), which subtracts every "
                          f"per-channel constant: {ma.bias.numel()} parameters that never change the output",
                          fix.format(layer=type(ma).__name__, norm=type(mb).__name__),
                          autofix=("drop-bias", ctx.full(b))))
        elif kind == "group":
            out.append(group_note(a, ma, b, mb))
    return out


def _rel(ctx: Context, full: str) -> str:
    return full[len(ctx.prefix):] if ctx.prefix and full.startswith(ctx.prefix) else full


def _bias_drop_exact(ctx: Context, drops: list[tuple[str, str]]) -> bool:
    """Dropping these biases (and moving each norm's running mean by its bias) leaves the outputs the same,
    in eval and in training mode: measured on copies of the work model (a bias that also feeds a residual
    connection, invisible as a module call, would change them)."""
    from .trace import all_tensors

    assert ctx.bench is not None and ctx.inputs is not None
    bench = ctx.bench
    outs = []
    try:
        for train in (False, True):
            bench.reset()
            bench.model.train(train)
            m = copy.deepcopy(bench.model)
            ref = [t.detach().clone() for t in all_tensors(bench.run(ctx.inputs, ctx.kwargs))]
            mods = dict(m.named_modules())
            with torch.no_grad():
                for layer, norm in drops:
                    b = mods[layer].bias
                    rm = getattr(mods[norm], "running_mean", None)
                    if isinstance(rm, Tensor) and rm.shape == b.shape:
                        rm.sub_(b.to(rm.dtype))
                    mods[layer].register_parameter("bias", None)
                got = [t.detach() for t in all_tensors(_run_copy(m, ctx))]
            outs.append(len(ref) == len(got) and all(
                a.shape == b.shape and (not a.is_floating_point() or
                                        bool(((a - b).abs() <= 1e-4 * (a.abs().max() + 1e-6)).all()))
                for a, b in zip(ref, got)))
    except Exception:  # noqa: BLE001
        return False
    finally:
        bench.reset()
    return all(outs)


def _run_copy(m: nn.Module, ctx: Context):
    from .trace import _rng

    assert ctx.inputs is not None
    with _rng(ctx.inputs, m, 0), torch.no_grad():
        return m(*ctx.inputs, **ctx.kwargs)


@_register("dropout-before-bn", "dropout feeding a BatchNorm (variance shift between train and eval)", "C14")
def dropout_before_bn(ctx: Context) -> list[Finding]:
    def active(m: nn.Module) -> bool:
        return isinstance(m, nn.modules.dropout._DropoutNd) and float(getattr(m, "p", 0.0)) > 0
    fix = ("put dropout after the last BatchNorm (before the classifier), or drop it: BatchNorm already "
           "regularizes; if it must stay, re-estimate the BatchNorm statistics with dropout off after training")
    out: list[Finding] = []
    if ctx.trace is None:
        for a, ma, b, mb in _sequential_pairs(ctx):
            if active(ma) and class_kind(mb) == "batch":
                out.append(_f(ctx, "dropout-before-bn", "warning", a,
                              f"{_desc(ma)} feeds {_q(ctx, b)} ({_desc(mb)}): in training the BatchNorm normalizes "
                              "with the "
                              "variance of dropped-out inputs, in eval with that of full inputs, a variance shift "
                              "that costs accuracy (C14, Li et al. 2019)", fix))
        return out
    bns = [n for n in ctx.norms.values() if n.batch_coupled and n.calls]
    drops = [n for n, m in ctx.work_modules().items() if active(m)]
    if not bns:
        return out
    direct: dict[str, str] = {}
    for n in bns:
        for prod in ctx.trace.producer_chain(n.calls[0], ctx.passthrough):
            if active(prod.module):
                direct[n.name] = prod.name
                break
    fed: dict[str, float] = {}  # functional dropout (F.dropout(x, p, self.training)) straight into the norm
    train = ctx.run_recording([n.name for n in bns], mode_train=False, dropout_train=True, fed_by_dropout=fed)
    evals = ctx.run_recording([n.name for n in bns], mode_train=False, dropout_train=False)
    for n in bns:
        if not train[n.name] or not evals[n.name]:
            continue
        shift = _variance_shift(n, train[n.name][0][0], evals[n.name][0][0])
        if n.name not in direct and n.name in fed and shift > 1.0 + 1e-6:
            out.append(_f(ctx, "dropout-before-bn", "warning", n.name,
                          f"a functional dropout (F.dropout-style, p={fed[n.name]:g}) feeds {_q(ctx, n.name)} "
                          f"({_desc(n.module)}): the BatchNorm's input variance is {_g(shift)}x larger with "
                          "dropout on (training) than off (eval), so eval normalizes with statistics of a different "
                          "distribution (measured on the example; C14, Li et al. 2019)", fix))
        elif n.name in direct and shift > 1.0 + 1e-6:
            d = direct[n.name]
            out.append(_f(ctx, "dropout-before-bn", "warning", d,
                          f"{_desc(ctx.user_modules[d])} feeds {_q(ctx, n.name)} ({_desc(n.module)}): the "
                          "BatchNorm's input "
                          f"variance is {_g(shift)}x larger with dropout on (training) than off (eval), so eval "
                          "normalizes with statistics of a different distribution (measured on the example; C14, "
                          "Li et al. 2019)", fix))
        elif n.name not in direct and shift > DROPOUT_SHIFT:
            before = [c for c in ctx.trace.calls[:n.calls[0].index] if c.name in drops]
            if before:
                d = before[-1].name
                out.append(_f(ctx, "dropout-before-bn", "info", d,
                              f"{_desc(ctx.user_modules[d])} comes before {_q(ctx, n.name)} ({_desc(n.module)}) "
                              "with weighted "
                              f"layers between: the BatchNorm's input variance is {_g(shift)}x larger with dropout "
                              "on than off (C14)", fix))
    return out


def _variance_shift(n: NormInfo, x_train: Tensor, x_eval: Tensor) -> float:
    pooled = n.pooled or tuple(d for d in range(x_train.ndim) if d != 1)
    vt = x_train.double().var(dim=pooled, unbiased=False)
    ve = x_eval.double().var(dim=pooled, unbiased=False)
    keep = ve > 1e-12 * (ve.max() + 1e-300)
    return float((vt[keep] / ve[keep]).mean()) if bool(keep.any()) else 1.0


@_register("norm-reused", "one norm module called at two places in one forward", needs="inputs")
def norm_reused(ctx: Context) -> list[Finding]:
    assert ctx.trace is not None
    out = []
    for n in ctx.norms.values():
        k = len(n.calls)
        if k < 2:
            continue
        parent = _called_parent(ctx, n.name)
        pk = len(ctx.trace.by_name.get(parent, [])) or 1
        if k <= pk:
            continue
        stats = " and one set of running statistics" if isinstance(getattr(n.module, "running_mean", None),
                                                                    Tensor) else ""
        out.append(_f(ctx, "norm-reused", "warning", n.name,
                      f"{_desc(n.module)} is called {k} times per call of "
                      f"{_q(ctx, parent) if parent else 'the model'} ({pk}): the places "
                      f"it normalizes share one gamma/beta{stats}, usually by accident (self.norm used twice)",
                      "give each place its own norm module (one instance per call site)"))
    return out


def _called_parent(ctx: Context, name: str) -> str:
    assert ctx.trace is not None
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        cand = ".".join(parts[:i])
        if cand in ctx.trace.by_name:
            return cand
    return ""


@_register("norm-unused", "a norm module that the forward never calls", needs="inputs")
def norm_unused(ctx: Context) -> list[Finding]:
    return [_f(ctx, "norm-unused", "info", n.name,
               f"{_desc(n.module)} is defined but the example's forward never called it (a norm the model forgot to "
               "apply, or a leftover)",
               "apply it where it belongs, or delete it", claim=None)
            for n in ctx.norms.values() if not n.calls and n.known]


# ---------------------------------------------------------------------------------------------- batch statistics
@_register("bn-small-batch", "BatchNorm statistics from fewer than 16 samples per process", "C09", needs="inputs")
def bn_small_batch(ctx: Context) -> list[Finding]:
    if ctx.wrapper is not None:
        return []  # ddp-without-syncbn reports it, with the fix that applies there
    out = []
    for n in ctx.norms.values():
        call = next((c for c in n.calls if n.uses_batch_stats(c) and c.x_shape), None)
        if call is None or ctx.full(n.name) in {f.module for f in ctx.findings}:
            continue
        batch = call.x_shape[0]
        per = math.prod(call.x_shape[d] for d in n.pooled) if n.pooled else batch
        if per <= 1:
            out.append(_f(ctx, "bn-small-batch", "error", n.name,
                          f"{_desc(n.module)} computes each statistic from one value (input {call.x_shape}): the "
                          "batch variance is 0 and the output is beta (C08)",
                          "a batch of 16 or more, or GroupNorm/LayerNorm", claim="C08"))
        elif batch < SMALL_BATCH:
            out.append(_f(ctx, "bn-small-batch", "warning", n.name,
                          f"{_desc(n.module)} normalizes over a batch of {batch} samples (input {call.x_shape}, "
                          "this process): below about 16 its statistics are noisy and accuracy falls while GroupNorm "
                          "and LayerNorm hold (C09, Wu & He 2018); ignore this if the example batch is smaller than "
                          "your training batch",
                          "a per-process batch of 16-32 or more; or GroupNorm (nl.GroupNorm(32, C)) / LayerNorm, which "
                          "do not depend on the batch; across GPUs, SyncBatchNorm; when fine-tuning a pretrained "
                          "model, freeze BatchNorm (nl.freeze_batchnorm(model))"))
    return out


@_register("stale-running-stats", "running statistics far from the example batch's", "C15", needs="inputs")
def stale_running_stats(ctx: Context) -> list[Finding]:
    if ctx.synthetic:
        return []  # random inputs say nothing about the data the statistics were estimated on
    out = []
    tracked = [m for m in ctx.user_modules.values() if isinstance(getattr(m, "running_mean", None), Tensor)
               and isinstance(getattr(m, "running_var", None), Tensor)]
    # a model none of whose BatchNorms ever updated its statistics was never trained in train mode: a freshly
    # built model (Hugging Face draws EfficientNet's gamma from N(0, 0.02)), whose gamma/beta are its init
    never_run = all(_fresh_stats(m) for m in tracked)
    for n in ctx.norms.values():
        m = n.module
        rm, rv = getattr(m, "running_mean", None), getattr(m, "running_var", None)
        call = next((c for c in n.calls if c.x is not None), None)
        if not isinstance(rm, Tensor) or not isinstance(rv, Tensor) or call is None or call.x is None:
            continue
        nbt = getattr(m, "num_batches_tracked", None)
        fresh = bool((rm == 0).all() and (rv == 1).all())
        if (isinstance(nbt, Tensor) and int(nbt) == 0) or fresh:
            gamma, beta = effective_gamma(m), getattr(m, "bias", None)
            trained = (gamma is not None and not bool((gamma == 1).all())) or \
                (isinstance(beta, Tensor) and not bool((beta == 0).all()))
            if fresh and trained and not call.training and not never_run:
                out.append(_f(ctx, "stale-running-stats", "warning", n.name,
                              f"{_desc(m)} normalizes with running statistics that were never updated (mean 0, "
                              "variance 1) although its gamma/beta were trained: a checkpoint loaded without its "
                              "BatchNorm buffers?",
                              "load the running_mean/running_var buffers with the weights, or re-estimate them: "
                              "a few forwards in train mode with momentum=None on training data"))
            continue
        pooled = n.pooled or tuple(d for d in range(call.x.ndim) if d != 1)
        x = call.x.double()
        bm = x.mean(dim=pooled)
        bv = x.var(dim=pooled, unbiased=False)
        eps = eps_of(m)[0] or 1e-5
        rmd, rvd = rm.detach().double().reshape(bm.shape), rv.detach().double().reshape(bv.shape)
        z = ((rmd - bm).abs() / (bv + eps).sqrt()).median().item()
        ratio = math.exp(((rvd + eps) / (bv + eps)).log().abs().median().item())
        if z > STALE_Z or ratio > STALE_RATIO:
            out.append(_f(ctx, "stale-running-stats", "warning", n.name,
                          f"{_desc(m)}'s running statistics are far from the example batch's: median over channels "
                          f"|running mean - batch mean| = {_g(z)} batch std, variance off by x{_g(ratio)} "
                          f"({int(nbt) if isinstance(nbt, Tensor) else '?'} batches tracked): eval mode normalizes "
                          "this data with statistics of another distribution (C15)",
                          "re-estimate the statistics on data like this (a pass in train mode with momentum=None, "
                          "no optimizer step), or, fine-tuning, freeze BatchNorm (nl.freeze_batchnorm); ignore if "
                          "the example is not real data"))
    return out


def _fresh_stats(m: nn.Module) -> bool:
    rm, rv, nbt = getattr(m, "running_mean"), getattr(m, "running_var"), getattr(m, "num_batches_tracked", None)
    return (isinstance(nbt, Tensor) and int(nbt) == 0) or bool((rm == 0).all() and (rv == 1).all())


def _padding_masks(ctx: Context) -> list[tuple[Tensor, str, bool]]:
    """(real-token mask (B, T), where it came from, explicit?) from the example's inputs."""
    assert ctx.inputs is not None
    masks: list[tuple[Tensor, str, bool]] = []

    def usable(t: Tensor) -> bool:
        if t.ndim != 2 or t.numel() == 0:
            return False
        if t.dtype != torch.bool and not bool(((t == 0) | (t == 1)).all()):
            return False
        return bool((t.bool()).any()) and not bool(t.bool().all())
    for k, v in ctx.kwargs.items():
        if isinstance(v, Tensor) and any(s in k.lower() for s in ("mask", "padding")) and usable(v):
            real = ~v.bool() if "key_padding" in k.lower() or k.lower() == "padding_mask" else v.bool()
            masks.append((real, f"the {k}= argument", True))
    first = ctx.inputs[0] if ctx.inputs and isinstance(ctx.inputs[0], Tensor) else None
    for i, a in enumerate(ctx.inputs[1:], start=1):
        if isinstance(a, Tensor) and usable(a) and (first is None or a.shape[0] == first.shape[0]):
            masks.append((a.bool(), f"input {i}", True))
    if masks or first is None or first.ndim < 2 or first.shape[1] <= 2:
        return masks
    if not first.is_floating_point() and first.dtype != torch.bool and first.ndim == 2:
        pad = _trailing(first == first[:, -1].mode().values)
        if pad is not None:
            masks.append((~pad, f"trailing runs of token {int(first[:, -1].mode().values)} in the input ids", False))
    elif first.is_floating_point() and first.ndim == 3:
        pad = _trailing((first == 0).all(-1))
        if pad is not None:
            masks.append((~pad, "trailing all-zero positions of the input sequences", False))
    return masks


def _trailing(is_pad: Tensor) -> Tensor | None:
    """``is_pad`` (B, T) if it marks trailing runs only, in rows of different lengths: padding; else None."""
    trailing = is_pad.flip(1).int().cumprod(1).flip(1).bool()  # True where only padding follows
    if not bool((is_pad == trailing).all()) or int(is_pad.sum()) < 2:
        return None
    lengths = (~is_pad).sum(1)
    if int(lengths.min()) == 0 or int(lengths.unique().numel()) < 2:
        return None
    return is_pad


@_register("bn-padding", "BatchNorm statistics over padded positions, without a mask", "C11", needs="inputs")
def bn_padding(ctx: Context) -> list[Finding]:
    masks = _padding_masks(ctx)
    if not masks:
        return []
    out = []
    for n in ctx.norms.values():
        call = next((c for c in n.calls if n.uses_batch_stats(c) and c.x is not None), None)
        if call is None or call.mask_given or call.x is None:
            continue
        for real, source, explicit in masks:
            b, t = real.shape
            dims = [d for d in n.pooled if d > 0 and call.x_shape[d] == t]
            if call.x_shape[0] != b or 0 not in n.pooled or not dims:
                continue
            d = dims[0]
            view = [1] * call.x.ndim
            view[0], view[d] = b, t
            mask = real.to(call.x.device).reshape(view).expand(call.x.shape)
            x = call.x.double()
            pooled = tuple(n.pooled)
            cnt = mask.double().sum(pooled)
            m_all, v_all = x.mean(pooled), x.var(pooled, unbiased=False)
            m_real = (x * mask).sum(pooled) / cnt.clamp_min(1)
            v_real = (((x - m_real.reshape(_keep(x.ndim, pooled, m_real))) ** 2) * mask).sum(pooled) / cnt.clamp_min(1)
            shift = ((m_all - m_real).abs() / (v_real + 1e-5).sqrt()).median().item()
            ratio = (v_all / (v_real + 1e-12)).median().item()
            frac = 1 - float(real.double().mean())
            out.append(_f(ctx, "bn-padding", "error" if explicit else "warning", n.name,
                          f"{_desc(n.module)} pools over the padded positions: {frac:.0%} of them are padding (mask "
                          f"from {source}) and enter its batch statistics and running averages; per channel the mean "
                          f"moves by {_g(shift)} std and the variance by x{_g(ratio)} against the real tokens' (C11)",
                          "pass the mask to the norm: nl.BatchNorm(C, channel_dim=-1)(x, mask=mask) keeps padding "
                          "out of the statistics; or use LayerNorm/RMSNorm, which padding cannot affect (C11)"))
            break
    return out


def _keep(ndim: int, pooled: tuple[int, ...], stat: Tensor) -> list[int]:
    shape, it = [], iter(stat.shape)
    for d in range(ndim):
        shape.append(1 if d in pooled else next(it))
    return shape


@_register("bn-future-leak", "a batch-statistics norm that lets later positions change earlier outputs", "C12",
           needs="causal")
def bn_future_leak(ctx: Context) -> list[Finding]:
    assert ctx.inputs is not None
    first = next((a for a in ctx.inputs if isinstance(a, Tensor) and a.ndim >= 2), None)
    if first is None:
        return []
    T = first.shape[1]
    t0 = T // 2
    if T < 2:
        return []
    changed = first.clone()
    g = torch.Generator().manual_seed(7)
    if first.is_floating_point():
        changed[:, t0:] = changed[:, t0:] + torch.randn(changed[:, t0:].shape, generator=g).to(first)
    else:
        hi = int(first.max()) + 1
        changed[:, t0:] = torch.randint(0, max(hi, 2), changed[:, t0:].shape, generator=g).to(first)
    inputs2 = tuple(changed if a is first else a for a in ctx.inputs)
    names = [n.name for n in ctx.norms.values() if n.calls]
    a = ctx.run_recording(names, mode_train=True)
    b = ctx.run_recording(names, mode_train=True, inputs=inputs2)
    out = []
    for n in ctx.norms.values():
        if not a.get(n.name) or not b.get(n.name):
            continue
        (xa, ya), (xb, yb) = a[n.name][0], b[n.name][0]
        if xa.shape != xb.shape:
            continue
        for d in range(1, xa.ndim):
            if xa.shape[d] != T:
                continue
            early = [slice(None)] * xa.ndim
            early[d] = slice(0, t0)
            ea, eb = xa[tuple(early)], xb[tuple(early)]
            same_in = bool((ea - eb).abs().max() <= 1e-6 * (ea.abs().max() + 1e-12))
            batch_time = n.batch_coupled and d in n.pooled
            if not same_in and not batch_time:
                continue
            diff = float((ya[tuple(early)] - yb[tuple(early)]).abs().max())
            if diff > 1e-5 * (float(ya.abs().max()) + 1e-12):
                what = "its batch statistics pool" if n.batch_coupled else "its statistics pool"
                out.append(_f(ctx, "bn-future-leak", "error", n.name,
                              f"{_desc(n.module)} ({n.kind}) in training mode: {what} dim {d} of its {tuple(xa.shape)} "
                              f"input, the sequence positions, so changing positions >= {t0} changes its outputs at "
                              f"positions < {t0} (by up to {_g(diff)}): a causal model sees the future (C12)",
                              "use a per-token norm (LayerNorm or RMSNorm over the features) in a causal model; "
                              "batch statistics over (batch, time) mix later tokens into every position"))
                break
    return out


# ---------------------------------------------------------------------------------------------- numerics
_STATS_OPS = {"mean", "sum", "var", "std", "var_mean", "std_mean", "norm", "vector_norm", "nanmean", "nansum",
              "square", "pow", "rsqrt", "sqrt"}
_REDUCTIONS = {"mean", "sum", "var", "std", "var_mean", "std_mean", "norm", "vector_norm", "nanmean", "nansum"}


class _OpWatch(TorchFunctionMode):
    """Records the dtype of every reduction and whether any op turned finite inputs into inf/NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.low: list[str] = []
        self.low_dtypes: set[torch.dtype] = set()
        self.overflow: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if name in _STATS_OPS:
            x = next((a for a in args if isinstance(a, Tensor)), None)
            y = out[0] if isinstance(out, tuple) else out
            if isinstance(x, Tensor) and isinstance(y, Tensor) and x.is_floating_point():
                if name in _REDUCTIONS and x.dtype in LOW_PRECISION and y.dtype in LOW_PRECISION:
                    self.low.append(f"{name} in {str(y.dtype)[6:]}")
                    self.low_dtypes.add(y.dtype)
                if y.is_floating_point() and bool(torch.isfinite(x).all()) and not bool(torch.isfinite(y).all()):
                    self.overflow.append(f"{name} on {str(x.dtype)[6:]}")
        return out


def _run_norm(n: NormInfo, c: Call, x: Tensor, dtype: torch.dtype | None = None, watch: _OpWatch | None = None):
    m = copy.deepcopy(n.work)
    if dtype is not None:
        m = m.to(dtype)
    m.train(c.training)
    a, kw = list(c.args), dict(c.kwargs)
    if dtype is not None:
        a = [t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t for t in a]
        kw = {k: t.to(dtype) if isinstance(t, Tensor) and t.is_floating_point() else t for k, t in kw.items()}
    if isinstance(c.x_key, int):
        a[c.x_key] = x
    else:
        kw[str(c.x_key)] = x
    with torch.no_grad():
        if watch is not None:
            with watch:
                return m(*a, **kw)
        return m(*a, **kw)


def _lowprec_evidence(ctx: Context) -> dict[str, dict]:
    """Per low-precision norm call: the reductions done in bf16/fp16, overflow inside, errors vs float64."""
    if "lowprec_ev" in ctx._cache:
        return ctx._cache["lowprec_ev"]
    ev: dict[str, dict] = {}
    ctx._cache["lowprec"] = {}
    for n in ctx.norms.values():
        c = next((c for c in n.calls if c.x is not None and c.x_key is not None), None)
        if c is None or c.x is None or not c.x.is_floating_point() or not bool(torch.isfinite(c.x).all()):
            continue
        x = c.x
        try:
            watch = _OpWatch()
            y = _run_norm(n, c, x, watch=watch)
        except Exception:  # noqa: BLE001
            continue
        low = x.dtype if x.dtype in LOW_PRECISION else next(iter(sorted(watch.low_dtypes, key=str)), None)
        if low is None:
            continue  # full-precision input, full-precision statistics
        e: dict = {"dtype": low, "input": x.dtype, "ops": sorted(set(watch.low)),
                   "overflow": sorted(set(watch.overflow))}
        try:
            ref_watch = _OpWatch()
            ref = _run_norm(n, c, x.double(), dtype=torch.float64, watch=ref_watch)
            if not ref_watch.low_dtypes:  # the module follows its input's dtype: a float64 run is the truth
                scale = rms(ref) or 1.0
                e["err"] = float((y.double() - ref).abs().max()) / scale
                e["ideal"] = float((ref.to(low).double() - ref).abs().max()) / scale
                xs = (x.float() + 10 * rms(x)).to(x.dtype)  # a large mean (C28's hard case)
                ys = _run_norm(n, c, xs)
                refs = _run_norm(n, c, xs.double(), dtype=torch.float64)
                scale_s = rms(refs) or 1.0
                e["err_stress"] = float((ys.double() - refs).abs().max()) / scale_s
                e["ideal_stress"] = float((refs.to(low).double() - refs).abs().max()) / scale_s
        except Exception:  # noqa: BLE001 -- a module that refuses float64 cannot be measured this way
            pass
        ev[n.name] = e
        measured_bad = "err_stress" in e and e["err_stress"] > 10 * max(e["ideal_stress"], 1e-3) and \
            e["err_stress"] > 0.01
        if e["ops"] or measured_bad:
            ctx._cache["lowprec"][n.name] = low
    ctx._cache["lowprec_ev"] = ev
    return ev


@_register("lowprec-stats", "statistics computed in bf16/fp16", "C28", needs="inputs")
def lowprec_stats(ctx: Context) -> list[Finding]:
    ev = _lowprec_evidence(ctx)
    out = []
    for name, e in ev.items():
        if name not in ctx._cache["lowprec"]:
            continue
        n = ctx.norms[name]
        dt = str(e["dtype"])[6:]
        how = f"it reduces in {dt} ({', '.join(e['ops'])})" if e["ops"] else f"measured on {dt} input"
        if e["input"] != e["dtype"]:
            how += f" although its input is {str(e['input'])[6:]}"
        if "err" in e:
            how += (f"; against a float64 reference its output is off by {_g(e['err'])} (normalized units) on the "
                    f"example and by {_g(e['err_stress'])} on it with a large mean added, where float32 statistics "
                    f"are off by {_g(e['ideal'])} and {_g(e['ideal_stress'])} (the {dt} output rounding)")
        out.append(_f(ctx, "lowprec-stats", "error", name,
                      f"{_desc(n.module)} computes its statistics in {dt}: {how} (C28)",
                      "compute mean and variance in float32 and cast the result back: x32 = x.float(); ... ; "
                      "return y.to(x.dtype) (as Llama's RMSNorm does), or use nl.RMSNorm/nl.LayerNorm, which always "
                      "compute statistics in float32"))
    return out


@_register("lowprec-overflow", "inf/NaN in a norm's fp16 input or output, or statistics that overflow", "C28",
           needs="inputs")
def lowprec_overflow(ctx: Context) -> list[Finding]:
    ev = _lowprec_evidence(ctx)
    out: list[Finding] = []
    for n in sorted(ctx.norms.values(), key=lambda n: n.calls[0].index if n.calls else 1 << 30):
        c = next((c for c in n.calls if c.x is not None), None)
        if c is None or c.x is None or c.y is None:
            continue
        x, y = c.x, c.y
        bad_in = int((~torch.isfinite(x)).sum())
        bad_out = int((~torch.isfinite(y)).sum()) if y.is_floating_point() else 0
        low = x.dtype in LOW_PRECISION
        dt = str(x.dtype)[6:]
        fix = ("keep activations in range for fp16 (bf16 has float32's range), compute the norm's statistics in "
               "float32, and train fp16 with torch.amp's GradScaler")
        if low and bad_in:
            out.append(_f(ctx, "lowprec-overflow", "error", n.name,
                          f"{_desc(n.module)}'s {dt} input holds {bad_in} inf/NaN values (of {x.numel()}): an "
                          f"earlier layer overflowed {dt}'s range (max {_g(float(torch.finfo(x.dtype).max))})", fix))
        elif low and bad_out:
            out.append(_f(ctx, "lowprec-overflow", "error", n.name,
                          f"{_desc(n.module)} turns a finite {dt} input (max |x| {_g(float(x.abs().max()))}) into "
                          f"{bad_out} inf/NaN outputs: its statistics overflow {dt}", fix))
        elif low and ev.get(n.name, {}).get("overflow"):
            out.append(_f(ctx, "lowprec-overflow", "error", n.name,
                          f"{_desc(n.module)}'s statistics overflow {dt} inside the layer "
                          f"({', '.join(ev[n.name]['overflow'])} gives inf on a finite input)", fix))
        elif low and x.dtype == torch.float16 and float(x.abs().max()) > torch.finfo(x.dtype).max / 16:
            out.append(_f(ctx, "lowprec-overflow", "warning", n.name,
                          f"{_desc(n.module)}'s fp16 input reaches {_g(float(x.abs().max()))}, within 16x of fp16's "
                          f"max {_g(float(torch.finfo(x.dtype).max))}: squares and sums of such values overflow", fix))
    if ctx.grads is not None:
        for n in ctx.norms.values():
            for pname, _ in n.module.named_parameters(recurse=False):
                gr = ctx.grads.get(f"{n.name}.{pname}")
                if gr is not None and not bool(torch.isfinite(gr).all()) and \
                        n.name not in {f.module for f in out}:
                    out.append(_f(ctx, "lowprec-overflow", "error", n.name,
                                  f"after one backward {_desc(n.module)}'s {pname} gradient holds inf/NaN "
                                  f"({gr.dtype}): the backward overflows",
                                  "scale the loss (torch.amp.GradScaler) for fp16, or train in bf16"))
    return out


@_register("nonfinite-input", "the first norm whose float32/float64 input or output holds inf/NaN", needs="inputs")
def nonfinite_input(ctx: Context) -> list[Finding]:
    for n in sorted(ctx.norms.values(), key=lambda n: n.calls[0].index if n.calls else 1 << 30):
        c = next((c for c in n.calls if c.x is not None), None)
        if c is None or c.x is None or c.x.dtype in LOW_PRECISION:
            continue
        bad_in = int((~torch.isfinite(c.x)).sum())
        bad_out = int((~torch.isfinite(c.y)).sum()) if c.y is not None and c.y.is_floating_point() else 0
        if bad_in or bad_out:
            where = f"input holds {bad_in}" if bad_in else f"output holds {bad_out} (from a finite input)"
            return [_f(ctx, "nonfinite-input", "error", n.name,
                       f"{_desc(n.module)}'s {str(c.x.dtype)[6:]} {where} inf/NaN values: the first norm, in the "
                       "order of the forward, where the activations stop being finite",
                       "find the layer that makes the first inf/NaN (hooks on the layers before this one, or "
                       "torch.autograd.detect_anomaly); check eps, the init scale and the learning rate")]
    return []


# ---------------------------------------------------------------------------------------------- gamma
@_register("zero-gamma", "gamma = 0 where it blocks the signal and the gradient", "C30")
def zero_gamma(ctx: Context) -> list[Finding]:
    zeroed = [n for n in ctx.norms.values() if n.zeroed]
    if not zeroed:
        return []
    fix = ("initialise gamma to 1 (nn.init.ones_(norm.weight)); zero-init only the last norm of a residual branch, "
           "where the skip connection carries the signal (zero-init residual)")
    out: list[Finding] = []
    called = [n for n in zeroed if n.calls] if ctx.has_inputs else []
    for n in zeroed:
        if n not in called:
            if ctx.has_inputs:
                continue  # never called: norm-unused says so
            out.append(_f(ctx, "zero-gamma", "warning", n.name,
                          f"{_desc(n.module)} has gamma = 0 on all {_numel_gamma(n)} channels: unless it is the last "
                          "norm of a residual branch, no signal passes it and the layers before it get no gradient "
                          "(C30); give example inputs and the doctor measures which", fix))
    if not called:
        return out
    names = [n.name for n in called]
    g_entry, taps = ctx.sensitivity(taps=names)
    entry = ctx.earliest()
    where = f"input {entry[1]}" if entry[0] == "input" else f"the output of {_q(ctx, str(entry[1]))}"
    blocked = g_entry is not None and bool((g_entry == 0).all())
    blockers: list[NormInfo] = []
    if blocked:
        for n in called:
            g, _ = ctx.sensitivity(gamma_one=[o for o in names if o != n.name])
            if g is not None and bool((g == 0).all()):
                blockers.append(n)
        if not blockers:
            g, _ = ctx.sensitivity(gamma_one=names)
            if g is not None and bool((g != 0).any()):
                blockers = list(called)
    for n in called:
        grad = _gamma_grad(ctx, n)
        if n in blockers:
            out.append(_f(ctx, "zero-gamma", "error", n.name,
                          f"{_desc(n.module)} has gamma = 0 on all {_numel_gamma(n)} channels and every path from "
                          f"the input to the output goes through it: the output does not depend on the input "
                          f"(measured: gradient exactly 0 at {where}) and the layers before it get no gradient"
                          f"{grad} (C30)", fix))
            continue
        tg = taps.get(n.name)
        reaches = tg is not None and bool((tg != 0).any())
        varies = _input_varies(n)
        if blocked and not reaches:
            continue  # downstream of a blocker: fix that first
        if reaches and varies:
            out.append(_f(ctx, "zero-gamma", "info", n.name,
                          f"{_desc(n.module)} starts with gamma = 0 on a residual branch (zero-init residual): the "
                          "skip connection carries the signal and gamma gets a gradient, so it moves off 0 at the "
                          f"first step{grad}", "nothing, if this is the intended zero-init (Goyal et al. 2017)",
                          claim=None))
        else:
            why = "its input is constant" if not varies else "its output does not reach the output"
            out.append(_f(ctx, "zero-gamma", "warning", n.name,
                          f"{_desc(n.module)} has gamma = 0 and gets no gradient ({why}), so it stays 0: the "
                          f"branch through it is dead{grad} (C30)", fix))
    return out


def _numel_gamma(n: NormInfo) -> int:
    g = gamma_of(n.module)
    return g[1].numel() if g else 0


def _gamma_grad(ctx: Context, n: NormInfo) -> str:
    if ctx.grads is None:
        return ""
    g = gamma_of(n.module)
    if g is None:
        return ""
    gr = ctx.grads.get(f"{n.name}.{g[0]}")
    return "; after one backward gamma's gradient is " + ("None" if gr is None else _g(float(gr.abs().max())))


def _input_varies(n: NormInfo) -> bool:
    c = next((c for c in n.calls if c.x is not None), None)
    if c is None or c.x is None:
        return True
    x = c.x.double()
    pooled = n.pooled or tuple(range(1, x.ndim))
    spread = x.var(dim=pooled, unbiased=False).max() if pooled else x.var()
    return bool(spread > 1e-12 * (x.square().mean() + 1e-300))


# ---------------------------------------------------------------------------------------------- axes
_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                   nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample,
                   nn.PixelShuffle)


def _channels_first_source(ctx: Context, c: Call) -> tuple[Call | None, str] | None:
    """Where an input in (N, C, *) layout may have come from: a conv or pooling layer, through layout-keeping modules.

    Walks back through every module whose output has its input's shape (activations, norms, residual blocks
    keep the layout), and through functional ops to the last module that made a tensor of this shape; stops at a
    module that moves elements (a permute) or changes the shape.  Returns (the call, None for the model's input;
    its description), or None.  A candidate only: functional transposes are not modules, so the caller measures
    which axis of the source the norm's last dim really is (:meth:`Context.trace_back`).
    """
    assert ctx.trace is not None
    cur = c
    for _ in range(64):
        prod = ctx.trace.calls[cur.producer] if cur.producer is not None else None
        if prod is None:
            if cur.x_is_input and len(cur.x_shape) == 4:
                return None, "the model's (N, C, H, W) input"
            prod = next((p for p in reversed(ctx.trace.calls[:cur.index])
                         if p.done and p.name and p.y_shape == cur.x_shape and not ctx.inside(cur, p)), None)
            if prod is None:
                return None
        if isinstance(prod.module, _CHANNELS_FIRST):
            return prod, f"{_q(ctx, prod.name)} ({type(prod.module).__name__})"
        p = ctx.probes.get(prod.name)
        if prod.x_shape != prod.y_shape or (p is not None and p.moves) or not prod.done:
            return None
        cur = prod
    return None


def _source_axis(ctx: Context, src: Call | None, c: Call) -> int | None:
    """The dim of the source's output that the norm's last input dim is, measured (None: not one dim)."""
    shape = c.x_shape
    g = torch.Generator().manual_seed(11)
    points = []
    for _ in range(6):  # several places: a ReLU between them passes no gradient where its input is negative
        at = tuple(int(torch.randint(0, s, (1,), generator=g)) for s in shape)
        points += [at, at[:-1] + ((at[-1] + 1) % shape[-1],)]
    found = ctx.trace_back(src, c, points)
    pair = next(((a, b) for a, b in zip(found[::2], found[1::2]) if a is not None and b is not None), None)
    if pair is None:
        return None
    a, b = pair
    moved = [d for d in range(len(a)) if a[d] != b[d]]
    return moved[0] if len(moved) == 1 else None


def _gamma_axis(n: NormInfo, c: Call) -> int | None:
    """The input dim gamma lies along, measured: raise gamma[0] and see which output elements move.

    Tells LayerNorm(k) (gamma along the last dim) from InstanceNorm1d (gamma along the channels), which pool the
    same elements of an (N, C, L) input.
    """
    found = gamma_of(n.work)
    if found is None or found[1].ndim != 1 or found[1].numel() < 2 or c.x is None or c.x_key is None:
        return None
    m = copy.deepcopy(n.work).double().train(c.training)
    g = dict(m.named_parameters(recurse=False))[found[0]]
    x = torch.randn(c.x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(c.x.device)
    try:
        with torch.no_grad():
            y0 = _run_norm_module(m, c, x)
            g[0] += 1.0
            y1 = _run_norm_module(m, c, x)
    except Exception:  # noqa: BLE001
        return None
    moved = ((y1 - y0).abs() > 1e-9).nonzero()
    if moved.numel() == 0:
        return None
    for d in range(1, x.ndim):
        if x.shape[d] == g.numel() and bool((moved[:, d] == 0).all()):
            return d
    return None


def _run_norm_module(m: nn.Module, c: Call, x: Tensor):
    a, kw = list(c.args), dict(c.kwargs)
    a = [t.double() if isinstance(t, Tensor) and t.is_floating_point() else t for t in a]
    kw = {k: t.double() if isinstance(t, Tensor) and t.is_floating_point() else t for k, t in kw.items()}
    if isinstance(c.x_key, int):
        a[c.x_key] = x
    else:
        kw[str(c.x_key)] = x
    return m(*a, **kw)


@_register("last-dim-trap", "LayerNorm(k) on an (N, k, ..., k) tensor: normalizes the last dim, not the channels",
           "C04")
def last_dim_trap(ctx: Context) -> list[Finding]:
    fix = ("normalize over the channels: nl.LayerNorm2d(C) on the (N, C, H, W) tensor, or permute to (N, H, W, C), "
           "apply the LayerNorm and permute back (ConvNeXt); nl.LayerNorm((C, H, W)) is the per-sample CNN LayerNorm")
    out: list[Finding] = []
    if ctx.trace is None:
        for a, ma, b, mb in _sequential_pairs(ctx):
            shape = getattr(mb, "normalized_shape", None)
            if isinstance(ma, nn.modules.conv._ConvNd) and class_kind(mb) in ("layer", "rms") and \
                    isinstance(shape, tuple) and len(shape) == 1 and shape[0] == ma.out_channels:
                out.append(_f(ctx, "last-dim-trap", "warning", b,
                              f"{_desc(mb)} follows {_q(ctx, a)} ({_desc(ma)}), whose output is "
                              f"(N, {shape[0]}, ...): a "
                              "LayerNorm normalizes the last dim, so it runs only where the last dim (the width) is "
                              f"also {shape[0]}, and then normalizes over the width, not the channels", fix))
        return out
    for n in ctx.norms.values():
        if n.probe is None or not n.probe.normalizer or n.probe.grouped:
            continue
        for c in n.calls[:1]:
            nd = len(c.x_shape)
            if nd < 3 or tuple(n.pooled) != (nd - 1,):
                continue
            found = _channels_first_source(ctx, c)
            if found is None:
                continue
            gamma_axis = _gamma_axis(n, c)
            if gamma_axis not in (None, nd - 1) or gamma_axis is None and n.kind not in ("layer", "rms"):
                continue
            src, where = found
            axis = _source_axis(ctx, src, c)  # a transpose before the norm moved the channels last: axis 1
            if axis is None or axis < 2:
                continue
            k, channels = c.x_shape[-1], (src.y_shape if src is not None else c.x_shape)[1]
            if src is None and k != channels:
                continue  # an input's layout is the user's choice: (N, H, W, C) images are normal
            if k == channels:
                out.append(_f(ctx, "last-dim-trap", "error", n.name,
                              f"{_desc(n.module)} gets a {c.x_shape} input from {where} in (N, C, ...) layout and "
                              f"normalizes its last dim, which is dim {axis} of that output (measured through the "
                              f"ops between them), not its channels: the {k} channels and that dim happen to be "
                              "equal, so it normalizes each row over the width (or time), not each position over its "
                              "channels (C04)", fix))
            else:
                out.append(_f(ctx, "last-dim-trap", "warning", n.name,
                              f"{_desc(n.module)} gets a {c.x_shape} input from {where} in (N, C, ...) layout and "
                              f"normalizes its last dim, which is dim {axis} of that output (measured), a spatial or "
                              f"time axis of {k} positions, not the {channels} channels: each channel is normalized "
                              f"over time/width with a gamma per position, tied to inputs of length {k} (C04)",
                              fix))
    return out


@_register("outlier-feature", "one feature dominates a norm input's RMS", "C20", needs="inputs")
def outlier_feature(ctx: Context) -> list[Finding]:
    out = []
    for n in ctx.norms.values():
        if n.probe is None or not n.probe.normalizer or n.batch_coupled or n.probe.grouped:
            continue
        c = next((c for c in n.calls if c.x is not None), None)
        if c is None or c.x is None or not n.pooled:
            continue
        x = c.x.double()
        pooled = list(n.pooled)
        kept = [d for d in range(x.ndim) if d not in pooled]
        rows = x.permute(*kept, *pooled).reshape(-1, math.prod(x.shape[d] for d in pooled))
        rows = rows[torch.isfinite(rows).all(1)]
        if rows.shape[0] == 0 or rows.shape[1] < 16:
            continue
        sq = rows.square()
        total = sq.sum(1).clamp_min(1e-300)
        share, arg = (sq.max(1).values / total), sq.argmax(1)
        feat, count = Counter(arg.tolist()).most_common(1)[0]
        frac = count / rows.shape[0]
        med = float(share.median())
        if med >= OUTLIER_SHARE and frac >= 0.5:
            ratio = float((sq.max(1).values / (total / rows.shape[1])).sqrt().median())
            out.append(_f(ctx, "outlier-feature", "warning", n.name,
                          f"feature {feat} of {_desc(n.module)}'s input holds {med:.0%} of the mean square of the "
                          f"median row and is the largest in {frac:.0%} of the {rows.shape[0]} rows it normalizes "
                          f"(max/RMS {_g(ratio)}, sqrt(D) = {_g(math.sqrt(rows.shape[1]))}): the RMS it divides by is "
                          "set by one feature, which crushes all the others toward 0 (C20)",
                          f"find the layer that makes feature {feat} large (massive activations often come from an "
                          "attention sink or a bias); clip the norm's input (torch.clamp at a few RMS) or raise eps: "
                          "C20 shows both limit the damage"))
    return out


# ---------------------------------------------------------------------------------------------- placement
def _placements(ctx: Context) -> list[tuple[str, list[tuple[str, Call, str]]]]:
    """Per stack of repeated blocks: (stack name, [(block name, its first call, "pre"/"post")])."""
    assert ctx.trace is not None
    result = []
    for group in ctx.stacks():
        members = []
        for name, _ in group:
            call = ctx.trace.first(name)
            if call is None or not call.done or call.x_id is None or call.y_id is None or call.x_shape != call.y_shape:
                continue
            inner = [c for nm, info in ctx.norms.items() if nm.startswith(name + ".") for c in info.calls
                     if ctx.inside(c, call)]
            post = any(c.y_id == call.y_id for c in inner)
            pre = any(c.x_id == call.x_id for c in inner)
            if post:
                members.append((name, call, "post"))
            elif pre and _carries_input(call):
                members.append((name, call, "pre"))
        if len(members) >= 2:
            stack = group[0][0].rsplit(".", 1)[0] if "." in group[0][0] else ""
            result.append((stack, members))
    return result


def _carries_input(call: Call) -> bool:
    """A residual block's output keeps its input (y = x + f(x)): they are clearly correlated."""
    if call.x is None or call.y is None or call.x.shape != call.y.shape:
        return True
    x, y = call.x.double().flatten(), call.y.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    den = float(x.norm() * y.norm())
    return den == 0 or float(x @ y) / den > 0.2


_WHY = {"post": "its output is a norm's output", "pre": "its first norm takes its input"}


@_register("mixed-placement", "residual blocks that mix pre- and post-norm", "C27", needs="inputs")
def mixed_placement(ctx: Context) -> list[Finding]:
    out = []
    for stack, members in _placements(ctx):
        kinds = Counter(p for _, _, p in members)
        if len(kinds) < 2:
            continue
        first = members[0][2]  # a tie: the first block sets the model's placement
        major = first if kinds[first] * 2 >= len(members) else ("post" if first == "pre" else "pre")
        for name, _, p in members:
            if p != major:
                out.append(_f(ctx, "mixed-placement", "warning", name,
                              f"{_q(ctx, name)} is {p}-norm ({_WHY[p]}) while {kinds[major]} of the "
                              f"{len(members)} blocks of {_q(ctx, stack) if stack else 'the model'} "
                              f"are {major}-norm (C27: mixing pre- and post-LN blocks in one model is a bug source)",
                              "use one placement for every block: pre-norm with a final norm is the stable default, "
                              "post-norm needs a learning-rate warm-up (C21)"))
    return out


@_register("missing-final-norm", "a pre-norm residual stack that reaches the head without a final norm", "C23",
           needs="inputs")
def missing_final_norm(ctx: Context) -> list[Finding]:
    assert ctx.trace is not None
    out = []
    for stack, members in _placements(ctx):
        last_name, last, p = members[-1]
        if p != "pre" or not all(q == "pre" for _, _, q in members):
            continue
        end = max((c.index for c in ctx.trace.calls if ctx.inside(c, last)), default=last.index)
        # the stream, or a view or slice of it (GPT-2 reshapes it, Llama slices the last positions)
        users = [c for c in ctx.trace.calls[end + 1:] if last.y_ptr is not None and c.x_ptr == last.y_ptr]
        if any(c.name in ctx.norms for c in users) or _normed_later(ctx, last, end):
            continue
        head = next((c for c in users if is_weighted_class(c.module)), None)
        returned = last.y_id in ctx.trace.output_ids or last.y_ptr in ctx.trace.output_ptrs
        if head is None and not returned:
            continue
        first_rms = rms(members[0][1].y) if members[0][1].y is not None else math.nan
        last_rms = rms(last.y) if last.y is not None else math.nan
        target = head.name if head is not None else last_name
        into = f"straight into {_q(ctx, head.name)} ({_desc(head.module)})" if head is not None else \
            "out of the model as its output"
        out.append(_f(ctx, "missing-final-norm", "warning", target,
                      f"the pre-norm residual stack {_q(ctx, stack) if stack else '(the model)'} "
                      f"({len(members)} blocks) sends its "
                      f"residual stream {into} with no norm after the last block: pre-norm never normalizes the "
                      f"stream, whose magnitude grows with depth (C23; RMS {_g(first_rms)} after the first block, "
                      f"{_g(last_rms)} after the last)",
                      "add a final norm (nl.LayerNorm(d_model) or nl.RMSNorm) between the last block and the head, "
                      "as GPT-2's ln_f and Llama's final norm"))
    return out


def _normed_later(ctx: Context, last: Call, end: int) -> bool:
    """A norm after the stack takes a function of its output (BEiT's mean pooling, then LayerNorm): measured."""
    assert ctx.trace is not None
    later = [c for c in ctx.trace.calls[end + 1:] if c.name in ctx.norms and c.x_shape and not ctx.inside(c, last)]
    for c in later[:4]:
        at = tuple(s // 2 for s in c.x_shape)
        if ctx.trace_back(last, c, [at])[0] is not None:
            return True
    return False


@_register("attn-logit-growth", "attention logits far beyond the usual range, no QK-norm", "C26", needs="inputs")
def attn_logit_growth(ctx: Context) -> list[Finding]:
    assert ctx.trace is not None
    worst: dict[str, tuple[float, tuple[int, ...], bool]] = {}
    for a in ctx.trace.attention:
        name = ctx.trace.calls[a.call].name if a.call is not None else ""
        if name not in worst or a.max_logit > worst[name][0]:
            worst[name] = (a.max_logit, a.shape, a.qk_normed)
    out = []
    for name, (v, shape, normed) in worst.items():
        if v < LOGIT_WARN:
            continue
        qk = "with queries and keys normalized" if normed else "and queries and keys are not normalized"
        out.append(_f(ctx, "attn-logit-growth", "warning", name,
                      f"the largest attention logit is {_g(v)} (scores of shape {shape}) {qk}: softmax is one-hot at "
                      "this scale; at init logits are O(1) and trained models rarely pass ~100 (C26: runs whose "
                      "logits grew past ~1e4 diverged without QK-norm)",
                      "add QK-norm (LayerNorm or RMSNorm over head_dim on q and k, e.g. normlab's "
                      "GPTConfig(qk_norm='layernorm')), lower the learning rate, or add a z-loss"))
    return out


# ---------------------------------------------------------------------------------------------- round 2
SPLIT_Z = 0.5  # per-channel means of two calls' batches this many std apart: different distributions
POSTLN_DEEP = 12  # post-LN stacks this deep need a learning-rate warm-up (C21)


def _stateful(m: nn.Module) -> bool:
    """Modules whose training flag changes what they compute: BatchNorm-like layers and active dropout."""
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return float(getattr(m, "p", 0.0)) > 0
    return class_kind(m) == "batch" or isinstance(getattr(m, "running_mean", None), Tensor) and \
        getattr(m, "track_running_stats", False) and hasattr(m, "momentum")


def _frozen(m: nn.Module) -> bool:
    params = list(m.parameters(recurse=False))
    return bool(getattr(m, "frozen", False)) or bool(params) and not any(p.requires_grad for p in params)


@_register("partial-eval", "part of the model in eval mode while BatchNorm/dropout elsewhere still train")
def partial_eval(ctx: Context) -> list[Finding]:
    """``model.backbone.eval()`` alone leaves the head's BatchNorm and dropout training.  A frozen backbone (its
    norms' parameters frozen too, or nl.freeze_batchnorm) is the fine-tuning pattern, not this bug."""
    mods = [(n, m) for n, m in ctx.user_modules.items() if n and _stateful(m)]
    evals = [n for n, m in mods if not m.training and not _frozen(m)]
    trains = [(n, m) for n, m in mods if m.training]

    def mixed(dropout: bool) -> bool:  # one kind of layer in both modes
        kind = [m for _, m in mods if isinstance(m, nn.modules.dropout._DropoutNd) == dropout]
        return any(m.training for m in kind) and any(not m.training and not _frozen(m) for m in kind)
    if not evals or not trains or not (mixed(True) or mixed(False)):
        return []  # e.g. Monte Carlo dropout: every dropout on, every BatchNorm in eval mode, on purpose
    root = "in training mode" if ctx.root.training else "in eval mode"
    return [_f(ctx, "partial-eval", "warning", n,
               f"{_desc(m)} is in training mode while {len(evals)} other BatchNorm/dropout module(s) are in eval mode "
               f"(e.g. {_q(ctx, evals[0])}; the model itself is {root}): eval() was called on a part of the model "
               "only, so at inference this one still " + ("drops activations" if isinstance(
                   m, nn.modules.dropout._DropoutNd) else "normalizes with batch statistics and updates its running "
                   "statistics"),
               "for inference call model.eval() on the whole model; to fine-tune with a frozen part, freeze its "
               "norms' parameters as well (nl.freeze_batchnorm(part)) so the split is explicit", claim=None)
            for n, m in trains]


@_register("bn-split-batches", "one BatchNorm normalizing batches of different distributions apart", needs="inputs")
def bn_split_batches(ctx: Context) -> list[Finding]:
    out = []
    for n in ctx.norms.values():
        calls = [c for c in n.calls if c.x is not None and n.uses_batch_stats(c)]
        if len(calls) < 2:
            continue
        pooled = n.pooled or tuple(d for d in range(calls[0].x.ndim) if d != 1)
        stats = []
        for c in calls:
            x = c.x.double()
            if x.ndim <= max(pooled):
                break
            stats.append((x.mean(dim=pooled), x.var(dim=pooled, unbiased=False)))
        if len(stats) < 2 or any(s[0].shape != stats[0][0].shape for s in stats):
            continue
        worst, at = 0.0, 1
        for i in range(1, len(stats)):
            (m0, v0), (m1, v1) = stats[0], stats[i]
            z = float(((m0 - m1).abs() / ((v0 + v1) / 2 + 1e-5).sqrt()).median())
            if z > worst:
                worst, at = z, i
        if worst > SPLIT_Z:
            out.append(_f(ctx, "bn-split-batches", "warning", n.name,
                          f"{_desc(n.module)} runs {len(calls)} times in one training-mode forward, each time on "
                          f"its own batch (inputs {calls[0].x_shape} and {calls[at].x_shape}), and the batches differ: "
                          f"per channel their means are {_g(worst)} std apart (median). Each batch is normalized "
                          "with its own statistics, so what follows can tell the batches apart by their statistics "
                          "alone (a GAN discriminator called on the real and the fake batch apart), and the running "
                          "statistics swing between the two distributions",
                          "normalize one mixed batch: call it once on torch.cat([a, b]) and split the output; or use "
                          "a batch-free norm there (GroupNorm, LayerNorm; spectral norm in a GAN discriminator)",
                          claim=None))
    return out


@_register("groupnorm-one-group", "GroupNorm(1, C) where a channel LayerNorm may have been meant", "C04")
def groupnorm_one_group(ctx: Context) -> list[Finding]:
    out = []
    for n in ctx.norms.values():
        m = n.module
        if class_kind(m) != "group" or getattr(m, "num_groups", None) != 1 or getattr(m, "num_channels", 1) < 2:
            continue
        c = n.calls[0] if n.calls else None
        if c is not None and (len(c.x_shape) < 3 or math.prod(c.x_shape[2:]) < 2):
            continue  # no spatial positions: GroupNorm(1, C) is a LayerNorm over the channels there
        shape = f" on its {c.x_shape} input" if c is not None else ""
        out.append(_f(ctx, "groupnorm-one-group", "warning", n.name,
                      f"{_desc(m)} has one group: it normalizes each sample over the channels and every position "
                      f"together{shape}, one mean and variance per sample, not one per position as a LayerNorm over "
                      "the channels (ConvNeXt's LayerNorm2d) does; a common slip when porting a channels-last "
                      "LayerNorm to (N, C, H, W)",
                      "if a LayerNorm over the channels was meant: nl.LayerNorm2d(C); keep GroupNorm(1, C) only if "
                      "the per-sample statistics over (C, H, W) are intended (PoolFormer's choice)"))
    return out


def _lr_curve(scheduler, steps: int = 50) -> list[float]:
    """The lr of the first param group over the scheduler's first ``steps`` steps; the scheduler is restored."""
    import warnings

    opt = scheduler.optimizer
    state = scheduler.state_dict()
    saved = [dict(g) for g in opt.param_groups]
    lrs = [float(opt.param_groups[0]["lr"])]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(steps):
                scheduler.step()
                lrs.append(float(opt.param_groups[0]["lr"]))
    except Exception:  # noqa: BLE001 -- e.g. OneCycleLR past its total steps: the steps so far are enough
        pass
    finally:
        scheduler.load_state_dict(state)
        for g, s in zip(opt.param_groups, saved):
            for k, v in s.items():
                if k != "params":
                    g[k] = v
    return lrs


@_register("postln-no-warmup", "a deep post-norm stack trained with no learning-rate warm-up", "C21",
           needs="train")
def postln_no_warmup(ctx: Context) -> list[Finding]:
    out = []
    for stack, members in _placements(ctx):
        post = [m for m in members if m[2] == "post"]
        if len(post) < POSTLN_DEEP or len(post) * 2 < len(members):
            continue
        if ctx.scheduler is not None:
            lrs = _lr_curve(ctx.scheduler)
            if len(lrs) > 1 and lrs[0] < 0.5 * max(lrs):
                continue  # warms up
            seen = (f"the scheduler's lr starts at {_g(lrs[0])} and is {_g(lrs[-1])} after {len(lrs) - 1} steps "
                    "(max " + _g(max(lrs)) + "): no warm-up")
        else:
            groups = getattr(ctx.optimizer, "param_groups", None) or [{}]
            lr = float(groups[0].get("lr", math.nan))
            # the doctor's train step is one forward and backward with no optimizer step: it never sees the lr
            # move, so only a scheduler (passed, or known to be attached) can show a warm-up
            step = ("the doctor's train step (one forward and backward, no optimizer step) cannot see a warm-up"
                    if ctx.train_step else "the doctor runs no optimizer step, so it cannot see a warm-up")
            if any("initial_lr" in g for g in groups):  # set by every torch LRScheduler built on this optimizer
                out.append(_f(ctx, "postln-no-warmup", "info", stack,
                              f"{_q(ctx, stack) if stack else 'the model'} is a post-norm stack of {len(post)} blocks, "
                              f"which needs a learning-rate warm-up (C21); a scheduler is attached to the optimizer "
                              f"(its param groups hold initial_lr) but was not given, and {step}",
                              "pass it: nl.doctor(..., scheduler=scheduler) reads the lr over the schedule's first "
                              "steps (and restores the scheduler)"))
                continue
            seen = (f"the optimizer's lr is {_g(lr)} with no lr scheduler attached (its param groups hold no "
                    f"initial_lr) and none given, so the lr is constant from step 0 unless the training loop sets it "
                    f"by hand ({step}; pass scheduler= if a scheduler warms it up)")
        out.append(_f(ctx, "postln-no-warmup", "warning", stack,
                      f"{_q(ctx, stack) if stack else 'the model'} is a post-norm stack of {len(post)} blocks and "
                      f"{seen}: deep post-LN transformers diverge or stall at full lr from step 0, as the gradients "
                      "near the output are large at init (C21)",
                      "warm the learning rate up linearly over the first few thousand steps (e.g. LambdaLR with "
                      "min(1, step / warmup)), or use pre-norm, which trains without warm-up"))
    return out

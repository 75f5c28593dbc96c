r"""Fold eval-mode BatchNorm into the convolution or linear layer that feeds it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal, overload

import torch
import torch.fx
from torch import Tensor, nn

from ..layers.batchnorm import BatchNorm
from ._common import is_normlab_layer
from .precise import batchnorm_layers

__all__ = ["fold_batchnorm", "FoldEntry", "FOLDABLE_TYPES"]

#: the layers a BatchNorm can be folded into (exact types: a subclass may change forward, e.g. WSConv2d
#: re-standardizes its weight, and a parametrized conv recomputes it)
FOLDABLE_TYPES: tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: modules that pass their input through unchanged (dropout only outside training)
_TRANSPARENT = (nn.Identity,)
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass(frozen=True)
class FoldEntry:
    """What :func:`fold_batchnorm` did with one BatchNorm: ``norm`` and ``into`` are qualified module names."""

    norm: str
    folded: bool
    into: str | None
    reason: str


class _Tracer(torch.fx.Tracer):
    """torch.fx tracer that keeps torch.nn layers and every normlab layer as single calls."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return super().is_leaf_module(m, module_qualified_name) or is_normlab_layer(m)


def _graphs(module: nn.Module, prefix: str, out: list, failures: dict[str, str], tracer_leaf) -> None:
    """Trace ``module`` with torch.fx; where that fails, trace its children instead (recursively)."""
    try:
        graph = _Tracer().trace(module)
    except Exception as e:  # data-dependent control flow, shape checks, ...
        failures[prefix] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:160]
        for name, child in module.named_children():
            qual = f"{prefix}.{name}" if prefix else name
            if not tracer_leaf(child, qual):
                _graphs(child, qual, out, failures, tracer_leaf)
        return
    out.append((prefix, module, graph))


def _trace(model: nn.Module) -> tuple[list, dict[str, str]]:
    """``([(prefix, submodule, graph), ...], {prefix: why fx failed})`` for ``model`` (see :func:`_graphs`)."""
    graphs: list = []
    failures: dict[str, str] = {}
    leaf = _Tracer().is_leaf_module
    if not leaf(model, ""):
        _graphs(model, "", graphs, failures, leaf)
    return graphs, failures


def producers(model: nn.Module) -> dict[str, nn.Module]:
    """For each module called in ``model``'s traced forward, by qualified name: the module whose output it takes
    (through ``nn.Identity`` and eval-mode dropout), where that is a module call."""
    out: dict[str, nn.Module] = {}
    names: dict[int, str] = {}
    for n, m in model.named_modules():
        names.setdefault(id(m), n)
    for _, root, graph in _trace(model)[0]:
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            src = _source(node, root, [])
            name = names.get(id(root.get_submodule(str(node.target))))
            if name is not None and src is not None and src.op == "call_module":
                out[name] = root.get_submodule(str(src.target))
    return out


def _source(node: torch.fx.Node, root: nn.Module, through: list[torch.fx.Node]) -> torch.fx.Node | None:
    """The node feeding ``node``'s first input, walking back through pass-through modules."""
    if not node.args or not isinstance(node.args[0], torch.fx.Node):
        return None
    src = node.args[0]
    while src.op == "call_module":
        m = root.get_submodule(str(src.target))
        passthrough = isinstance(m, _TRANSPARENT) or (isinstance(m, _DROPOUT) and not m.training)
        if not passthrough or len(src.users) != 1 or not src.args or not isinstance(src.args[0], torch.fx.Node):
            break
        through.append(src)
        src = src.args[0]
    return src


def _describe(node: torch.fx.Node, root: nn.Module) -> str:
    if node.op == "call_module":
        return f"{type(root.get_submodule(str(node.target))).__name__} {node.target!r}"
    if node.op == "placeholder":
        return "the module's input"
    return f"{node.op} {getattr(node.target, '__name__', node.target)}"


def _bn_axis_ok(bn: nn.Module, producer: nn.Module) -> str:
    """'' if ``bn`` normalizes the producer's output channels; else why not."""
    cdim = getattr(bn, "channel_dim", 1)
    if isinstance(producer, nn.Linear):
        if cdim == -1:
            return ""
        if isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm3d)) or type(bn).__name__ in ("BatchNorm2d", "BatchNorm3d"):
            return "normalizes dim 1 of a 4-D/5-D tensor, not the Linear's features (the last dim)"
        return ""  # channel dim 1 of the Linear's (N, F) output: its features
    rank = {nn.Conv1d: 3, nn.Conv2d: 4, nn.Conv3d: 5}[type(producer)]
    if cdim % rank != 1:
        return f"normalizes dim {cdim} of the conv's (N, C, ...) output, not its channels"
    return ""


def _fold_into(producer: nn.Module, bn: nn.Module) -> None:
    """producer.weight/bias <- the composition BN(producer(x)) in eval mode, computed in float64."""
    w = producer.weight
    mean = bn.running_mean.detach().to(torch.float64)
    var = bn.running_var.detach().to(torch.float64)
    eps = bn._eps(bn.running_var) if isinstance(bn, BatchNorm) else bn.eps
    gamma = torch.ones_like(var) if bn.weight is None else bn.weight.detach().to(torch.float64)
    if getattr(bn, "zero_centered_gamma", False) and bn.weight is not None:
        gamma = gamma + 1
    beta = torch.zeros_like(var) if bn.bias is None else bn.bias.detach().to(torch.float64)
    scale = gamma / torch.sqrt(var + eps)  # (C,)
    b = torch.zeros_like(var) if producer.bias is None else producer.bias.detach().to(torch.float64)
    new_w = w.detach().to(torch.float64) * scale.view(-1, *([1] * (w.ndim - 1)))
    new_b = (b - mean) * scale + beta
    producer.weight = nn.Parameter(new_w.to(w.dtype), requires_grad=w.requires_grad)
    producer.bias = nn.Parameter(new_b.to(w.dtype), requires_grad=w.requires_grad)


def _set(root: nn.Module, qualname: str, new: nn.Module) -> None:
    parent, _, name = qualname.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _tolerance(dtype: torch.dtype) -> float:
    return {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 1e-2)


@overload
def fold_batchnorm(model: nn.Module, example_inputs=..., *, inplace: bool = ...,
                   report: Literal[False] = ...) -> nn.Module: ...
@overload
def fold_batchnorm(model: nn.Module, example_inputs=..., *, inplace: bool = ...,
                   report: Literal[True]) -> tuple[nn.Module, list[FoldEntry]]: ...
def fold_batchnorm(model: nn.Module, example_inputs=None, *, inplace: bool = False, report: bool = False
                   ) -> nn.Module | tuple[nn.Module, list[FoldEntry]]:
    r"""Fold every eval-mode BatchNorm that directly follows a conv or linear layer into that layer.

    In eval mode a BatchNorm is a per-channel affine map, so a convolution
    (or linear layer) followed by it is one convolution with

    .. math::

        W'_c = W_c \frac{\gamma_c}{\sqrt{\sigma^2_c + \epsilon}}, \qquad
        b'_c = (b_c - \mu_c) \frac{\gamma_c}{\sqrt{\sigma^2_c + \epsilon}} + \beta_c

    (computed in float64, rounded once to the layer's dtype), and the
    BatchNorm becomes ``nn.Identity``: one pass over memory less per pair at
    inference.  "Directly follows" is read off the execution order, from a
    ``torch.fx`` trace: the BatchNorm's input is the output of an
    ``nn.Conv1d/2d/3d`` or ``nn.Linear`` (through ``nn.Identity`` or
    eval-mode dropout at most), that output feeds nothing else, and each of
    the two modules is called once.  A module whose forward fx cannot trace
    (shape checks, data-dependent control flow) is skipped and its children
    are traced instead, so pairs inside traceable submodules are still found.

    Left alone, and listed with the reason: a BatchNorm in training mode
    (folding uses the running statistics: call ``model.eval()`` first; a
    frozen normlab BatchNorm counts as eval mode), without running
    statistics, after something other than a conv/linear (a pooling, an
    addition, the input), after a conv whose output is also used elsewhere
    (a skip connection), after a subclass of a conv (``WSConv2d``
    re-standardizes its weight, a parametrized conv recomputes it), or that
    normalizes another axis than the producer's channels.  A Linear followed
    by a BatchNorm over dim 1 is folded on the understanding that the
    Linear's output is (N, F) (pass ``example_inputs`` to check).

    Args:
        model: the model (its eval-mode BatchNorms are folded).
        example_inputs: optional input (a tensor or a tuple of positional
            arguments); if given, the folded model's output is checked against
            the original's and a ``RuntimeError`` is raised if they differ
            beyond float rounding (relative 1e-10 in float64, 1e-4 in float32).
        inplace: fold ``model`` itself (default: a deep copy; the original keeps
            its BatchNorms, e.g. to train on).
        report: also return what was done with each BatchNorm.

    Returns:
        The folded model; with ``report=True``, ``(folded_model, entries)``
        where ``entries`` has one :class:`FoldEntry` per BatchNorm, in
        ``model.named_modules()`` order.

    Example::

        >>> import torch
        >>> from torch import nn
        >>> from normlab import BatchNorm2d, fold_batchnorm
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), BatchNorm2d(8)).eval()
        >>> folded, report = fold_batchnorm(net, report=True)
        >>> [(e.norm, e.folded) for e in report]
        [('1', True), ('4', False)]
        >>> report[1].reason
        "follows MaxPool2d '3', not a conv or linear layer"
        >>> x = torch.randn(2, 3, 12, 12)
        >>> torch.allclose(folded(x), net(x), atol=1e-5)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fold_batchnorm expects an nn.Module (the model to fold), got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    bns = batchnorm_layers(target)
    graphs, failures = _trace(target)
    calls: dict[int, int] = {}
    for prefix, root, graph in graphs:
        for node in graph.nodes:
            if node.op == "call_module":
                m = root.get_submodule(str(node.target))
                calls[id(m)] = calls.get(id(m), 0) + 1
    names: dict[int, str] = {}
    for n, m in target.named_modules():
        names.setdefault(id(m), n)
    decided: dict[str, FoldEntry] = {}
    plan: list[tuple[str, nn.Module, nn.Module, str]] = []
    for prefix, root, graph in graphs:
        for node in graph.nodes:
            if node.op != "call_module":
                continue
            bn = root.get_submodule(str(node.target))
            name = names.get(id(bn))
            if name not in bns or name in decided:
                continue
            reason, into = _check(node, root, bn, calls, names)
            if not reason:
                plan.append((name, bn, root.get_submodule(str(_source(node, root, []).target)), into))
            decided[name] = FoldEntry(name, not reason, into if not reason else None, reason or "folded")
    for name, bn, producer, into in plan:
        _fold_into(producer, bn)
        _set(target, name, nn.Identity())
    entries = []
    for name, bn in bns.items():
        if name in decided:
            entries.append(decided[name])
            continue
        parents = [p for p in failures if name.startswith(p + ".") or not p]
        why = (f"not reached by a traced forward: torch.fx could not trace {parents[-1] or 'the model'!r} "
               f"({failures[parents[-1]]})") if parents else "not called in the model's traced forward"
        entries.append(FoldEntry(name, False, None, why))
    if example_inputs is not None:
        _check_outputs(model, target, example_inputs)
    return (target, entries) if report else target


def _check(node: torch.fx.Node, root: nn.Module, bn: nn.Module, calls: dict[int, int],
           names: dict[int, str]) -> tuple[str, str]:
    """('', producer name) if ``bn`` at ``node`` can be folded; else (reason, '')."""
    if bn.training:
        return "in training mode (folding uses the running statistics: call model.eval() first)", ""
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        return "has no running statistics (track_running_stats=False normalizes with batch statistics)", ""
    if calls.get(id(bn), 0) != 1:
        return f"is called {calls.get(id(bn), 0)} times in the forward (one fold cannot serve every call)", ""
    through: list[torch.fx.Node] = []
    src = _source(node, root, through)
    if src is None:
        return "its input is not a traced value", ""
    if src.op != "call_module":
        return f"follows {_describe(src, root)}, not a conv or linear layer", ""
    producer = root.get_submodule(str(src.target))
    pname = names.get(id(producer), str(src.target))
    if not isinstance(producer, FOLDABLE_TYPES):
        return f"follows {_describe(src, root)}, not a conv or linear layer", ""
    if type(producer) not in FOLDABLE_TYPES:
        base = next(t for t in FOLDABLE_TYPES if isinstance(producer, t)).__name__
        return (f"follows {type(producer).__name__} {pname!r}, a subclass of {base} "
                "whose forward may recompute its weight (e.g. weight standardization or a parametrization)"), ""
    if len(src.users) != 1:
        return f"the output of {pname!r} is also used elsewhere ({len(src.users)} users): folding would change them", ""
    if calls.get(id(producer), 0) != 1:
        return f"{pname!r} is called {calls.get(id(producer), 0)} times in the forward", ""
    out_features = producer.out_features if isinstance(producer, nn.Linear) else producer.out_channels
    if out_features != bn.running_mean.numel():
        return f"{pname!r} has {out_features} outputs, the BatchNorm {bn.running_mean.numel()} channels", ""
    axis = _bn_axis_ok(bn, producer)
    if axis:
        return f"it {axis}", ""
    return "", pname


def _as_args(example_inputs) -> tuple:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _check_outputs(original: nn.Module, folded: nn.Module, example_inputs) -> None:
    with torch.no_grad():
        a = original(*_as_args(example_inputs))
        b = folded(*_as_args(example_inputs))
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return
    scale = max(a.abs().max().item(), 1e-30)
    diff = (a - b).abs().max().item()
    tol = _tolerance(a.dtype)
    if not diff <= tol * scale:
        raise RuntimeError(f"fold_batchnorm changed the model's output: max |difference| {diff:.3g} on outputs of "
                           f"magnitude {scale:.3g} ({a.dtype}; allowed relative {tol:g}); a folded layer's output "
                           "may feed something the trace could not see")

r"""Swap a model's normalization layers for normlab's, in place, keeping every tensor: ``torch.nn``'s and
timm's by class, transformers' families by class (:mod:`normlab.tools.families`), any other module that
behaves like a norm by a probe (:mod:`normlab.tools.probe`); and back: :func:`to_torch`."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, overload

import torch
from torch import nn

from ..layers import (BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm, InstanceNorm1d,
                      InstanceNorm2d, InstanceNorm3d, LayerNorm, Norm, RMSNorm)
from ..layers._swap import TORCH_BATCHNORM_TYPES, take_tensors
from ..layers._swap import tensor_kwargs as _tensor_kwargs
from ._common import is_normlab_layer
from .families import TIMM_NORMS, hf_builder, timm_builder
from .probe import looks_like_norm, probe

__all__ = ["convert", "to_torch", "freeze_batchnorm", "ConversionReport", "Converted", "Left", "BATCHNORM_TYPES",
           "CONVERTIBLE_TYPES", "TIMM_CONVERTIBLE", "is_normlab_layer"]

BATCHNORM_TYPES = TORCH_BATCHNORM_TYPES


def _has_bias(m: nn.Module) -> bool:
    return getattr(m, "bias", None) is not None


def _batchnorm(cls):
    return lambda m: cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                         **_tensor_kwargs(m), bias=_has_bias(m))


def _instancenorm(cls):
    return lambda m: cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                         **_tensor_kwargs(m), bias=_has_bias(m))


def _syncbatchnorm(m):
    from ..layers import SyncBatchNorm

    return SyncBatchNorm(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, m.process_group,
                         **_tensor_kwargs(m), bias=_has_bias(m))


#: exact torch.nn type -> builder of the normlab twin (subclasses are left alone: they may change forward)
_BUILDERS: dict[type, Callable[[nn.Module], Norm]] = {
    nn.BatchNorm1d: _batchnorm(BatchNorm1d),
    nn.BatchNorm2d: _batchnorm(BatchNorm2d),
    nn.BatchNorm3d: _batchnorm(BatchNorm3d),
    nn.SyncBatchNorm: _syncbatchnorm,
    nn.InstanceNorm1d: _instancenorm(InstanceNorm1d),
    nn.InstanceNorm2d: _instancenorm(InstanceNorm2d),
    nn.InstanceNorm3d: _instancenorm(InstanceNorm3d),
    nn.LayerNorm: lambda m: LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, _has_bias(m),
                                      **_tensor_kwargs(m)),
    nn.GroupNorm: lambda m: GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine, **_tensor_kwargs(m),
                                      bias=_has_bias(m)),
    nn.RMSNorm: lambda m: RMSNorm(m.normalized_shape, m.eps, m.elementwise_affine, **_tensor_kwargs(m)),
}

CONVERTIBLE_TYPES: tuple[type, ...] = tuple(_BUILDERS)


# ---------------------------------------------------------------- timm's layers (matched by name: timm is optional)
def _timm_evonorm_b0(m):
    from ..layers import EvoNormB0

    if getattr(m, "v", None) is None:  # timm's apply_act=False is an affine only: no normlab twin
        return None
    return EvoNormB0(m.weight.numel(), eps=m.eps, momentum=m.momentum, **_tensor_kwargs(m))


def _timm_evonorm_s0(m):
    from ..layers import EvoNormS0

    if getattr(m, "v", None) is None:
        return None
    return EvoNormS0(m.weight.numel(), groups=m.groups, eps=m.eps, **_tensor_kwargs(m))


def _timm_frn(m):
    from ..layers import FilterResponseNorm

    return FilterResponseNorm(m.weight.numel(), eps=m.eps, tlu=getattr(m, "tau", None) is not None,
                              **_tensor_kwargs(m))


def _timm_stdconv(m):
    from ..layers import WSConv2d

    if m.padding_mode != "zeros":  # timm's forward ignores padding_mode; ours would not
        return None
    return WSConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                    m.bias is not None, **_tensor_kwargs(m), eps=m.eps)


#: timm class name -> builder of the normlab twin (None: that instance has no exact twin and is left alone)
_TIMM_BUILDERS: dict[str, Callable[[nn.Module], nn.Module | None]] = {
    "EvoNorm2dB0": _timm_evonorm_b0,
    "EvoNorm2dS0": _timm_evonorm_s0,
    "FilterResponseNormTlu2d": _timm_frn,
    "StdConv2d": _timm_stdconv,
}
TIMM_CONVERTIBLE: tuple[str, ...] = (*_TIMM_BUILDERS, *TIMM_NORMS)


def _timm_builder(t: type) -> Callable[[nn.Module], nn.Module | None] | None:
    """The builder for a timm class (by its exact name, defined in a ``timm`` module), else None."""
    if (getattr(t, "__module__", "") or "").split(".")[0] != "timm":
        return None
    return _TIMM_BUILDERS.get(t.__name__)


def _share(old: nn.Module, new: nn.Module) -> nn.Module:
    """Give ``new`` the very parameter and buffer objects ``old`` has under the same names, and its mode."""
    for name in list(new._parameters):
        if name in old._parameters:
            setattr(new, name, old._parameters[name])
    for name in list(new._buffers):
        if name in old._buffers and old._buffers[name] is not None:
            new._buffers[name] = old._buffers[name]
    return new.train(old.training)


@dataclass(frozen=True)
class Converted:
    """A module :func:`convert` replaced: its qualified name, its class, the twin's class, and how it was matched:
    ``"class"`` (a known class) or ``"behaviour"`` (the probe; ``detail`` names the matched configuration)."""

    name: str
    original: str
    twin: str
    how: str
    detail: str = ""


@dataclass(frozen=True)
class Left:
    """A module that looks like a norm and that :func:`convert` left in place, and why."""

    name: str
    original: str
    reason: str


@dataclass
class ConversionReport:
    """What :func:`convert` did: every module it converted and every norm-like module it left, with the reason."""

    converted: list[Converted] = field(default_factory=list)
    left: list[Left] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """``{"class": ..., "behaviour": ..., "left": ...}``."""
        return {"class": sum(c.how == "class" for c in self.converted),
                "behaviour": sum(c.how == "behaviour" for c in self.converted), "left": len(self.left)}

    def __str__(self) -> str:
        n = self.counts()
        lines = [f"converted {n['class'] + n['behaviour']} module(s) ({n['class']} by class, {n['behaviour']} by "
                 f"behaviour), left {n['left']}"]
        lines += [f"  {c.name or '(the module)'}: {c.original} -> {c.twin} (by {c.how}"
                  f"{': ' + c.detail if c.detail else ''})" for c in self.converted]
        lines += [f"  left {x.name or '(the module)'} ({x.original}): {x.reason}" for x in self.left]
        return "\n".join(lines)


def _shell(old: nn.Module) -> nn.Module:
    """``old`` without its tensors (their names kept): what :func:`to_torch` rebuilds the original class from."""
    sh = copy.copy(old)
    sh._parameters = dict.fromkeys(old._parameters)
    sh._buffers = dict.fromkeys(old._buffers)
    sh._modules = dict.fromkeys(old._modules)
    for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_state_dict_hooks",
                 "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"):
        if attr in sh.__dict__:
            sh.__dict__[attr] = type(sh.__dict__[attr])()
    return sh


def _adopt(old: nn.Module, new: nn.Module) -> nn.Module:
    """``new`` with ``old``'s very tensors (same names), its train/eval state, and a shell to go back by."""
    _share(old, new)
    for name in new._parameters:
        if new._parameters[name] is not None and name not in old._parameters:
            raise AssertionError(f"twin parameter {name!r} has no counterpart in {type(old).__name__}")
    new.__dict__["_nl_origin"] = _shell(old)
    return new


def _restore(m: nn.Module) -> nn.Module:
    """The module :func:`convert` replaced by ``m``, rebuilt around ``m``'s current tensors."""
    sh = m.__dict__["_nl_origin"]
    orig = copy.copy(sh)
    orig._parameters = {k: m._parameters.get(k) for k in sh._parameters}
    orig._buffers = {k: m._buffers.get(k) for k in sh._buffers}
    orig._modules = {k: m._modules.get(k) for k in sh._modules}
    return orig.train(m.training)


@overload
def convert(module: nn.Module, *, types: Iterable[type] | None = ..., probe: bool = ...,
            report: Literal[False] = ...) -> nn.Module: ...
@overload
def convert(module: nn.Module, *, types: Iterable[type] | None = ..., probe: bool = ...,
            report: Literal[True]) -> tuple[nn.Module, ConversionReport]: ...
def convert(module: nn.Module, *, types: Iterable[type] | None = None, probe: bool = True,
            report: bool = False) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """Replace every normalization layer in ``module`` by a normlab layer that computes the same, in place.

    Matched by exact class (a subclass may change ``forward``):

    - ``torch.nn``: ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
      ``InstanceNorm1d/2d/3d``, ``LayerNorm``, ``GroupNorm``, ``RMSNorm``;
    - timm (recognised by name; timm is not needed to import normlab):
      ``LayerNorm``, ``LayerNorm2d``, ``RmsNorm``, ``GroupNorm1``,
      ``EvoNorm2dB0`` / ``EvoNorm2dS0`` (with their activation),
      ``FilterResponseNormTlu2d``, ``StdConv2d`` -> :class:`WSConv2d`;
    - transformers: the families of :mod:`normlab.tools.families` -- the
      Llama-style RMSNorm and its ~140 copies, T5's, Gemma's ``1 + weight``,
      OLMo-2's, Cohere's (QK-norm too), OLMo's, ConvNeXt's channels-first /
      channels-last LayerNorm -- each with its casting order kept
      (:class:`~normlab.tools.twins.CastRMSNorm`).

    Any other module that looks like a norm (class name ending in ``Norm``,
    or a 1-D ``weight`` and an eps attribute) is probed by behaviour
    (:func:`normlab.tools.probe.probe`): copies of it and of candidate
    normlab layers run on a few inputs in float32 and bfloat16, and it is
    converted only where one candidate matches it to the dtype's rounding.

    The twin takes over the *same* parameter and buffer objects (so an
    optimizer built before the conversion still works), their names (state
    dicts load both ways), the device, dtype, ``requires_grad`` and
    train/eval state; the converted model's outputs equal the original's to
    the dtype's rounding.  :func:`to_torch` takes the twins back.

    Args:
        module: any ``nn.Module``; changed in place.
        types: only convert these exact classes (torch's or timm's above);
            nothing is probed.
        probe: probe unknown norm-like modules (default True).
        report: also return a :class:`ConversionReport`: what was converted,
            how, and why each other norm-like module was left.

    Returns:
        The module (or its replacement, if ``module`` itself is a norm layer);
        with ``report=True``, ``(module, report)``.

    Example::

        >>> import torch
        >>> import normlab
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        >>> net, rep = normlab.convert(net, report=True)
        >>> type(net[1]).__name__, isinstance(net[1], normlab.BatchNorm)
        ('BatchNorm2d', True)
        >>> rep.counts()
        {'class': 1, 'behaviour': 0, 'left': 0}
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects an nn.Module (a model or a layer whose norms to replace), got "
                        f"{type(module).__name__}: {module!r:.60}")
    wanted = None if types is None else set(types)
    if wanted is not None:
        unknown = {t for t in wanted if t not in CONVERTIBLE_TYPES and _timm_builder(t) is None
                   and timm_builder(t) is None}
        if unknown:
            names = ", ".join(sorted(getattr(t, "__name__", repr(t)) for t in unknown))
            raise TypeError(f"convert cannot convert {names}; it converts "
                            f"{', '.join(t.__name__ for t in CONVERTIBLE_TYPES)} and timm's "
                            f"{', '.join(TIMM_CONVERTIBLE)}")
    rep = ConversionReport()

    def twin_of(m: nn.Module, name: str) -> tuple[nn.Module, str] | None:
        """(twin, "" if matched by class, else the probe's description of the match), or None."""
        t = type(m)
        if wanted is not None and t not in wanted:
            return None
        if t in _BUILDERS:
            return take_tensors(m, _BUILDERS[t](m)), ""
        old_timm = _timm_builder(t)
        if old_timm is not None:
            new = old_timm(m)
            if new is None:
                rep.left.append(Left(name, t.__name__, "this configuration has no exact normlab twin"))
                return None
            return _share(m, new), ""
        build = timm_builder(t)
        hf = hf_builder(t) if build is None else None
        if hf is not None:
            build = hf[1]
        if build is not None:
            made = build(m)
            if isinstance(made, str):
                rep.left.append(Left(name, t.__name__, made))
                return None
            return _adopt(m, made), ""
        if wanted is not None or not probe or is_normlab_layer(m) or not looks_like_norm(m):
            return None
        found = _probe(m)
        if isinstance(found, str):
            rep.left.append(Left(name, t.__name__, found))
            return None
        made, cand = found
        return _adopt(m, made), cand.describe()

    def visit(m: nn.Module, name: str) -> nn.Module | None:
        found = twin_of(m, name)
        if found is None:
            return None
        new, detail = found
        rep.converted.append(Converted(name, type(m).__name__, type(new).__name__,
                                       "behaviour" if detail else "class", detail))
        return new

    out = _walk(module, visit)
    return (out, rep) if report else out


def _walk(module: nn.Module, fn: Callable[[nn.Module, str], nn.Module | None], name: str = "") -> nn.Module:
    """``fn(m, qualified name)`` (a replacement or None) on ``module`` and, where it gives none, on every
    child, in place; returns ``module`` or its replacement."""
    new = fn(module, name)
    if new is not None:
        return new
    for child_name, child in list(module.named_children()):
        replaced = _walk(child, fn, f"{name}.{child_name}" if name else child_name)
        if replaced is not child:
            setattr(module, child_name, replaced)
    return module


_probe = probe


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Freeze every BatchNorm in ``module`` (see :meth:`BatchNorm.freeze`) and return the module.

    ``torch.nn`` BatchNorm layers are first replaced in place by their
    normlab twins (same parameters and buffers, see :func:`normlab.convert`),
    because torch's own layers cannot stay frozen through ``.train()``.

    Example::

        >>> import torch
        >>> from normlab import freeze_batchnorm
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
        >>> net = freeze_batchnorm(net).train()     # BN stays in eval mode
        >>> net[1].training, net[1].weight.requires_grad
        (False, False)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"freeze_batchnorm expects an nn.Module, got {type(module).__name__}")
    module = convert(module, types=BATCHNORM_TYPES)
    for m in module.modules():
        if isinstance(m, BatchNorm) and m.track_running_stats:
            m.freeze()
    return module


# ------------------------------------------------------------------------------------------------ to torch
def _observe(module: nn.Module, example_inputs) -> dict[str, dict]:
    """Per normlab layer (by qualified name): the input ranks it saw and whether it got a mask, from one
    forward of a copy (the model itself, and its running statistics, stay untouched)."""
    probe = copy.deepcopy(module)
    info: dict[str, dict] = {}
    hooks = []

    def make(name):
        def hook(m, args, kwargs):
            x = args[0] if args else None
            mask = args[1] if len(args) > 1 else kwargs.get("mask")
            rec = info.setdefault(name, {"ranks": set(), "masked": False})
            if isinstance(x, torch.Tensor):
                rec["ranks"].add(x.ndim)
            rec["masked"] = rec["masked"] or mask is not None
        return hook

    for name, m in probe.named_modules():
        if is_normlab_layer(m):
            hooks.append(m.register_forward_pre_hook(make(name), with_kwargs=True))
    try:
        with torch.no_grad():
            probe(*(example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)))
    finally:
        for h in hooks:
            h.remove()
    return info


def _ranks_from_producers(module: nn.Module, info: dict[str, dict]) -> None:
    """Where no input was seen, the input rank of a rank-generic BatchNorm/InstanceNorm from the layer that feeds it
    in a torch.fx trace: a ConvNd's output has N + 2 dims; a Linear's output suits ``nn.BatchNorm1d`` (2-D or 3-D:
    it normalizes dim 1, as the normlab layer does)."""
    from .folding import producers

    generic = [n for n, m in module.named_modules()
               if type(m).__name__ in ("BatchNorm", "BatchRenorm", "GhostBatchNorm", "InstanceNorm")
               and isinstance(m, (BatchNorm, InstanceNorm)) and not (info.get(n) or {}).get("ranks")]
    if not generic:
        return
    try:
        feeds = producers(module)
    except Exception:  # tracing is best effort here; the layer then says its rank is unknown
        return
    for name in generic:
        src = feeds.get(name)
        rank = next((r for t, r in ((nn.Conv1d, 3), (nn.Conv2d, 4), (nn.Conv3d, 5)) if isinstance(src, t)), None)
        if rank is None and isinstance(src, nn.Linear) and isinstance(module.get_submodule(name), BatchNorm):
            rank = 2
        if rank is not None:
            info.setdefault(name, {"ranks": set(), "masked": False})["ranks"] = {rank}


def _rank(info: dict | None) -> int | None:
    ranks = (info or {}).get("ranks") or set()
    return next(iter(ranks)) if len(ranks) == 1 else None


def _torch_batchnorm(m, info: dict | None, inference: bool) -> nn.Module | str:
    from ..layers import BatchRenorm, GhostBatchNorm, SyncBatchNorm

    exact = (BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, SyncBatchNorm, BatchRenorm, GhostBatchNorm)
    if type(m) not in exact:
        return f"a subclass of BatchNorm ({type(m).__name__}) whose forward may differ"
    if type(m) in (BatchRenorm, GhostBatchNorm) and not inference:
        what = "r, d corrections" if type(m) is BatchRenorm else "ghost-batch statistics"
        return (f"{type(m).__name__} trains differently ({what}); its eval mode is BatchNorm: pass "
                "inference=True to convert it for inference")
    if (info or {}).get("masked"):
        return "called with a mask (torch's BatchNorm has none)"
    rank = _rank(info)
    if m.channel_dim != 1 and not (m.channel_dim == -1 and rank == 2):
        return f"channel_dim={m.channel_dim}: torch's BatchNorm normalizes dim 1 only"
    if m.affine and m.bias is None:
        return "affine without bias (torch's BatchNorm learns both or neither)"
    if m.eps is None:
        return "eps=None (torch's BatchNorm needs a number)"
    if m.frozen and not inference:
        return "frozen (torch's BatchNorm does not stay frozen through .train()): pass inference=True"
    kw = dict(_tensor_kwargs(m))
    args = (m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if type(m) is SyncBatchNorm:
        return _share(m, nn.SyncBatchNorm(*args, process_group=m.process_group, **kw))
    cls = {BatchNorm1d: nn.BatchNorm1d, BatchNorm2d: nn.BatchNorm2d, BatchNorm3d: nn.BatchNorm3d}.get(type(m))
    if cls is None:
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank or 0)
    if cls is None:
        return ("the input rank is unknown (this BatchNorm accepts any rank; torch's are 1d/2d/3d, and no conv or "
                "linear layer feeds it in a torch.fx trace): pass example_inputs, or build with BatchNorm1d/2d/3d")
    new = _share(m, cls(*args, **kw))
    return new.eval() if m.frozen else new


def _torch_instancenorm(m, info: dict | None, inference: bool) -> nn.Module | str:
    if type(m) not in (InstanceNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d):
        return f"a subclass of InstanceNorm ({type(m).__name__}) whose forward may differ"
    if (info or {}).get("masked"):
        return "called with a mask (torch's InstanceNorm has none)"
    if m.track_running_stats and m.momentum is None:
        return "momentum=None with running statistics (normlab: cumulative average; torch: statistics never move)"
    if m.affine and m.bias is None:
        return "affine without bias (torch's InstanceNorm learns both or neither)"
    if m.frozen and not inference:
        return "frozen (torch's InstanceNorm does not stay frozen through .train()): pass inference=True"
    cls = {InstanceNorm1d: nn.InstanceNorm1d, InstanceNorm2d: nn.InstanceNorm2d,
           InstanceNorm3d: nn.InstanceNorm3d}.get(type(m))
    if cls is None:
        cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}.get(_rank(info) or 0)
    if cls is None:
        return "the input rank is unknown: pass example_inputs, or build with InstanceNorm1d/2d/3d"
    new = _share(m, cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, **_tensor_kwargs(m)))
    return new.eval() if m.frozen else new


def _gamma(m) -> nn.Parameter | None:
    """m's weight as a plain gamma: the same Parameter, or a new one (1 + weight) if it is zero-centered."""
    if m.weight is None or not m.zero_centered_gamma:
        return m.weight
    with torch.no_grad():
        return nn.Parameter(m.weight + 1, requires_grad=m.weight.requires_grad)


def _torch_rows(m, info: dict | None, inference: bool) -> nn.Module | str:
    """LayerNorm / RMSNorm / GroupNorm."""
    kw = _tensor_kwargs(m)
    if type(m) is GroupNorm:
        if (info or {}).get("masked"):
            return "called with a mask (torch's GroupNorm has none)"
        if m.affine and m.bias is None:
            return "affine without bias (torch's GroupNorm learns both or neither)"
        return _share(m, nn.GroupNorm(m.num_groups, m.num_channels, m.eps, m.affine, **kw))
    if m.eps is None and type(m) is LayerNorm:
        return "eps=None (torch's LayerNorm needs a number)"
    if type(m) is LayerNorm:
        new: nn.Module = nn.LayerNorm(m.normalized_shape, m.eps, m.elementwise_affine, m.bias is not None, **kw)
    else:
        new = nn.RMSNorm(m.normalized_shape, m.eps, m.elementwise_affine, **kw)
    new = _share(m, new)
    if m.weight is not None:
        new.weight = _gamma(m)  # zero-centered gamma: torch stores the plain gamma, weight + 1
    return new


def _torch_wsconv(m, info: dict | None, inference: bool) -> nn.Module | str:
    if not inference:
        return ("weight standardization has no torch.nn layer; inference=True bakes the standardized weight into "
                "a plain conv")
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(m.kernel_size)]
    new = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
              m.bias is not None, m.padding_mode, **_tensor_kwargs(m))
    with torch.no_grad():
        new.weight = nn.Parameter(m.standardized_weight().detach().clone(), requires_grad=m.weight.requires_grad)
    if m.bias is not None:
        new.bias = m.bias
    return new.train(m.training)


_NO_TWIN = {
    "LayerNorm2d": "channels-first LayerNorm: torch has no such layer (nn.LayerNorm normalizes trailing dims)",
    "FilterResponseNorm": "Filter Response Normalization has no torch.nn equivalent",
    "TLU": "the thresholded linear unit has no torch.nn equivalent",
    "EvoNormB0": "EvoNorm has no torch.nn equivalent",
    "EvoNormS0": "EvoNorm has no torch.nn equivalent",
    "DyT": "Dynamic Tanh has no torch.nn equivalent",
    "ScaleNorm": "ScaleNorm has no torch.nn equivalent",
}


def _torch_twin(m: nn.Module, info: dict | None, inference: bool) -> nn.Module | str:
    """The torch.nn layer computing exactly what normlab layer ``m`` computes, or why there is none."""
    from ..layers import WeightNorm, WSConv1d, WSConv2d, WSConv3d

    if isinstance(m, BatchNorm):
        return _torch_batchnorm(m, info, inference)
    if isinstance(m, InstanceNorm):
        return _torch_instancenorm(m, info, inference)
    if type(m) in (LayerNorm, RMSNorm, GroupNorm):
        return _torch_rows(m, info, inference)
    if type(m) in (WSConv1d, WSConv2d, WSConv3d):
        return _torch_wsconv(m, info, inference)
    if type(m) is WeightNorm:
        return _torch_weight_norm(m, info, inference)
    if type(m).__name__ in _NO_TWIN:
        return _NO_TWIN[type(m).__name__]
    if isinstance(m, Norm):
        return f"{type(m).__name__}: no torch.nn layer computes this configuration (dims, affine dims, centering)"
    return f"{type(m).__name__} has no torch.nn equivalent"


def _torch_weight_norm(m, info: dict | None, inference: bool) -> nn.Module | str:
    """normlab's weight-norm parametrization -> torch's own (``torch.nn.utils.parametrizations.weight_norm``'s)."""
    try:
        from torch.nn.utils.parametrizations import _WeightNorm
    except ImportError:  # a private class of torch: if it moves, the layer stays
        return ("torch's weight-norm parametrization class was not found: use "
                "torch.nn.utils.parametrizations.weight_norm")
    return _WeightNorm(m.dim)


def to_torch(module: nn.Module, *, example_inputs=None, inference: bool = False, strict: bool = False) -> nn.Module:
    """Replace normlab layers by the ``torch.nn`` layers that compute exactly the same, in place; and the
    layers :func:`convert` made from another library's modules (transformers', timm's, probed ones) by
    those modules, of their original class, holding the current tensors.

    The way back from :func:`convert`, so that a model built with normlab
    ships without it: the result's outputs equal the normlab model's (to
    the kernels' float rounding), state-dict keys are torch's, and
    parameters and buffers are the very same objects where their values
    carry over.  Converted:

    - ``BatchNorm1d/2d/3d`` -> ``nn.BatchNorm1d/2d/3d``; ``SyncBatchNorm`` ->
      ``nn.SyncBatchNorm`` (same process group); a rank-generic ``BatchNorm``
      by the input rank seen in ``example_inputs``, else by the layer feeding
      it in a ``torch.fx`` trace (a ``ConvNd``: N + 2 dims; a ``Linear``:
      ``nn.BatchNorm1d``, which normalizes dim 1 of a 2-D or 3-D input as the
      normlab layer does);
    - ``InstanceNorm1d/2d/3d`` -> ``nn.InstanceNorm1d/2d/3d`` (generic: by rank);
    - ``LayerNorm`` -> ``nn.LayerNorm``, ``RMSNorm`` -> ``nn.RMSNorm``,
      ``GroupNorm`` -> ``nn.GroupNorm``; a zero-centered gamma becomes torch's
      plain one (``weight + 1``, a new parameter);
    - normlab's weight-norm parametrization (:func:`weight_norm`) -> torch's
      own (``torch.nn.utils.parametrizations.weight_norm``'s), same ``g``, ``v``.

    Left in place, each with its reason (a ``UserWarning`` lists them; with
    ``strict=True`` a ``ValueError``): what torch cannot compute -- channel-last
    BatchNorm, an affine without bias, masked use (seen in ``example_inputs``),
    InstanceNorm's ``momentum=None`` with running statistics (torch's
    statistics never move then), LayerNorm2d, the general ``Norm``,
    FilterResponseNorm, EvoNorm, DyT, ScaleNorm; and what torch computes only
    at inference: :class:`BatchRenorm` and :class:`GhostBatchNorm` (their eval
    mode is BatchNorm), frozen layers (torch's follow ``.train()``), weight
    standardization (:class:`WSConv2d`: the standardized weight baked into
    ``nn.Conv2d``) -- these convert with ``inference=True``, for a model that
    will only be evaluated.

    Args:
        module: a model (changed in place) or a single normlab layer.
        example_inputs: optional input (a tensor or a tuple of positional
            arguments) run once through a copy of the model to learn each
            layer's input rank and whether it gets a mask.
        inference: also convert the layers that are exact in eval mode only.
        strict: raise instead of warning when a normlab layer is left.

    Returns:
        The module, or its replacement if ``module`` itself is a normlab layer.

    Example::

        >>> import torch
        >>> from normlab import BatchNorm2d, LayerNorm, to_torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), BatchNorm2d(8), torch.nn.Flatten(),
        ...                           LayerNorm(8 * 4 * 4))
        >>> x = torch.randn(2, 3, 6, 6)
        >>> ref = net(x)
        >>> net = to_torch(net)
        >>> [type(m).__name__ for m in net]
        ['Conv2d', 'BatchNorm2d', 'Flatten', 'LayerNorm']
        >>> type(net[1]).__module__.startswith("torch.nn"), torch.allclose(net(x), ref, atol=1e-5)
        (True, True)
    """
    info = _observe(module, example_inputs) if example_inputs is not None else {}
    _ranks_from_producers(module, info)
    left: list[str] = []

    def visit(m: nn.Module, name: str) -> nn.Module | None:
        if "_nl_origin" in m.__dict__:  # a twin convert built for another library's module: that module back
            return _restore(m)
        if not is_normlab_layer(m):
            return None
        twin = _torch_twin(m, info.get(name), inference)
        if isinstance(twin, str):
            left.append(f"{name or '(the module)'} ({type(m).__name__}): {twin}")
            return None
        return twin

    out = _walk(module, visit)
    if left:
        msg = f"to_torch left {len(left)} normlab layer(s) in place: " + "; ".join(left)
        if strict:
            raise ValueError(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return out

r"""By behaviour: is an unknown module a normalization over its last dim that a normlab layer computes?

The probe runs copies of the module and of each candidate twin (RMSNorm or LayerNorm; a plain or a
zero-centered weight; rounding once at the end, or before the weight as Llama does) on a few inputs:
random rows, rows with a large mean, rows of small magnitude (where eps matters), rows of uneven
scale, with a non-trivial weight and bias, in float32 and in bfloat16.  A candidate is accepted only if
it matches every output to the dtype's rounding: float32 within 1e-4 relative (plus 1e-5 of the
output's RMS), bfloat16 within one unit in the last place (2**-7 relative, plus 2**-8 of the output's
RMS); among several, the one with the most bit-identical bf16 outputs wins.  The module itself is never
run: only deep copies, without gradients.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import LayerNorm, Norm
from ..layers._swap import tensor_kwargs
from .families import eps_of, unexpected_state
from .twins import CASTS, CastLayerNorm, CastRMSNorm

__all__ = ["probe", "looks_like_norm", "Candidate"]

#: tolerances of "the same to rounding": (relative, absolute as a fraction of the output's RMS)
#: (float32 decides what is computed: an added 1e-4 * RMS is refused; bfloat16 only that the rounding is
#: the dtype's: one unit in the last place of the element, or half of one at the output's RMS, where
#: intermediate roundings of a different casting order land)
_TOL = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (2.0 ** -7, 2.0 ** -8)}


@dataclass(frozen=True)
class Candidate:
    """A normlab configuration for a module of feature size D: mean-centered or not, gamma as 1 + weight or
    weight, where it rounds (see :class:`~normlab.tools.twins.CastRMSNorm`)."""

    center: bool
    zero_centered: bool
    cast: str

    def describe(self) -> str:
        what = "LayerNorm" if self.center else "RMSNorm"
        gamma = ", gamma = 1 + weight" if self.zero_centered else ""
        where = {"output": "rounded once", "input": "rounded to the input dtype before the weight",
                 "weight": "rounded to the weight dtype before the weight"}[self.cast]
        return f"{what}{gamma}, {where}"


def looks_like_norm(m: nn.Module) -> bool:
    """A module worth probing: its class name ends in Norm, or it has a 1-D weight and an eps attribute."""
    name = type(m).__name__
    if name.endswith("Norm") or name.endswith("LayerNorm") or name.endswith("RMSNorm"):
        return True
    w = m._parameters.get("weight")
    return w is not None and w.ndim == 1 and not isinstance(eps_of(m), str)


def _size(m: nn.Module) -> int | None:
    w = m._parameters.get("weight")
    if w is not None:
        return int(w.shape[0]) if w.ndim == 1 else None
    for name in ("normalized_shape", "hidden_size", "dim"):
        v = m.__dict__.get(name)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if isinstance(v, (tuple, list, torch.Size)) and len(v) == 1:
            return int(v[0])
    return None


def _build(c: Candidate, d: int, eps: float, weight: bool, bias: bool, kw: dict) -> nn.Module:
    if not weight:  # no parameters: any feature size
        return Norm(None, dims=-1, center=c.center, affine=False, eps=eps)
    if not c.center:
        return CastRMSNorm(d, eps, True, zero_centered_gamma=c.zero_centered, cast=c.cast, **kw)
    if c.cast == "input":
        return CastLayerNorm(d, eps, weight, bias, cast="input", **kw)
    return LayerNorm(d, eps, weight, bias, zero_centered_gamma=c.zero_centered, **kw)


def _candidates(weight: bool, bias: bool) -> list[Candidate]:
    out = []
    for center in ((True,) if bias else (False, True)):
        for zero in ((False, True) if weight else (False,)):
            casts = ("output",) if not weight or zero else (("output", "input") if center else CASTS)
            for cast in casts:
                out.append(Candidate(center, zero, cast))
    return out


def _inputs(d: int, dtype: torch.dtype, gen: torch.Generator) -> list[Tensor]:
    def r(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64)
    xs = [r(3, 5, d), r(2, 4, d) * 3 + 8, r(4, 2, d) + 5, r(4, d) * 1e-3, r(2, 3, d) * (1 + torch.arange(d) % 7)]
    return [x.to(dtype) for x in xs]


def _matches(a: Tensor, b: Tensor, dtype: torch.dtype) -> tuple[bool, float, float]:
    """(within rounding, max |a - b| / rounding allowance, fraction bit-identical)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False, float("inf"), 0.0
    a64, b64 = a.double(), b.double()
    rel, abs_frac = _TOL[dtype]
    allow = rel * a64.abs() + abs_frac * a64.square().mean().sqrt().clamp_min(1e-30)
    ratio = ((a64 - b64).abs() / allow).max().item() if a.numel() else 0.0
    same = (a == b).float().mean().item() if a.numel() else 1.0
    return bool(ratio <= 1.0), ratio, same


def probe(m: nn.Module) -> tuple[nn.Module, Candidate] | str:
    """A twin of ``m`` built by behaviour and the candidate it matched, or the reason none is built."""
    eps = eps_of(m)
    if isinstance(eps, str):
        return eps
    try:
        params = list(inspect.signature(m.forward).parameters.values())
    except (TypeError, ValueError):  # a forward without a signature (a builtin)
        params = []
    if len(params) != 1 or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        # the model may pass the other arguments (a gate, a mask); the twin takes one tensor
        return f"its forward takes {inspect.signature(m.forward) if params else '?'}, not one tensor"
    why = unexpected_state(m)
    if why:
        return why
    d = _size(m)
    if d is None and m._parameters.get("weight") is None and m._parameters.get("bias") is None:
        d = 32  # a module without parameters normalizes any size: probe it at one
    if d is None:
        w = m._parameters.get("weight")
        return (f"its weight has shape {tuple(w.shape)}, not (D,)" if w is not None
                else "it has no weight and no normalized_shape/hidden_size/dim to size a twin")
    weight = m._parameters.get("weight") is not None
    bias = m._parameters.get("bias") is not None
    if bias and not weight:
        return "it has a bias but no weight"
    if bias and m._parameters["bias"].shape != m._parameters["weight"].shape:
        return "its bias and weight differ in shape"
    gen = torch.Generator().manual_seed(0)
    scores: dict[Candidate, list[float]] = {c: [0.0, 1.0] for c in _candidates(weight, bias)}
    for dtype in (torch.float32, torch.bfloat16):
        try:
            orig = copy.deepcopy(m).to(dtype)
        except Exception as e:  # a module that cannot be copied cannot be probed
            return f"it cannot be deep-copied to probe it ({type(e).__name__})"
        with torch.no_grad():
            gamma = torch.randn(d, generator=gen).mul_(0.5).add_(1.0)  # a non-trivial gamma, whatever the storage
            beta = torch.randn(d, generator=gen).mul_(0.3)
            for c in list(scores):
                for x in _inputs(d, dtype, gen):
                    twin = _build(c, d, eps, weight, bias, {"dtype": dtype})
                    if weight:
                        # the same stored weight in both: gamma if the candidate says plain, gamma - 1 if offset
                        orig.weight.copy_(gamma - 1 if c.zero_centered else gamma)
                        twin.weight.copy_(orig.weight)
                    if bias:
                        orig.bias.copy_(beta)
                        twin.bias.copy_(beta)
                    try:
                        a, a2 = orig(x.clone()), orig(x.clone())
                    except Exception as e:
                        return (f"its forward failed on a {tuple(x.shape)} {dtype} input "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})")
                    if not isinstance(a, Tensor):
                        return f"its forward returns {type(a).__name__}, not one tensor"
                    if a.shape != x.shape:
                        return (f"its output has shape {tuple(a.shape)} for an input of shape {tuple(x.shape)} "
                                "(a norm's output has its input's shape)")
                    if not (isinstance(a2, Tensor) and torch.equal(a, a2)):
                        return "its forward is not deterministic (two calls on one input differ)"
                    ok, ratio, same = _matches(a, twin(x.clone()), dtype)
                    scores[c][0] = max(scores[c][0], ratio)
                    scores[c][1] = min(scores[c][1], same) if dtype == torch.bfloat16 else scores[c][1]
    passing = [c for c, (ratio, _) in scores.items() if ratio <= 1.0]
    if not passing:
        best = min(scores, key=lambda c: scores[c][0])
        return (f"no normlab layer matches its outputs to rounding (closest: {best.describe()}, off by "
                f"{scores[best][0]:.3g}x the rounding allowance)")
    best = max(passing, key=lambda c: (scores[c][1], -scores[c][0]))
    twin = _build(best, d, eps, weight, bias, tensor_kwargs(m))
    return twin, best

"""Watching a forward: which module ran when, on what, and where its input came from.

Everything here runs on a *work copy* of the user's model (:class:`Workbench`):
forward hooks record every module call in execution order, the tensors a
call received and returned (by identity, so "the output of this conv is the
input of that BatchNorm" is read off the run, not off ``nn.Sequential``
positions), and a torch-function mode sees the attention logits of
``scaled_dot_product_attention`` and of softmax over attention scores.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

__all__ = ["Call", "Trace", "Workbench", "Snapshot", "first_tensor", "all_tensors", "record"]

#: keyword arguments that carry a padding mask into a layer
MASK_KWARGS = ("mask", "padding_mask", "attention_mask", "key_padding_mask")


def all_tensors(obj: Any, depth: int = 0) -> Iterator[Tensor]:
    """Every tensor in a nested output (tuples, lists, dicts, Hugging Face ModelOutput), in order."""
    if depth > 6:
        return
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_tensors(v, depth + 1)
    elif isinstance(obj, (tuple, list)):
        for v in obj:
            yield from all_tensors(v, depth + 1)


def first_tensor(obj: Any, floating: bool = False) -> Tensor | None:
    for t in all_tensors(obj):
        if not floating or t.is_floating_point():
            return t
    return None


def primary_output(obj: Any) -> Tensor | None:
    """The model's main output: ``logits`` / ``last_hidden_state`` where named, else the first float tensor."""
    if isinstance(obj, dict):
        for key in ("logits", "last_hidden_state", "prediction_logits", "pooler_output"):
            v = obj.get(key)
            if isinstance(v, Tensor) and v.is_floating_point():
                return v
    for t in all_tensors(obj):
        if t.is_floating_point() and t.ndim >= 1:
            return t
    return None


def _first_float_input(args: tuple, kwargs: dict) -> tuple[Tensor | None, int | str | None]:
    for i, a in enumerate(args):
        if isinstance(a, Tensor) and a.is_floating_point():
            return a, i
    for k, v in kwargs.items():
        if isinstance(v, Tensor) and v.is_floating_point():
            return v, k
    return None, None


def _clone(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, tuple):
        return tuple(_clone(v) for v in obj)
    if isinstance(obj, list):
        return [_clone(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    return obj


@dataclass(eq=False)
class Call:
    """One call of one module during the observed forward."""

    index: int
    name: str
    module: nn.Module
    parent: int | None
    training: bool
    x_id: int | None = None
    x_ptr: int | None = None  # the input's storage: a view or slice of a tensor shares it
    x_key: int | str | None = None
    x_shape: tuple[int, ...] = ()
    x_dtype: torch.dtype | None = None
    producer: int | None = None  # the call whose output tensor is this call's input
    x_is_input: bool = False  # the input is one of the model's own inputs
    mask_given: bool = False  # a padding mask went in as a keyword (mask=..., attention_mask=...)
    y_id: int | None = None
    y_ptr: int | None = None
    y_shape: tuple[int, ...] = ()
    y_dtype: torch.dtype | None = None
    y_is_x: bool = False
    single: bool = False  # the output is one tensor
    done: bool = False
    # kept only for the modules the doctor studies (norms, blocks): detached clones
    x: Tensor | None = None
    y: Tensor | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Attention:
    """The largest attention logit seen at one call of softmax / scaled_dot_product_attention."""

    call: int | None  # the innermost module running at the time
    max_logit: float
    shape: tuple[int, ...]
    qk_normed: bool
    source: str


@dataclass
class Trace:
    calls: list[Call]
    by_name: dict[str, list[Call]]
    output: Any
    output_ids: set[int]
    output_ptrs: set[int]
    input_ids: dict[int, int | str]
    attention: list[Attention]
    modules: dict[str, nn.Module]

    def first(self, name: str) -> Call | None:
        calls = self.by_name.get(name)
        return calls[0] if calls else None

    def producer_chain(self, call: Call, passthrough: Callable[[Call], bool], hops: int = 12) -> Iterator[Call]:
        """The calls that produced ``call``'s input, walking back through pass-through calls."""
        cur = call
        for _ in range(hops):
            if cur.producer is None:
                return
            prod = self.calls[cur.producer]
            yield prod
            if not passthrough(prod):
                return
            cur = prod

    def consumers(self, tensor_id: int, after: int) -> list[Call]:
        return [c for c in self.calls[after + 1:] if c.x_id == tensor_id]

    def ancestors(self, call: Call) -> Iterator[Call]:
        p = call.parent
        while p is not None:
            yield self.calls[p]
            p = self.calls[p].parent


class _Recorder(TorchFunctionMode):
    """Sees attention logits: scaled_dot_product_attention's q k^T, softmax over (B, H, T, S) scores."""

    SOFTMAX = {torch.softmax, F.softmax, Tensor.softmax}

    def __init__(self, stack: list[int], calls: list[Call]):
        super().__init__()
        self.stack, self.calls = stack, calls
        self.seen: list[Attention] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        try:
            if func is F.scaled_dot_product_attention:
                self._sdpa(args, kwargs)
            elif func is F.multi_head_attention_forward:  # its own softmax / sdpa calls are not seen
                self._mha(args, kwargs)
            elif func in self.SOFTMAX:
                self._softmax(args, kwargs)
        except Exception:  # noqa: BLE001 -- observing must never break the user's forward
            pass
        return out

    def _owner(self) -> int | None:
        return self.stack[-1] if self.stack else None

    def _in_attention(self) -> bool:
        return any("attention" in type(self.calls[i].module).__name__.lower() or
                   isinstance(self.calls[i].module, nn.MultiheadAttention) for i in self.stack)

    def _softmax(self, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("input")
        dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
        if not isinstance(x, Tensor) or not x.is_floating_point() or dim is None:
            return
        dim = dim % x.ndim
        if not (x.ndim == 4 and dim == 3 or x.ndim == 3 and dim == 2 and self._in_attention()):
            return
        s = x.detach().float()
        real = s[(s > -9e3) & torch.isfinite(s)]
        if real.numel():
            self.seen.append(Attention(self._owner(), float(real.abs().max()), tuple(x.shape),
                                       self._owner_qk_normed(), "softmax"))

    def _owner_qk_normed(self) -> bool:
        for i in reversed(self.stack):
            m = self.calls[i].module
            names = {n.lower() for n, c in m.named_children() if c is not None}
            if any(n in names for n in ("q_norm", "k_norm", "q_layernorm", "k_layernorm", "query_norm",
                                        "key_norm", "qk_norm", "q_ln", "k_ln")):
                return True
            if getattr(m, "qk_kind", "none") not in ("none", None):
                return True
        return False

    def _mha(self, args, kwargs) -> None:
        """torch.nn.MultiheadAttention: the logits from its projection weights ((L, N, E) inputs)."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias")
        a = dict(zip(names, args))
        a.update(kwargs)
        q, k, heads = a.get("query"), a.get("key"), int(a.get("num_heads", 1))
        if not isinstance(q, Tensor) or not isinstance(k, Tensor):
            return
        w, b = a.get("in_proj_weight"), a.get("in_proj_bias")
        e = q.shape[-1]
        if a.get("use_separate_proj_weight") or not isinstance(w, Tensor):
            wq, wk = a.get("q_proj_weight"), a.get("k_proj_weight")
            bq = bk = None
        else:
            wq, wk = w[:e], w[e:2 * e]
            bq, bk = (b[:e], b[e:2 * e]) if isinstance(b, Tensor) else (None, None)
        if not isinstance(wq, Tensor) or not isinstance(wk, Tensor):
            return
        q, k = q.detach().float(), k.detach().float()
        if q.ndim == 2:
            q, k = q.unsqueeze(1), k.unsqueeze(1)
        qp = F.linear(q, wq.detach().float(), None if bq is None else bq.detach().float())  # (L, N, E)
        kp = F.linear(k, wk.detach().float(), None if bk is None else bk.detach().float())
        hd = e // heads
        qh = qp.reshape(qp.shape[0], -1, heads, hd).permute(1, 2, 0, 3)  # (N, H, L, hd)
        kh = kp.reshape(kp.shape[0], -1, heads, hd).permute(1, 2, 0, 3)
        logits = qh @ kh.transpose(-2, -1) / math.sqrt(hd)
        real = logits[torch.isfinite(logits)]
        if real.numel():
            self.seen.append(Attention(self._owner(), float(real.abs().max()), tuple(logits.shape), False, "mha"))

    def _sdpa(self, args, kwargs) -> None:
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale")
        a = dict(zip(names, args))
        a.update(kwargs)
        q, k = a.get("query"), a.get("key")
        if not isinstance(q, Tensor) or not isinstance(k, Tensor) or q.ndim < 3:
            return
        mask, causal, scale = a.get("attn_mask"), bool(a.get("is_causal", False)), a.get("scale")
        q, k = q.detach(), k.detach()
        if q.ndim == 4 and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[-2] > 2e7:  # a slice is enough
            q, k = q[:1, :4], k[:1, :4] if k.shape[1] >= 4 else k[:1]
            if isinstance(mask, Tensor):
                mask = mask[:1, :4] if mask.ndim == 4 and mask.shape[1] >= 4 else mask[:1] if mask.ndim == 4 else mask
        if q.ndim == 4 and k.shape[1] != q.shape[1] and q.shape[1] % k.shape[1] == 0:  # grouped-query attention
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        e = q.shape[-1]
        logits = (q.float() @ k.float().transpose(-2, -1)) * (scale if scale is not None else 1 / math.sqrt(e))
        allowed = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device)
        if causal:
            allowed = allowed.tril()
        allowed = allowed.expand(logits.shape)
        if isinstance(mask, Tensor):
            if mask.dtype == torch.bool:
                allowed = allowed & mask.expand(logits.shape)
            else:
                allowed = allowed & (mask.float() > -9e3).expand(logits.shape)
        real = logits[allowed & torch.isfinite(logits)]
        if real.numel():
            self.seen.append(Attention(self._owner(), float(real.abs().max()), tuple(logits.shape),
                                       _rows_normed(q) and _rows_normed(k) or self._owner_qk_normed(), "sdpa"))


def _rows_normed(t: Tensor) -> bool:
    """Rows (the last dim) of one length: queries/keys that went through a norm (or F.normalize)."""
    r = t.float().square().mean(-1).sqrt().flatten()
    return bool(r.numel() > 1 and float(r.std() / r.mean().clamp_min(1e-30)) < 0.05)


def record(model: nn.Module, inputs: tuple, kwargs: dict, *, keep: Callable[[str, nn.Module], bool],
           grad: bool = False, watch_attention: bool = True, seed: int = 0) -> Trace:
    """Run ``model(*inputs, **kwargs)`` once with hooks on every module and return what was seen.

    ``keep(name, module)`` says for which modules the input and output
    values are kept (detached clones); for the rest only shapes and tensor
    identities are.  Every hook is removed before returning, also on errors.
    """
    calls: list[Call] = []
    by_name: dict[str, list[Call]] = {}
    stack: list[int] = []
    producer: dict[int, int] = {}
    alive: list[Tensor] = []  # holds every recorded tensor, so that ids stay unique during the run
    input_ids: dict[int, int | str] = {}
    for i, a in enumerate(inputs):
        for t in all_tensors(a):
            input_ids[id(t)] = i
    for key, v in kwargs.items():
        for t in all_tensors(v):
            input_ids[id(t)] = key
    modules = dict(model.named_modules())
    keeps = {name: keep(name, m) for name, m in modules.items()}

    def pre(name: str):
        def hook(mod, args, kw):
            c = Call(index=len(calls), name=name, module=mod, parent=stack[-1] if stack else None,
                     training=mod.training)
            x, key = _first_float_input(args, kw)
            if x is not None:
                c.x_id, c.x_key, c.x_shape, c.x_dtype = id(x), key, tuple(x.shape), x.dtype
                c.x_ptr = _storage(x)
                c.producer = producer.get(id(x))
                c.x_is_input = id(x) in input_ids
                alive.append(x)
                if keeps[name]:
                    c.x = x.detach().clone()
                    c.args, c.kwargs = _clone(tuple(args)), _clone(dict(kw))
            c.mask_given = any(kw.get(k) is not None for k in MASK_KWARGS) or \
                any(isinstance(a, Tensor) and a.dtype == torch.bool for a in args[1:])
            calls.append(c)
            by_name.setdefault(name, []).append(c)
            stack.append(c.index)
        return hook

    def post(name: str):
        def hook(mod, args, kw, output):
            while stack and calls[stack[-1]].module is not mod:  # an exception skipped a post-hook
                stack.pop()
            if not stack:
                return
            c = calls[stack.pop()]
            c.done = True
            tensors = list(all_tensors(output))
            y = tensors[0] if tensors else None
            if y is not None:
                c.y_id, c.y_shape, c.y_dtype = id(y), tuple(y.shape), y.dtype
                c.y_ptr = _storage(y)
                c.y_is_x = c.x_id == id(y)
                c.single = isinstance(output, Tensor)
                if keeps[name] and y.is_floating_point():
                    c.y = y.detach().clone()
            for t in tensors:
                alive.append(t)
                producer.setdefault(id(t), c.index)
        return hook

    handles = []
    try:
        for name, m in modules.items():
            handles.append(m.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post(name), with_kwargs=True))
        recorder = _Recorder(stack, calls)
        with _rng(inputs, model, seed), torch.set_grad_enabled(grad):
            if watch_attention:
                with recorder:
                    output = model(*inputs, **kwargs)
            else:
                output = model(*inputs, **kwargs)
    except Exception as e:
        e.doctor_open = [calls[i].name for i in stack]  # type: ignore[attr-defined]  # the calls it broke out of
        raise
    finally:
        for h in handles:
            h.remove()
    outs = list(all_tensors(output))
    out_ptrs = {p for p in (_storage(t) for t in outs) if p is not None}
    return Trace(calls, by_name, output, {id(t) for t in outs}, out_ptrs, input_ids, recorder.seen, modules)


def _storage(t: Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 -- tensor subclasses without storage
        return None
    return ptr or None


def _devices(*objs: Any) -> list[int]:
    devs: set[int] = set()
    for o in objs:
        tensors = list(o.parameters()) + list(o.buffers()) if isinstance(o, nn.Module) else list(all_tensors(o))
        for t in tensors:
            if t.device.type == "cuda" and t.device.index is not None:
                devs.add(t.device.index)
    return sorted(devs)


@contextmanager
def _rng(inputs: Any, model: nn.Module, seed: int):
    """The global RNG as it was afterwards (dropout draws from it), seeded inside for repeatable results."""
    with torch.random.fork_rng(devices=_devices(inputs, model)):
        torch.manual_seed(seed)
        yield


class Snapshot:
    """Everything a run could change on a model: parameter values, grads and requires_grad, buffers,
    the training flag of every submodule.  ``restore()`` puts it all back in place (same tensor objects)."""

    def __init__(self, model: nn.Module, *, values: bool = True):
        self.model = model
        self.training = [(m, m.training) for m in model.modules()]
        self.params = [(p, p.detach().clone() if values else None, None if p.grad is None else p.grad.clone(),
                        p.requires_grad) for p in _unique(model.parameters())]
        self.buffers = [(m, n, None if b is None else b.detach().clone()) for m in model.modules()
                        for n, b in m._buffers.items()]

    def restore(self) -> None:
        with torch.no_grad():
            for p, data, grad, rg in self.params:
                if data is not None and not torch.equal(p.data, data):
                    p.data.copy_(data)
                if grad is None:
                    p.grad = None
                elif p.grad is None or p.grad.shape != grad.shape:
                    p.grad = grad.clone()
                else:
                    p.grad.copy_(grad)
                if p.requires_grad != rg:
                    p.requires_grad_(rg)
            for m, n, b in self.buffers:
                cur = m._buffers.get(n)
                if b is None:
                    m._buffers[n] = None
                elif cur is not None and cur.shape == b.shape and cur.dtype == b.dtype:
                    cur.copy_(b)
                else:
                    m._buffers[n] = b
        for m, t in self.training:
            m.training = t


def _unique(params: Iterator[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class Workbench:
    """A deep copy of the user's model that the doctor may run, perturb and train a step.

    If the model cannot be deep-copied, the doctor works on the model itself
    and a :class:`Snapshot` taken first restores every value, gradient,
    flag and buffer when it is done.
    """

    def __init__(self, model: nn.Module):
        self.original = model
        self.guard: Snapshot | None = None
        try:
            self.model = copy.deepcopy(model)
            self.copied = True
        except Exception:  # noqa: BLE001 -- uncopyable attributes: work in place, restore afterwards
            self.model = model
            self.copied = False
            self.guard = Snapshot(model)
        self.state = Snapshot(self.model, values=not self.copied)
        self.modules = dict(self.model.named_modules())

    def reset(self) -> None:
        """Back to the state the copy started in (buffers, flags, grads)."""
        self.state.restore()

    def run(self, inputs: tuple, kwargs: dict, *, grad: bool = False, seed: int = 0) -> Any:
        with _rng(inputs, self.model, seed), torch.set_grad_enabled(grad):
            return self.model(*inputs, **kwargs)

    @contextmanager
    def hooks(self, hooks: dict[str, Callable]) -> Iterator[None]:
        """Forward hooks ``{module name: hook(module, args, output)}`` for the duration of the block."""
        handles = [self.modules[n].register_forward_hook(h) for n, h in hooks.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def close(self) -> None:
        self.reset()
        if self.guard is not None:
            self.guard.restore()

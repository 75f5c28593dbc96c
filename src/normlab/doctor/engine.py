"""The doctor's shared state: the model (unwrapped), the observed forward, the norms found, extra passes."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .probe import (CONTAINERS, Probe, class_kind, effective_gamma, gamma_of, is_elementwise_class, is_weighted_class,
                    owns_matrices, probe_module)
from .report import Finding
from .trace import Call, Trace, Workbench, all_tensors, primary_output, record

__all__ = ["Context", "NormInfo", "DoctorInputError"]


class DoctorInputError(ValueError):
    """The model's forward failed on the example inputs (a problem with the inputs, not a finding)."""


class _Stop(Exception):
    """Raised by a hook to end a forward early, once what was wanted has been seen."""


LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(eq=False)
class NormInfo:
    """A module the doctor treats as a normalizer: by what a probe measured, or by its class."""

    name: str  # relative to the unwrapped model
    module: nn.Module  # the user's module
    work: nn.Module  # the same module in the work copy
    kind: str
    probe: Probe | None
    calls: list[Call] = field(default_factory=list)
    known: bool = False  # a class normlab knows (torch.nn, normlab)
    zeroed: bool = False  # gamma is effectively 0: the output does not depend on the input
    how: str = "class"

    @property
    def cls(self) -> str:
        return type(self.module).__name__

    @property
    def batch_coupled(self) -> bool:
        """Pools over the batch in training mode (uses batch statistics there)."""
        if self.probe is not None and self.probe.normalizer:
            return self.probe.batch_coupled
        if self.probe is not None and not self.zeroed and self.probe.error is None:
            return False  # measured: not a normalizer in training mode (a frozen BatchNorm)
        return self.kind == "batch"

    @property
    def eval_batch_coupled(self) -> bool:
        """Still pools over the batch in eval mode (no running statistics)."""
        if self.probe is not None and self.probe.eval_pooled is not None:
            return 0 in self.probe.eval_pooled
        return self.kind == "batch" and not getattr(self.module, "track_running_stats", True)

    def uses_batch_stats(self, call: Call) -> bool:
        return self.batch_coupled and (call.training or self.eval_batch_coupled)

    @property
    def pooled(self) -> tuple[int, ...]:
        return self.probe.pooled if self.probe is not None else ()

    def to_dict(self, full: str) -> dict[str, Any]:
        d: dict[str, Any] = {"module": full, "class": self.cls, "kind": self.kind, "how": self.how,
                             "calls": len(self.calls)}
        if self.probe is not None and self.probe.normalizer:
            d["pooled"] = self.probe.describe()
        if self.zeroed:
            d["zeroed"] = True
        return d


def _kind_from_probe(p: Probe, known: str | None = None) -> str:
    """A name for what the probe measured (the class's own name where normlab knows the class)."""
    if known is not None and known != "norm":
        return known
    nd = len(p.shape)
    pooled = set(p.pooled)
    tag = "" if p.center else " (no re-centering)"
    if 0 in pooled:
        return "batch"
    if 1 in p.grouped:
        return "group"
    if pooled == {nd - 1} and not p.grouped:
        return "layer" if p.center else "rms"
    if pooled == {1} and nd >= 3:
        return ("layer" if p.center else "rms") + " (channels-first)"
    if pooled == set(range(1, nd)):
        return "layer (per sample)" + tag
    if pooled and min(pooled) >= 2 and nd >= 4 and pooled == set(range(2, nd)):
        return "instance" + tag
    return "norm" + tag


def _unwrap(model: nn.Module) -> tuple[nn.Module, str, str | None]:
    """(the module that computes, the name prefix of its modules, the wrapper's class name)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    if isinstance(model, wrappers):
        return model.module, "module.", type(model).__name__
    inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
    if isinstance(inner, nn.Module) and type(model).__name__ == "OptimizedModule":
        root, prefix, wrapper = _unwrap(inner)
        return root, "_orig_mod." + prefix, wrapper
    return model, "", None


def _static_candidate(name: str, m: nn.Module) -> bool:
    """Modules worth probing: not containers, weighted layers or activations; no matrices unless named a norm."""
    if isinstance(m, CONTAINERS) or is_weighted_class(m) or is_elementwise_class(m):
        return False
    if class_kind(m) is not None:
        return True
    return not owns_matrices(m) or "norm" in type(m).__name__.lower()


class Context:
    """Everything the checks read: the user's model, the observed run, the norms, and extra measurements."""

    def __init__(self, model: nn.Module, inputs: tuple | None, kwargs: dict, optimizer: Any, *, train_step: bool,
                 causal: bool, synthetic: bool, scheduler: Any = None):
        self.user_model = model
        self.root, self.prefix, self.wrapper = _unwrap(model)
        lazy = [f"'{self.prefix + n}' ({type(m).__name__})" for n, m in self.root.named_modules()
                if isinstance(m, nn.modules.lazy.LazyModuleMixin)
                and m.has_uninitialized_params()]  # type: ignore[misc]
        if lazy:
            raise DoctorInputError(
                f"the model has {len(lazy)} lazy module(s) not initialized yet: {', '.join(lazy[:5])}"
                f"{' ...' if len(lazy) > 5 else ''}; their shapes are unknown until a first forward: call the model "
                "once on an example (model(x)), then run the doctor")
        self.scheduler = scheduler
        self.inputs = inputs
        self.kwargs = kwargs
        self.optimizer = optimizer
        self.train_step = train_step
        self.causal = causal
        self.synthetic = synthetic
        self.user_modules = dict(self.root.named_modules())
        self.bench: Workbench | None = None
        self.trace: Trace | None = None
        self.norms: dict[str, NormInfo] = {}
        self.probes: dict[str, Probe] = {}
        self.findings: list[Finding] = []  # raised while observing (a batch of one in training)
        self.notes: list[str] = []
        self.grads: dict[str, Tensor | None] | None = None
        self.loss: float | None = None
        self.moved: dict[str, float] = {}  # running_mean change of each BatchNorm in the observed forward
        self._cache: dict[str, Any] = {}
        self.eval_fallback = False  # the training-mode forward failed (a batch of one): observed in eval mode

    # ------------------------------------------------------------ names
    def full(self, name: str) -> str:
        """The dotted name in the user's model (with the wrapper's prefix)."""
        if not self.prefix:
            return name
        return self.prefix + name if name else self.prefix[:-1]

    @property
    def has_inputs(self) -> bool:
        return self.trace is not None

    def work(self, name: str) -> nn.Module:
        assert self.bench is not None
        return self.bench.modules[name]

    def work_modules(self) -> dict[str, nn.Module]:
        assert self.bench is not None
        return self.bench.modules

    # ------------------------------------------------------------ observing
    def observe(self) -> None:
        assert self.inputs is not None
        self.bench = Workbench(self.root)
        if not self.bench.copied:
            self.notes.append("the model could not be deep-copied: the doctor ran it in place and restored every "
                              "parameter, gradient, buffer and flag afterwards")
        keep = self._keeper()
        try:
            self.trace = record(self.bench.model, self.inputs, self.kwargs, keep=keep)
        except Exception as e:  # noqa: BLE001
            if not _one_value_error(e):
                raise DoctorInputError(f"the model's forward failed on the example inputs: {type(e).__name__}: {e}") \
                    from e
            self._batch_of_one(e)
            self.bench.reset()
            self.bench.model.eval()
            self.eval_fallback = True
            self.notes.append("observed in eval mode: the training-mode forward failed (a batch of one)")
            try:
                self.trace = record(self.bench.model, self.inputs, self.kwargs, keep=keep)
            except Exception as e2:  # noqa: BLE001
                raise DoctorInputError(f"the model's forward failed on the example inputs: {type(e2).__name__}: "
                                       f"{e2}") from e2
        self._running_moves()
        self.bench.reset()

    def _keeper(self):
        assert self.bench is not None
        stacks = {n for group in self._stack_groups(self.bench.model) for n, _ in group}

        def keep(name: str, m: nn.Module) -> bool:
            return name in stacks or (name != "" and _static_candidate(name, m))
        return keep

    def _batch_of_one(self, e: Exception) -> None:
        """A BatchNorm refused a batch of one in training: find which (the innermost call left open)."""
        open_calls = [n for n in getattr(e, "doctor_open", []) if n in self.user_modules]
        names = [n for n in reversed(open_calls) if class_kind(self.user_modules[n]) == "batch"] or \
            [n for n, m in self.user_modules.items() if class_kind(m) == "batch" and m.training]
        name = names[0] if names else (open_calls[-1] if open_calls else "")
        self.findings.append(Finding(
            "bn-small-batch", "error", self.full(name),
            f"the training-mode forward fails: {str(e).splitlines()[0]} -- with one value per channel the batch "
            "variance is 0 and BatchNorm's output would be all beta (C08)",
            "train with more than one sample per batch (16 or more, C09), or use GroupNorm/LayerNorm, which do not "
            "depend on the batch; for inference call model.eval() first", "C08"))

    def _running_moves(self) -> None:
        assert self.bench is not None
        for name, m in self.user_modules.items():
            rm = getattr(m, "running_mean", None)
            wm = getattr(self.bench.modules.get(name), "running_mean", None)
            if isinstance(rm, Tensor) and isinstance(wm, Tensor) and rm.shape == wm.shape:
                self.moved[name] = float((wm.detach().double() - rm.detach().double()).abs().max()) \
                    if rm.numel() else 0.0

    @staticmethod
    def _stack_groups(model: nn.Module) -> list[list[tuple[str, nn.Module]]]:
        """Repeated blocks: ≥ 2 same-class children of a ModuleList/Sequential that hold weight matrices."""
        groups = []
        for name, m in model.named_modules():
            if not isinstance(m, (nn.ModuleList, nn.Sequential)):
                continue
            by_cls: dict[type, list[tuple[str, nn.Module]]] = {}
            for cname, child in m.named_children():
                by_cls.setdefault(type(child), []).append((f"{name}.{cname}" if name else cname, child))
            for members in by_cls.values():
                if len(members) >= 2 and owns_matrices(members[0][1]):
                    groups.append(members)
        return groups

    def stacks(self) -> list[list[tuple[str, nn.Module]]]:
        assert self.bench is not None
        return self._stack_groups(self.bench.model)

    # ------------------------------------------------------------ norms
    def classify(self) -> None:
        """Find the norm-like modules: probe every candidate that ran; class knowledge for the rest."""
        if self.trace is not None:
            self._classify_called()
        for name, m in self.user_modules.items():
            if name in self.norms or name == "" or (self.trace is not None and name in self.trace.by_name):
                continue
            kind = class_kind(m)
            if kind is not None:
                self.norms[name] = NormInfo(name, m, self._work_or(name, m), kind, None, known=True,
                                            zeroed=_zero(effective_gamma(m)), how="class (not called)"
                                            if self.trace is not None else "class")
            elif "norm" in type(m).__name__.lower() and _static_candidate(name, m):
                info = self._static_probe(name, m)
                if info is not None:
                    self.norms[name] = info
        # the innermost module is the norm (a wrapper around a LayerNorm is not a second norm)
        names = sorted(self.norms)
        for n in names:
            if any(o != n and o.startswith(n + ".") for o in names) and not self.norms[n].known:
                del self.norms[n]

    def _work_or(self, name: str, m: nn.Module) -> nn.Module:
        return self.bench.modules.get(name, m) if self.bench is not None else m

    def _classify_called(self) -> None:
        assert self.trace is not None and self.bench is not None
        for name, calls in self.trace.by_name.items():
            if name == "":
                continue
            m = self.user_modules.get(name)
            if m is None:
                continue
            work = self.bench.modules[name]
            c = next((c for c in calls if c.done and c.x is not None and c.single and c.y_shape == c.x_shape), None)
            kind = class_kind(m)
            if c is None:
                if kind is not None:
                    self.norms[name] = NormInfo(name, m, work, kind, None, calls, True, _zero(effective_gamma(m)))
                continue
            assert c.x_key is not None and c.x_dtype is not None
            p = probe_module(work, c.x_shape, c.x_dtype, args=c.args, kwargs=c.kwargs, x_key=c.x_key,
                             device=c.x.device if c.x is not None else None)
            self.probes[name] = p
            if p.normalizer:
                self.norms[name] = NormInfo(name, m, work, _kind_from_probe(p, kind), p, calls, kind is not None,
                                            how="probe")
            elif p.dead and (kind is not None or gamma_of(m) is not None):
                revived = self._revive(work, c)
                if revived is not None or kind is not None:
                    k = _kind_from_probe(revived, kind) if revived is not None else kind
                    self.norms[name] = NormInfo(name, m, work, k or "norm", revived, calls, kind is not None,
                                                zeroed=True, how="probe (gamma 0)")
            elif kind is not None:
                self.norms[name] = NormInfo(name, m, work, kind, p, calls, True, how="class")

    def _revive(self, work: nn.Module, c: Call) -> Probe | None:
        """Probe again with gamma = 1: a zeroed norm shows what it would compute."""
        found = gamma_of(work)
        if found is None:
            return None
        m = copy.deepcopy(work)
        g = dict(m.named_parameters(recurse=False))[found[0]]
        with torch.no_grad():
            g.fill_(0.0 if getattr(m, "zero_centered_gamma", False) else 1.0)
        assert c.x_key is not None and c.x_dtype is not None
        p = probe_module(m, c.x_shape, c.x_dtype, args=c.args, kwargs=c.kwargs, x_key=c.x_key,
                         device=c.x.device if c.x is not None else None)
        return p if p.normalizer else None

    def _static_probe(self, name: str, m: nn.Module) -> NormInfo | None:
        """A module named like a norm that did not run: try it on (N, T, D) and (N, D, H, W) inputs of its size."""
        found = gamma_of(m)
        if found is None or found[1].ndim != 1:
            return None
        d = found[1].numel()
        dtype, device = found[1].dtype, found[1].device
        for shape in ((4, 5, d), (4, d, 3, 3)):
            p = probe_module(m, shape, dtype, device=device)
            if p.normalizer:
                return NormInfo(name, m, self._work_or(name, m), _kind_from_probe(p), p, how="probe (synthetic)")
            if p.dead:
                mm = copy.deepcopy(m)
                with torch.no_grad():
                    dict(mm.named_parameters(recurse=False))[found[0]].fill_(1.0)
                q = probe_module(mm, shape, dtype, device=device)
                if q.normalizer:
                    return NormInfo(name, m, self._work_or(name, m), _kind_from_probe(q), q, zeroed=True,
                                    how="probe (synthetic, gamma 0)")
        return None

    # ------------------------------------------------------------ graph helpers
    def passthrough(self, call: Call) -> bool:
        """A call that hands its input on element by element (activation, dropout, identity)."""
        if not call.single or call.y_shape != call.x_shape:
            return False
        if is_elementwise_class(call.module):
            return True
        p = self.probes.get(call.name)
        return p is not None and p.elementwise

    def norm_of_call(self, call: Call) -> NormInfo | None:
        return self.norms.get(call.name)

    def inside(self, call: Call, outer: Call) -> bool:
        assert self.trace is not None
        return any(a is outer for a in self.trace.ancestors(call))

    # ------------------------------------------------------------ extra passes
    def run_train_step(self) -> None:
        """One forward + backward on the work copy; the gradients are kept in ``self.grads``."""
        assert self.bench is not None and self.inputs is not None
        self.bench.reset()
        if self.eval_fallback:  # training mode cannot run on this batch: the step runs in eval mode
            self.bench.model.eval()
            self.notes.append("train step: run in eval mode, as the training-mode forward fails on this batch")
        try:
            out = self.bench.run(self.inputs, self.kwargs, grad=True)
            loss = _loss_of(out)
            if loss is None:
                self.notes.append("train step: the output holds no differentiable float tensor; no backward")
                return
            loss.backward()
        except Exception as e:  # noqa: BLE001 -- the forward ran once already: report, do not crash
            self.notes.append(f"train step failed, so the checks that use gradients ran without them: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            self.bench.reset()
            return
        self.loss = float(loss.detach())
        self.grads = {n: None if p.grad is None else p.grad.detach().clone()
                      for n, p in self.bench.model.named_parameters()}
        self.bench.reset()

    def earliest(self) -> tuple[str, Any]:
        """Where the signal enters: ("input", position) for a float model input, ("module", name) otherwise."""
        assert self.inputs is not None and self.trace is not None
        for i, a in enumerate(self.inputs):
            if isinstance(a, Tensor) and a.is_floating_point():
                return "input", i
        for k, v in self.kwargs.items():
            if isinstance(v, Tensor) and v.is_floating_point() and "mask" not in k:
                return "input", k
        for c in self.trace.calls:
            if c.name and not list(c.module.children()) and c.y_dtype is not None and c.y_dtype.is_floating_point:
                return "module", c.name
        return "none", None

    def sensitivity(self, taps: list[str] = (), gamma_one: list[str] = ()) -> tuple[Tensor | None, dict]:
        """In eval mode: the gradient of <output, R> at the entry of the signal and at the outputs of ``taps``.

        ``gamma_one``: norms whose gamma is set to 1 for this pass.
        """
        assert self.bench is not None and self.inputs is not None
        bench = self.bench
        bench.reset()
        bench.model.eval()
        kind, where = self.earliest()
        inputs, kwargs = list(self.inputs), dict(self.kwargs)
        leaves: dict[str, Tensor] = {}
        entry: list[Tensor] = []
        if kind == "input":
            t = (inputs[where] if isinstance(where, int) else kwargs[where]).detach().clone().requires_grad_(True)
            if isinstance(where, int):
                inputs[where] = t.clone()  # a copy goes in: the model may change its input in place
            else:
                kwargs[where] = t.clone()
            entry.append(t)

        def tap(name: str, is_entry: bool = False):
            def hook(mod, args, output):
                if not isinstance(output, Tensor) or not output.is_floating_point():
                    return None
                leaf = output.detach().clone().requires_grad_(True)
                if is_entry:
                    if entry:
                        return None
                    entry.append(leaf)
                else:
                    leaves[name] = leaf
                return leaf.clone()  # what follows may work in place (ReLU(inplace=True)); the leaf stays intact
            return hook

        hooks = {n: tap(n) for n in taps}
        if kind == "module":
            hooks[where] = tap(where, True)
        saved = []
        with torch.no_grad():
            for n in gamma_one:
                found = gamma_of(bench.modules[n])
                if found is not None:
                    saved.append((found[1], found[1].detach().clone()))
                    found[1].fill_(0.0 if getattr(bench.modules[n], "zero_centered_gamma", False) else 1.0)
        try:
            with bench.hooks(hooks):
                out = bench.run(tuple(inputs), kwargs, grad=True)
            y = primary_output(out)
            wrt = entry + list(leaves.values())
            if y is None or not y.requires_grad or not wrt:
                return None, {}
            r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            loss = (y.double() * r.to(y.device)).sum()
            grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, v in saved:
                    p.copy_(v)
            bench.reset()
        grads = tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt))  # unused: no path
        g_entry = grads[0] if entry else None
        return g_entry, dict(zip(leaves, grads[len(entry):]))

    def trace_back(self, src: Call | None, dst: Call, points: list[tuple[int, ...]]) -> list[tuple[int, ...] | None]:
        """Where each point of ``dst``'s input comes from in ``src``'s output (the model's float input if None).

        In eval mode, the output of ``src`` (its call of the same order as in the observed forward) is made a
        leaf; the forward stops at ``dst``'s call; for each point the element of the leaf with the largest
        gradient is returned (None where the point does not depend on the leaf, or the pass fails).  A
        transpose or permute between them shows as permuted coordinates; elementwise ops keep them.
        """
        assert self.bench is not None and self.inputs is not None and self.trace is not None
        bench = self.bench
        nothing: list[tuple[int, ...] | None] = [None] * len(points)
        inputs, kwargs = list(self.inputs), dict(self.kwargs)
        leaf: list[Tensor] = []
        seen: dict[str, int] = {}
        got: list[Tensor] = []
        if src is None:
            kind, where = self.earliest()
            if kind != "input":
                return nothing
            t = (inputs[where] if isinstance(where, int) else kwargs[where]).detach().clone().requires_grad_(True)
            leaf.append(t)
            if isinstance(where, int):
                inputs[where] = t.clone()
            else:
                kwargs[where] = t.clone()
        src_ord = 0 if src is None else self.trace.by_name[src.name].index(src)
        dst_ord = self.trace.by_name[dst.name].index(dst)

        def on_src(mod, args, output):
            k = seen["src"] = seen.get("src", -1) + 1
            if k == src_ord and isinstance(output, Tensor) and output.is_floating_point() and not leaf:
                leaf.append(output.detach().clone().requires_grad_(True))
                return leaf[0].clone()
            return None

        def on_dst(mod, args, kw):
            k = seen["dst"] = seen.get("dst", -1) + 1
            if k == dst_ord:
                x = next((a for a in list(args) + list(kw.values()) if isinstance(a, Tensor)
                          and a.is_floating_point()), None)
                if x is not None:
                    got.append(x)
                raise _Stop
        handles = [bench.modules[dst.name].register_forward_pre_hook(on_dst, with_kwargs=True)]
        if src is not None:
            handles.append(bench.modules[src.name].register_forward_hook(on_src))
        bench.reset()
        bench.model.eval()
        try:
            try:
                bench.run(tuple(inputs), kwargs, grad=True)
            except _Stop:
                pass
            if not got or not leaf or not got[0].requires_grad:
                return nothing
            x = got[0]
            out: list[tuple[int, ...] | None] = []
            for p in points:
                (g,) = torch.autograd.grad(x[p], leaf[0], retain_graph=True, allow_unused=True)
                if g is None or not bool((g != 0).any()):
                    out.append(None)
                    continue
                flat = int(g.abs().flatten().argmax())
                out.append(tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), g.shape)))
            return out
        except Exception:  # noqa: BLE001 -- a model that cannot run this way gives no answer
            return nothing
        finally:
            for h in handles:
                h.remove()
            bench.reset()

    def run_recording(self, names: list[str], *, dropout_train: bool | None = None, mode_train: bool | None = None,
                      inputs: tuple | None = None, fed_by_dropout: dict[str, float] | None = None
                      ) -> dict[str, list[tuple[Tensor, Tensor]]]:
        """Run the work copy once (no grad) and return the (input, output) of each call of ``names``.

        ``mode_train``: put the whole copy in train (True) or eval (False) mode first; ``dropout_train``: then
        set every dropout module to that mode, and with True also turn on functional dropout
        (``F.dropout(x, p, training=self.training)`` and its 1d/2d/3d/alpha twins).  ``fed_by_dropout``: filled
        with {name: p} for the calls of ``names`` whose input is the output of a dropout (module or functional).
        """
        assert self.bench is not None and self.inputs is not None
        bench = self.bench
        bench.reset()
        if mode_train is not None:
            bench.model.train(mode_train)
        if dropout_train is not None:
            for m in bench.model.modules():
                if isinstance(m, nn.modules.dropout._DropoutNd):
                    m.train(dropout_train)
        seen: dict[str, list[tuple[Tensor, Tensor]]] = {n: [] for n in names}

        mode = _DropoutOn(force=bool(dropout_train))

        def rec(name: str):
            def hook(mod, args, output):
                x = next((a for a in args if isinstance(a, Tensor)), None)
                if x is not None and isinstance(output, Tensor):
                    seen[name].append((x.detach().clone(), output.detach().clone()))
                    if fed_by_dropout is not None and id(x) in mode.outputs:
                        fed_by_dropout.setdefault(name, mode.outputs[id(x)][0])
            return hook

        try:
            with bench.hooks({n: rec(n) for n in names}), mode:
                bench.run(inputs if inputs is not None else self.inputs, self.kwargs)
        finally:
            bench.reset()
        return seen

    def close(self) -> None:
        if self.bench is not None:
            self.bench.close()


_DROPOUTS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout}


class _DropoutOn(TorchFunctionMode):
    """Sees every dropout call (functional or a module's): records {id(output): (p, output)}; with ``force``,
    runs it in training mode whatever ``training=`` says."""

    def __init__(self, force: bool):
        super().__init__()
        self.force = force
        self.outputs: dict[int, tuple[float, Tensor]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func not in _DROPOUTS:
            return func(*args, **kwargs)
        names = ("input", "p", "training", "inplace")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        if self.force:
            bound["training"] = True
        out = func(**bound)
        p = float(bound.get("p", 0.5))
        if isinstance(out, Tensor) and p > 0 and bound.get("training", True):
            self.outputs[id(out)] = (p, out)  # the tensor is kept, so its id is not reused during the run
        return out


def _zero(g: Tensor | None) -> bool:
    return g is not None and g.numel() > 0 and bool((g == 0).all())


def _one_value_error(e: Exception) -> bool:
    text = str(e)
    return "more than 1 value per channel" in text or "more than 1 value per statistic" in text


def _loss_of(out: Any) -> Tensor | None:
    """The model's own loss if it returns one (``.loss`` / ``["loss"]`` / a scalar), else a random projection."""
    loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if isinstance(loss, Tensor) and loss.ndim == 0 and loss.requires_grad:
        return loss
    for t in all_tensors(out):
        if t.ndim == 0 and t.is_floating_point() and t.requires_grad:
            return t
    y = primary_output(out)
    if y is None or not y.requires_grad:
        return None
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float32).to(y.device, y.dtype)
    return (y * r).float().sum() / math.sqrt(max(y.numel(), 1))

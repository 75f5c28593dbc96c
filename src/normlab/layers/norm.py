r"""The general normalizer: one module, every named normalizer a choice of axes."""

from __future__ import annotations

import operator
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .. import functional as NF
from .. import kernels
from ._script import NoTorchScript

__all__ = ["Norm", "add_norm"]


def _host_checks(t: Tensor) -> bool:
    """Whether checks that read a tensor's values on the host are free here: eager, on CPU.

    On CUDA they would stall every step, under torch.compile/export they break
    the graph (torch.jit.trace would freeze the value read), and meta tensors
    have no values.
    """
    return t.device.type == "cpu" and not (torch.compiler.is_compiling() or torch.compiler.is_exporting()
                                           or torch.jit.is_tracing())


def _as_dims(dims: int | Sequence[int], what: str) -> tuple[int, ...]:
    """``dims`` as a tuple of ints, each named once (ranges are checked against the input in forward)."""
    out = (dims,) if isinstance(dims, int) else tuple(dims)
    bad = [d for d in out if not isinstance(d, int) or isinstance(d, bool)]
    if bad:
        raise TypeError(f"{what} must be ints, got {bad[0]!r} in {what}={out!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{what}={out} names the same dim twice")
    return out


def _as_int(value: object, what: str, owner: str) -> int:
    """``value`` as an int (numpy/torch integers too); floats, strings and bools are refused by name."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{owner}: {what} must be an int, got {value!r} ({type(value).__name__})")


def _as_shape(shape: int | Sequence[int] | None, what: str = "shape", owner: str = "Norm") -> tuple[int, ...]:
    """A feature shape as a tuple of positive ints; an int is a 1-D shape."""
    if shape is None:
        return ()
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Iterable):
        items: tuple = (shape,)
    else:
        items = tuple(shape)
    out = tuple(_as_int(s, what if len(items) == 1 and items[0] is shape else f"every entry of {what}", owner)
                for s in items)
    if any(s < 1 for s in out):
        raise ValueError(f"{owner}: {what} must be >= 1, got {shape!r}")
    return out


class Norm(NoTorchScript, nn.Module):
    r"""Normalize over any set of dims, with affine parameters over any other set.

    .. math::

        y = \gamma \cdot \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} + \beta

    where the mean and biased variance are taken over ``dims`` (or over every
    dim except ``keep_dims``), and :math:`\gamma`, :math:`\beta` have shape
    ``shape`` laid along the input dims ``param_dims``.  With
    ``center=False`` the mean is not subtracted and the variance is replaced
    by the mean square (RMSNorm).  With ``num_groups``, ``group_dim`` is cut
    into that many contiguous groups and each group is reduced separately
    (GroupNorm).  With ``track_running_stats``, the batch statistics are
    folded into ``running_mean`` / ``running_var`` during training and used
    instead of batch statistics in eval mode (BatchNorm).

    Every named normalizer in normlab is this module with fixed arguments:

    =================  ========================  ==================  ================
    preset             reduces over (N,C,H,W)    reduces (B,T,D)     affine shape
    =================  ========================  ==================  ================
    BatchNorm          N, H, W                   B, T (channel_dim=-1) C / D
    LayerNorm((C,H,W)) C, H, W                   --                  (C, H, W)
    LayerNorm(D)       --                        D                   D
    LayerNorm2d        C                         --                  C
    InstanceNorm       H, W                      --                  C
    GroupNorm(G)       C/G channels, H, W        --                  C
    RMSNorm(D)         --                        D (no centering)    D
    =================  ========================  ==================  ================

    Args:
        shape: sizes of the input along ``param_dims`` (the feature shape);
            the affine parameters and running statistics have this shape.
        dims: the dims to reduce over (negative counts from the end).
        keep_dims: alternatively, the dims *not* to reduce over; every other
            dim is reduced, whatever the input's rank (BatchNorm: ``(1,)``).
        param_dims: the input dims ``shape`` lies along; default: the last
            ``len(shape)`` dims.
        center: subtract the mean (True) or not (RMSNorm, False).
        eps: added to the variance; ``None`` means the machine epsilon of the
            dtype the statistics are computed in (float32 for bf16/fp16 input,
            as ``torch.nn.RMSNorm`` does).
        affine: learnable scale ``weight`` (gamma), initialised to 1.
        bias: learnable shift ``bias`` (beta), initialised to 0; only with ``affine``.
        num_groups: reduce ``group_dim`` in this many contiguous groups.
        group_dim: the dim split into groups; must be a reduced dim.
        momentum: running-statistics EMA factor (``None``: cumulative average).
            Not an optimizer momentum: ``running = (1 - momentum) * running +
            momentum * batch``.
        track_running_stats: keep running statistics and use them in eval mode.
        zero_centered_gamma: store gamma as an offset from 1 (``weight`` is
            initialised to 0 and the layer scales by ``1 + weight``), so weight
            decay pulls gamma towards 1, not 0 (Gemma, Transformer Engine).
        min_ndim: the smallest input rank accepted.

    Shape:
        - Input: ``(*)`` with rank >= ``min_ndim`` and ``shape`` along ``param_dims``.
        - mask (optional, in ``forward``): bool, True = real element; either
          the input's shape without ``param_dims``, or any shape that
          broadcasts to the input.  Masked elements do not enter the
          statistics (nor the running averages); they are still normalized
          with the statistics of the real elements, so their output is finite.
        - Output: same shape and dtype as the input.

    Example::

        >>> import torch
        >>> from normlab import Norm
        >>> x = torch.randn(8, 16, 5, 5)
        >>> bn = Norm(16, keep_dims=(1,), param_dims=(1,), track_running_stats=True)
        >>> torch.allclose(bn(x), torch.nn.BatchNorm2d(16)(x), atol=1e-5)
        True
        >>> ln_cnn = Norm((16, 5, 5), dims=(1, 2, 3))    # LayerNorm in a CNN
        >>> gn = Norm(16, keep_dims=(0,), param_dims=(1,), num_groups=4)
    """

    #: 3: the state dict's metadata records zero_centered_gamma and frozen
    _version = 3
    #: the fewest values one statistic may see when batch statistics are used in training
    _min_count_training = 1
    #: input ranks a preset accepts (empty: any rank >= min_ndim), and how to name them in errors
    #: whether training steps count into num_batches_tracked (torch's InstanceNorm does not count them)
    _counts_batches = True
    _ndims: tuple[int, ...] = ()
    _ndims_hint = ""
    #: the constructor argument that gives ``shape``, to name it in errors
    _shape_arg = "shape"

    def __init__(
        self,
        shape: int | Sequence[int] | None,
        dims: int | Sequence[int] | None = None,
        *,
        keep_dims: int | Sequence[int] | None = None,
        param_dims: int | Sequence[int] | None = None,
        center: bool = True,
        eps: float | None = 1e-5,
        affine: bool = True,
        bias: bool = True,
        num_groups: int | None = None,
        group_dim: int = 1,
        momentum: float | None = 0.1,
        track_running_stats: bool = False,
        zero_centered_gamma: bool = False,
        min_ndim: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.shape = _as_shape(shape, self._shape_arg, type(self).__name__)
        if (dims is None) == (keep_dims is None):
            raise ValueError("give exactly one of dims (to reduce over) or keep_dims (to keep), "
                             f"got dims={dims!r}, keep_dims={keep_dims!r}")
        self.dims = None if dims is None else _as_dims(dims, "dims")
        self.keep_dims = None if keep_dims is None else _as_dims(keep_dims, "keep_dims")
        if self.dims == ():
            raise ValueError("dims=() reduces over nothing: name at least one dim to normalize over "
                             "(or give keep_dims, the dims not to reduce)")
        if param_dims is None:
            param_dims = tuple(range(-len(self.shape), 0))
        self.param_dims = _as_dims(param_dims, "param_dims")
        if len(self.param_dims) != len(self.shape):
            raise ValueError(f"param_dims={self.param_dims} must name one dim per entry of shape={self.shape}")
        if track_running_stats and self.dims is not None and set(self.dims) & set(self.param_dims):
            raise ValueError(f"dims={self.dims} and param_dims={self.param_dims} overlap at dim(s) "
                             f"{sorted(set(self.dims) & set(self.param_dims))}: running statistics are per "
                             "feature, so the feature dims (param_dims) must not be reduced")
        if eps is not None and not eps >= 0:
            raise ValueError(f"eps must be >= 0 (or None for the dtype's machine epsilon), got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1] (or None for a cumulative average), got {momentum}")
        if num_groups is not None and _as_int(num_groups, "num_groups", type(self).__name__) < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        if (affine or track_running_stats) and not self.shape:
            raise ValueError("affine parameters and running statistics need the feature shape: pass shape")
        if track_running_stats:
            if not center:
                raise ValueError("running statistics are only supported with center=True")
            if num_groups is not None:
                raise ValueError("running statistics are not supported with num_groups")
        if bias and not affine:
            bias = False  # no shift without a scale, as torch's affine=False
        self.center = center
        self.eps = eps
        self.affine = affine
        self.num_groups = num_groups
        self.group_dim = group_dim
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.zero_centered_gamma = zero_centered_gamma
        self.min_ndim = max(min_ndim, len(self.shape))
        self.frozen = False
        self._kernel_plans: dict[tuple, tuple | bool] = {}  # see _plan
        if affine:
            self.weight = nn.Parameter(torch.empty(self.shape, **factory_kwargs))
            self.bias = nn.Parameter(torch.empty(self.shape, **factory_kwargs)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(self.shape, **factory_kwargs))
            self.register_buffer("running_var", torch.ones(self.shape, **factory_kwargs))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, **{k: v for k, v in factory_kwargs.items() if k != "dtype"}),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    # ---------------------------------------------------------------- state
    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.weight is not None:
            if self.zero_centered_gamma:
                nn.init.zeros_(self.weight)
            else:
                nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        # how to read the tensors, in the state dict's metadata (torch ignores extra entries there, so
        # the keys stay torch's): whether weight is stored as an offset from 1, and the freeze
        meta = getattr(destination, "_metadata", None)
        if meta is not None and prefix[:-1] in meta:
            meta[prefix[:-1]]["zero_centered_gamma"] = self.zero_centered_gamma
            meta[prefix[:-1]]["frozen"] = self.frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints written before num_batches_tracked existed (as torch's _NormBase)
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        self._convert_gamma(state_dict, prefix, local_metadata)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if local_metadata.get("frozen") and self.track_running_stats and not self.frozen:
            self.freeze()  # a frozen layer's checkpoint freezes; loading never unfreezes

    def _convert_gamma(self, state_dict, prefix: str, local_metadata: dict) -> None:
        """Rewrite ``weight`` into this layer's convention (plain gamma, or an offset from 1).

        The rule: a state dict from ``Module.state_dict()`` says how it stores
        gamma -- normlab's metadata names ``zero_centered_gamma``, a torch
        module's (metadata version 1) stores the plain gamma -- and the weight is
        converted (``gamma = 1 + weight``).  A state dict without that metadata
        (rebuilt as a plain dict, or from safetensors) is loaded as it is, with a
        ``UserWarning`` when this layer is zero-centered.
        """
        key = prefix + "weight"
        if self.weight is None or key not in state_dict:
            return
        stored = local_metadata.get("zero_centered_gamma")
        if stored is None and local_metadata.get("version", 3) < 2:
            stored = False  # torch.nn.LayerNorm / RMSNorm: the plain gamma
        if stored is None:
            if self.zero_centered_gamma:
                warnings.warn(f"{type(self).__name__}(zero_centered_gamma=True): the state dict does not say how "
                              f"{key!r} is stored; it is loaded as an offset from 1 (scale = 1 + weight). If it "
                              "holds a plain gamma (e.g. from torch.nn.LayerNorm), load it with its metadata "
                              "(as Module.state_dict() returns it) or subtract 1 first", UserWarning, stacklevel=4)
            return
        if bool(stored) != self.zero_centered_gamma:
            state_dict[key] = state_dict[key] - 1 if self.zero_centered_gamma else state_dict[key] + 1

    def freeze(self) -> Norm:
        """Use the running statistics and stop gamma/beta from learning, whatever ``.train()`` says.

        A frozen layer normalizes with ``running_mean``/``running_var``, never
        updates them, and its ``weight``/``bias`` have ``requires_grad=False``.
        Unlike ``module.eval()``, the freeze survives a later ``.train()`` on
        any parent module (the complaint of pytorch#66073).  Undo with
        :meth:`unfreeze`.
        """
        if not self.track_running_stats:
            raise ValueError(f"cannot freeze {type(self).__name__} without running statistics "
                             "(track_running_stats=False): there is nothing to normalize with")
        self.frozen = True
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        return self.train(self.training)

    def unfreeze(self) -> Norm:
        """Undo :meth:`freeze`: parameters learn again and ``.train()`` works as usual."""
        self.frozen = False
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(True)
        return self

    def train(self, mode: bool = True) -> Norm:
        super().train(mode)
        if self.frozen:
            self.training = False
        return self

    # ------------------------------------------------------------- geometry
    def _layout(self, x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Validate ``x`` and return (reduced dims, param dims) as non-negative ints."""
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} expects a floating-point input, got dtype {x.dtype}")
        if self._ndims and x.ndim not in self._ndims:
            want = " or ".join(f"{n}-D" for n in self._ndims)
            raise ValueError(f"{name} expects a {want} input{self._ndims_hint}, "
                             f"got a {x.ndim}-D input of shape {tuple(x.shape)}")
        if x.ndim < self.min_ndim:
            raise ValueError(f"{name} expects an input of at least {self.min_ndim} dims, "
                             f"got a {x.ndim}-D input of shape {tuple(x.shape)}")
        pdims = NF.resolve_dims(self.param_dims, x.ndim, what="param_dims") if self.shape else ()
        got = tuple(x.shape[d] for d in pdims)
        if got != self.shape:
            where = ", ".join(str(d) for d in pdims)
            raise ValueError(f"{name} expects size {self.shape} at dim(s) {where} of the input "
                             f"(the feature dims), got an input of shape {tuple(x.shape)}")
        if self.dims is not None:
            rdims = NF.reduce_dims(self.dims, x.ndim)
        else:
            keep = NF.resolve_dims(self.keep_dims, x.ndim, what="keep_dims")
            rdims = tuple(d for d in range(x.ndim) if d not in keep)
            if not rdims:
                raise ValueError(f"{name} keep_dims={self.keep_dims} keeps every dim of a {x.ndim}-D input of "
                                 f"shape {tuple(x.shape)}: nothing is left to normalize over")
        if self.track_running_stats and set(rdims) & set(pdims):
            raise ValueError(f"{name}: the reduced dims {rdims} and param_dims {pdims} overlap on a "
                             f"{x.ndim}-D input: running statistics are per feature, so the feature dims "
                             "must not be reduced")
        if self.num_groups is not None:
            size = x.shape[NF.resolve_dims(self.group_dim, x.ndim, what="group_dim")[0]]
            if size % self.num_groups:
                raise ValueError(_group_error(self.num_groups, size))
        return rdims, pdims

    def _param_view(self, t: Tensor | None, x: Tensor, pdims: tuple[int, ...]) -> Tensor | None:
        """Lay a ``shape``-shaped tensor along ``pdims`` of ``x`` for broadcasting."""
        if t is None:
            return None
        view = [1] * x.ndim
        for d, s in zip(pdims, self.shape):
            view[d] = s
        return t.view(view)

    def _mask(self, mask: Tensor | None, x: Tensor, pdims: tuple[int, ...]) -> Tensor | None:
        if mask is None:
            return None
        name = type(self).__name__
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"{name} mask must be a bool tensor (True = real element), got {got}")
        given = tuple(mask.shape)
        if mask.ndim == x.ndim - len(pdims):
            for d in pdims:
                mask = mask.unsqueeze(d)
        expected = tuple(1 if d in pdims else s for d, s in enumerate(x.shape))
        ok = mask.ndim == x.ndim and all(m in (1, s) for m, s in zip(mask.shape, x.shape))
        if not ok:
            exp = tuple(s for d, s in enumerate(x.shape) if d not in pdims)
            raise ValueError(f"{name} mask must have the input's shape without the feature dim(s), "
                             f"{exp}, or broadcast to {expected}; got mask of shape "
                             f"{given} for input of shape {tuple(x.shape)}")
        return mask.to(x.device)

    # -------------------------------------------------------------- compute
    def _eps(self, x: Tensor) -> float:
        if self.eps is None:
            return torch.finfo(NF.compute_dtype(x.dtype)).eps
        return self.eps

    def _use_batch_stats(self) -> bool:
        return not self.track_running_stats or (self.training and not self.frozen)

    def _updates_running_stats(self) -> bool:
        return self.track_running_stats and self.training and not self.frozen

    def _batch_moments(self, x: Tensor, rdims: tuple[int, ...], mask: Tensor | None):
        """Batch statistics ``(shift, corr, var, count)``, mean = shift + corr (SyncBatchNorm overrides this)."""
        return NF._stats(x, rdims, self.center, mask)

    def _min_count(self) -> int:
        """The fewest values a batch statistic may be computed from."""
        return self._min_count_training if self.training else 1

    def _check_count(self, count: Tensor | int, x: Tensor) -> None:
        """Refuse statistics from too few values: always for shape-given counts, eagerly on CPU for masks.

        A mask's counts live on the input's device; reading them is a host
        sync (a stall per step on CUDA, a graph break under torch.compile, an
        error on meta tensors), so there the check is left to the running
        statistics' guard (see :meth:`_update_running_stats`).
        """
        need = self._min_count()
        if isinstance(count, int):
            least = count
        elif not _host_checks(count) or not count.numel():
            return
        else:
            least = int(count.min().item())
        if least >= need:
            return
        name = type(self).__name__
        if least == 0:
            raise ValueError(f"{name}: the mask selects no element for at least one statistic "
                             f"(input of shape {tuple(x.shape)}); every channel/instance needs a real element")
        raise ValueError(f"{name} expected more than 1 value per statistic when training, got input of "
                         f"shape {tuple(x.shape)} (1 value per channel: with batch size 1 the batch variance "
                         "is 0 and the output would be all beta; use eval mode, a larger batch, or GroupNorm/LayerNorm)")

    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor | int,
                              rdims: tuple[int, ...], pdims: tuple[int, ...]) -> None:
        """Fold batch statistics into the running ones, without a host sync.

        A feature whose batch statistics are non-finite (NaN/inf in the
        input), or were computed from fewer values than training needs (a
        mask's count, where it could not be checked on the host), keeps its
        old running values: ``torch.where`` on the device, no ``.item()``.
        The ``RuntimeWarning`` naming such features is issued where reading
        them costs nothing (eager CPU tensors).
        """
        with torch.no_grad():
            if self._counts_batches or self.momentum is None:
                self.num_batches_tracked.add_(1)
            factor = self._batch_weight()
            unbiased = var * (count / (count - 1).clamp_min(1)) if isinstance(count, Tensor) \
                else var * (count / max(count - 1, 1))
            # stats keep every non-reduced dim; dims that are neither reduced nor features
            # (the batch dim of InstanceNorm) are averaged into the running statistics
            extra = tuple(d for d in range(mean.ndim) if d not in rdims and d not in pdims)
            bmean = mean.mean(extra, keepdim=True) if extra else mean
            bvar = unbiased.mean(extra, keepdim=True) if extra else unbiased
            bmean = bmean.reshape(self.shape).to(self.running_mean.dtype)
            bvar = bvar.reshape(self.shape).to(self.running_var.dtype)
            finite = torch.isfinite(bmean) & torch.isfinite(bvar)
            valid = finite
            if isinstance(count, Tensor):
                enough = (count >= self._min_count()).expand(mean.shape)
                enough = enough.all(extra, keepdim=True) if extra else enough
                valid = valid & enough.reshape(self.shape)
            self._fold_running(bmean, bvar, factor, valid, finite)

    def _batch_weight(self) -> Tensor | float:
        """This batch's weight in the running statistics: ``momentum``, or 1 / batches seen (on the device)."""
        if self.momentum is None:  # cumulative average
            return 1.0 / self.num_batches_tracked.to(self.running_var.dtype)
        return self.momentum

    def _fold_running(self, bmean: Tensor | None, bvar: Tensor, factor: Tensor | float, valid: Tensor,
                      finite: Tensor) -> None:
        """``running = lerp(running, batch, factor)`` where ``valid``, the old value elsewhere (no host sync);
        the warning naming the non-finite features where reading them costs nothing."""
        for running, batch in ((self.running_mean, bmean), (self.running_var, bvar)):
            if batch is not None:
                running.copy_(torch.where(valid, torch.lerp(running, batch, factor), running))
        if _host_checks(finite) and not bool(finite.all()):
            self._warn_non_finite(~finite)

    def _warn_non_finite(self, bad: Tensor) -> None:
        index = bad.nonzero().flatten().tolist()[:10]
        warnings.warn(f"{type(self).__name__}: non-finite batch statistics (NaN/inf in the input) at "
                      f"feature index {index}; their running statistics were left unchanged",
                      RuntimeWarning, stacklevel=5)

    def _as_batched(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The input (and mask) as ``forward`` hands them to the statistics (InstanceNorm adds a batch dim)."""
        return x, mask

    def _fast_paths_allowed(self) -> bool:
        """Whether :mod:`normlab.kernels` may compute this layer's calls (SyncBatchNorm: not across processes)."""
        return True

    # --------------------------------------------------------- kernel calls
    def _call_params(self, x: Tensor) -> tuple[Tensor | None, Tensor | None, float]:
        """The (weight, bias, eps) a call on ``x`` uses, in ``shape``: detached when frozen, 1 + weight when
        zero-centered, eps None as the compute dtype's machine epsilon."""
        p = self._parameters  # read directly (Module.__getattr__ costs ~0.4 us a lookup); a property (a
        w = p["weight"] if "weight" in p else self.weight  # parametrization) is not in there
        b = p["bias"] if "bias" in p else self.bias
        if self.frozen:  # no gradient to gamma/beta, even if someone re-enabled requires_grad
            w = None if w is None else w.detach()
            b = None if b is None else b.detach()
        if w is not None and self.zero_centered_gamma:
            w = w + 1
        eps = self.eps
        return w, b, (eps if eps is not None else self._eps(x))

    def _prepared(self, x: Tensor, mask: Tensor | None):
        """Validate a call; ``(rdims, pdims, mask, weight, bias, eps)`` with the parameters laid along pdims."""
        rdims, pdims = self._layout(x)
        mask = self._mask(mask, x, pdims)
        weight, bias, eps = self._call_params(x)
        return rdims, pdims, mask, self._param_view(weight, x, pdims), self._param_view(bias, x, pdims), eps

    def _running(self) -> kernels.Running | None:
        """The running statistics as the kernels read them or fold a batch's into them."""
        if not self.track_running_stats:
            return None
        b = self._buffers
        return kernels.Running(b["running_mean"], b["running_var"], b["num_batches_tracked"], self.momentum,
                               self._min_count(), self._counts_batches or self.momentum is None)

    def _describe(self, rdims: tuple[int, ...], pdims: tuple[int, ...]) -> kernels.Call | None:
        """This layer's call for :mod:`normlab.kernels`; None where no fast path may compute it."""
        if not self._fast_paths_allowed():
            return None
        return kernels.Call(rdims, pdims, center=self.center, affine=self.weight is not None or self.bias is not None,
                            groups=self.num_groups, group_dim=self.group_dim, batch_stats=self._use_batch_stats(),
                            running=self._running(), update=self._updates_running_stats())

    def kernel_call(self, x: Tensor, mask: Tensor | None = None):
        """``(call, x, mask)``: the :class:`normlab.kernels.Call` of ``self(x, mask=mask)`` (None where no fast
        path may compute it), with the input and mask as the statistics see them; validates as forward does."""
        x, mask = self._as_batched(x, mask)
        rdims, pdims = self._layout(x)
        return self._describe(rdims, pdims), x, self._mask(mask, x, pdims)

    def _check_shape_count(self, x: Tensor, mask: Tensor | None, rdims: tuple[int, ...]) -> None:
        """The reference's refusal of statistics from too few values, where the count is the shape's."""
        if self._use_batch_stats() and self.num_groups is None and mask is None and x.numel():
            self._check_count(_prod([x.shape[d] for d in rdims]), x)

    #: the most input signatures a layer remembers a plan for
    _max_plans = 32
    #: whether :func:`add_norm` may compute ``self(x + r)`` by the fused kernel: False for a subclass whose
    #: forward computes more than the normalization (FilterResponseNorm's TLU, EvoNorm's nonlinearity)
    _fused_add = True

    def _plan(self, x: Tensor):
        """``(layout, rdims, pdims)`` of a C++ kernel for ``x``, or False (none), remembered per input signature.

        None when no plan applies to this call at all (not an eager CPU call, or no fast path allowed).
        The first call with a given shape, dtype, contiguity, mode and training state validates the
        input exactly as the general path does (same errors).
        """
        m = kernels.eager(x)
        if m is None or not self._fast_paths_allowed():
            return None
        key = (x.shape, x.dtype, x.is_contiguous(), self.training, self.frozen, self.track_running_stats, m)
        try:
            return self._kernel_plans[key]
        except KeyError:
            pass
        except AttributeError:  # a layer unpickled from before plans were kept
            self._kernel_plans = {}
        rdims, pdims = self._layout(x)
        lay = kernels.choose(self._describe(rdims, pdims), x)[1]
        if lay is not None:
            self._check_shape_count(x, None, rdims)
        plan = (lay, rdims, pdims) if lay is not None else False
        if len(self._kernel_plans) >= self._max_plans:
            self._kernel_plans.clear()
        self._kernel_plans[key] = plan
        return plan

    def _planned(self, x: Tensor) -> Tensor | None:
        """The common call (no mask, eager, a C++ kernel applies) with its validation done once per signature."""
        plan = self._plan(x)
        if not plan:
            return None
        lay, rdims, pdims = plan
        w, b, eps = self._call_params(x)
        track = self.track_running_stats
        batch_stats = not track or (self.training and not self.frozen)  # _use_batch_stats, inline
        y, stats, bad = kernels.run_planned(lay, x, w, b, eps, self.center,
                                            self._running() if track and lay[0] != "rows" else None, batch_stats)
        if stats is not None and track and batch_stats:  # running statistics over rows (InstanceNorm)
            keep = [1 if d in rdims else s for d, s in enumerate(x.shape)]
            self._update_running_stats((stats[0] + stats[1]).view(keep), stats[2].view(keep),
                                       _prod([x.shape[d] for d in rdims]), rdims, pdims)
        if bad is not None and bad.numel():
            self._warn_non_finite(bad)
        return y

    def _add_norm(self, x: Tensor, residual: Tensor) -> tuple[Tensor, Tensor] | None:
        """``(self(x + residual), x + residual)`` by the fused rows kernel, or None where it does not apply."""
        if self.num_groups is not None or self.track_running_stats:
            return None
        plan = self._plan(x)
        if plan:
            lay = plan[0]
        else:  # no C++ plan, or not an eager CPU call (compiling, tracing, CUDA): validate on every call
            rdims, pdims = self._layout(x)
            name, lay = kernels.choose(self._describe(rdims, pdims), x)
            if name == "triton:rows":
                w, b, eps = self._call_params(x)
                return kernels.run_add_norm_triton(x, residual, w, b, eps, self.center)
        if lay is None or lay[0] != "rows" or lay[3] != 1 or lay[4] != 1:
            return None
        w, b, eps = self._call_params(x)
        return kernels.run_add_norm(lay, x, residual, w, b, eps, self.center, eager=bool(plan))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            y = self._planned(x)
            if y is not None:
                return y
        rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
        call = self._describe(rdims, pdims)
        name, lay = kernels.choose(call, x, mask) if call is not None else ("reference", None)
        if call is not None and name != "reference":  # a fused kernel computes the call (see normlab.kernels)
            self._check_shape_count(x, mask, rdims)
            y, moments = kernels.run(name, lay, call, x, mask, weight, bias, eps)
            if moments is not None:
                mean, var, count = moments
                self._check_count(count, x)
                if self._updates_running_stats():
                    self._update_running_stats(mean, var, count, rdims, pdims)
            return y
        if not self._use_batch_stats():
            return NF.normalize_with(x, self._param_view(self.running_mean, x, pdims),
                                     self._param_view(self.running_var, x, pdims), weight, bias, eps=eps)
        if self.num_groups is not None:
            if mask is not None and _host_checks(mask):  # no running statistics to guard here
                self._check_count(mask.expand(x.shape).sum(rdims), x)
            return NF.normalize(x, rdims, weight, bias, center=self.center, eps=eps, mask=mask,
                                num_groups=self.num_groups, group_dim=self.group_dim)
        shift, corr, var, count = self._batch_moments(x, rdims, mask)
        if x.numel() == 0 and isinstance(count, int):
            if self._updates_running_stats():
                self.num_batches_tracked.add_(1)  # as torch: an empty batch counts, but moves nothing
            return NF.affine(x.to(NF.compute_dtype(x.dtype)), weight, bias).to(x.dtype)
        self._check_count(count, x)
        if self._updates_running_stats():
            self._update_running_stats(shift + corr, var, count, rdims, pdims)
        return NF.normalize_with(x, shift, var, weight, bias, eps=eps, corr=corr)

    def extra_repr(self) -> str:
        parts = [f"{self.shape}"]
        parts.append(f"dims={self.dims}" if self.dims is not None else f"keep_dims={self.keep_dims}")
        parts.append(f"param_dims={self.param_dims}")
        parts.append(f"center={self.center}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}")
        if self.num_groups is not None:
            parts.append(f"num_groups={self.num_groups}, group_dim={self.group_dim}")
        parts.append(f"momentum={self.momentum}, track_running_stats={self.track_running_stats}")
        parts.append(f"zero_centered_gamma={self.zero_centered_gamma}")
        if self.frozen:
            parts.append("frozen=True")
        return ", ".join(parts)


def _group_error(num_groups: int, num_channels: int) -> str:
    valid = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
    return (f"GroupNorm needs num_channels divisible by num_groups: got {num_channels} channels, "
            f"{num_groups} groups (valid group counts: {', '.join(map(str, valid))})")


def _prod(xs) -> int:
    n = 1
    for v in xs:
        n *= v
    return n


def _has_hooks(m: nn.Module) -> bool:
    """Hooks on the norm (instruments reading its input) need its own forward to run."""
    from torch.nn.modules import module as _m

    return bool(m._forward_hooks or m._forward_pre_hooks or _m._global_forward_hooks
                or _m._global_forward_pre_hooks)


def add_norm(x: Tensor, residual: Tensor, norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(norm(x + residual), x + residual)``, fused into one pass where a kernel can.

    The residual add of a pre-LN block and the norm that follows it read
    and write the residual stream once instead of twice (as Transformer
    Engine, Liger and flash-attn's fused add + LayerNorm do on GPU).  The sum
    is rounded to ``x``'s dtype and normalized from that rounded value,
    exactly as the unfused code computes it, so both paths agree.  Any
    module works: one without a fused path (or with forward hooks, which
    need its own forward to run) gets the plain composition.

    Example::

        >>> import torch, normlab as nl
        >>> ln = nl.LayerNorm(16)
        >>> x, r = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
        >>> y, s = nl.add_norm(x, r, ln)
        >>> torch.allclose(s, x + r) and torch.allclose(y, ln(x + r), atol=1e-6)
        True
    """
    if isinstance(norm, Norm) and norm._fused_add and not _has_hooks(norm) \
            and isinstance(x, Tensor) and isinstance(residual, Tensor) and x.shape == residual.shape \
            and x.dtype == residual.dtype:
        fused = norm._add_norm(x, residual)
        if fused is not None:
            return fused
    s = x + residual
    return norm(s), s

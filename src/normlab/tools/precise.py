r"""Recomputed population statistics for BatchNorm ("precise BN", Wu & Johnson 2021)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..layers.batchnorm import BatchNorm

__all__ = ["recompute_batchnorm_stats", "batchnorm_layers"]


def _is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, (BatchNorm, nn.modules.batchnorm._BatchNorm))


def batchnorm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every BatchNorm in ``model`` (torch.nn's, normlab's and their subclasses) by qualified name."""
    return {name: m for name, m in model.named_modules() if _is_batchnorm(m)}


def _call(model: nn.Module, batch: Any):
    """Run ``model`` on one batch as :func:`recompute_batchnorm_stats` documents."""
    if isinstance(batch, Tensor):
        return model(batch)
    if isinstance(batch, (list, tuple)):
        return model(batch[0])
    if isinstance(batch, dict):
        return model(**batch)
    if hasattr(batch, "x"):  # normlab.data.SeqBatch and the like: the mask (and doc ids) travel with the input
        kwargs = {k: getattr(batch, k) for k in ("mask", "doc_ids") if getattr(batch, k, None) is not None}
        return model(batch.x, **kwargs)
    raise TypeError(f"recompute_batchnorm_stats: cannot feed a batch of type {type(batch).__name__} to the model; "
                    "give tensors, (input, target) tuples, dicts of keyword arguments, objects with .x (and "
                    ".mask), or pass forward=")


class _Accumulator:
    """Count, mean and centred sum of squares per channel in float64, merged batch by batch (Chan et al.)."""

    def __init__(self) -> None:
        self.n: Tensor | None = None
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, x: Tensor, rdims: tuple[int, ...], keep: Tensor | None) -> None:
        xd = x.detach().to(torch.float64)
        if keep is None:
            n = torch.full([s for d, s in enumerate(x.shape) if d not in rdims], float(_numel(x.shape, rdims)),
                           dtype=torch.float64, device=x.device)
        else:
            keep = keep.expand(x.shape)
            n = keep.sum(rdims, dtype=torch.float64)
            xd = xd.masked_fill(~keep, 0)
        view = [1 if d in rdims else s for d, s in enumerate(x.shape)]
        mean = xd.sum(rdims) / n.clamp_min(1)
        dev = xd - mean.view(view)
        if keep is not None:
            dev = dev.masked_fill(~keep, 0)
        # second pass, with the correction of the first mean's rounding (as normlab.functional's variance)
        m2 = dev.square().sum(rdims) - dev.sum(rdims).square() / n.clamp_min(1)
        m2 = m2.clamp_min(0)
        if self.n is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        assert self.mean is not None and self.m2 is not None
        total = self.n + n
        delta = mean - self.mean
        frac = torch.where(total > 0, n / total.clamp_min(1), torch.zeros_like(n))
        self.m2 = self.m2 + m2 + delta.square() * self.n * frac
        self.mean = self.mean + delta * frac
        self.n = total


def _numel(shape, dims) -> int:
    k = 1
    for d in dims:
        k *= shape[d]
    return k


def _geometry(m: nn.Module, args: tuple, kwargs: dict) -> tuple[Tensor, tuple[int, ...], Tensor | None]:
    """The input, its reduced dims and its (broadcast) mask, as the layer itself sees them."""
    x = args[0] if args else kwargs.get("input", kwargs.get("x"))
    if not isinstance(x, Tensor):
        raise TypeError(f"recompute_batchnorm_stats: {type(m).__name__} was called without a tensor input")
    if isinstance(m, BatchNorm):
        mask = args[1] if len(args) > 1 else kwargs.get("mask")
        rdims, pdims = m._layout(x)
        return x, rdims, m._mask(mask, x, pdims)
    return x, tuple(d for d in range(x.ndim) if d != 1), None


def recompute_batchnorm_stats(model: nn.Module, batches: Iterable, num_batches: int | None = None, *,
                              forward: Callable[[nn.Module, Any], Any] | None = None) -> nn.Module:
    r"""Replace every BatchNorm's running statistics by the exact population statistics over ``batches``.

    "Precise BN" (Wu & Johnson 2021): the exponential moving average a
    BatchNorm keeps in training mixes statistics of past weights and gives
    recent batches most weight; after training, the statistics of the
    final network over many samples can be computed exactly instead.  For
    each BatchNorm (``torch.nn``'s, normlab's and their subclasses, e.g.
    :class:`~normlab.SyncBatchNorm`, :class:`~normlab.GhostBatchNorm`,
    :class:`~normlab.BatchRenorm`) this sets

    .. math::

        \mathrm{running\_mean} = \frac{1}{n}\sum_i x_i, \qquad
        \mathrm{running\_var} = \frac{1}{n - 1}\sum_i (x_i - \bar x)^2

    over *all* elements the layer sees in the pass (every sample of every
    batch and every spatial position, per channel): the count-weighted,
    cumulative mean and unbiased variance, computed in float64 with Chan's
    merge of per-batch two-pass moments (not the average of per-batch
    variances, which leaves out the spread of the batch means).  Masks are
    honoured: a normlab BatchNorm called with a mask counts only the real
    elements (batches carry their mask to the model, see below).

    During the pass every BatchNorm normalizes with its batch statistics, as
    in training (so a layer sees the features it saw in training); their
    running statistics are not moved by the pass itself (momentum 0), so
    :class:`~normlab.BatchRenorm`'s ``r, d`` use the old ones.  Every other
    module runs in the mode it is in: call ``model.eval()`` first to keep
    dropout off.  Afterwards the model's training flags, the layers'
    momentum and ``num_batches_tracked`` are exactly as before.  Skipped:
    layers without running statistics, frozen layers (their statistics are
    fixed on purpose: recompute before freezing), and channels that saw no
    element or non-finite values (they keep their old statistics; a
    ``RuntimeWarning`` names them).  Runs under ``torch.no_grad()``.  Under
    ``torch.distributed`` each process computes its own batches' statistics.

    Args:
        model: any module; changed in place (its running statistics only).
        batches: an iterable of batches (a DataLoader, a list, a generator).
            Each is fed as: a tensor -> ``model(x)``; a tuple/list ->
            ``model(batch[0])``; a dict -> ``model(**batch)``; an object with
            ``.x`` (:class:`normlab.data.SeqBatch`) -> ``model(batch.x,
            mask=batch.mask, doc_ids=batch.doc_ids)`` (the fields that are set).
        num_batches: use at most this many batches (default: all).
        forward: ``forward(model, batch)`` to run a batch another way.

    Returns:
        The model.

    Raises:
        ValueError: no batch was given, or a BatchNorm saw no element.

    Example::

        >>> import torch
        >>> from normlab import BatchNorm2d, recompute_batchnorm_stats
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), BatchNorm2d(8)).eval()
        >>> data = [torch.randn(16, 3, 10, 10) for _ in range(4)]
        >>> _ = recompute_batchnorm_stats(net, data)
        >>> h = torch.cat([net[0](x) for x in data])
        >>> torch.allclose(net[1].running_var, h.transpose(0, 1).flatten(1).var(1), atol=1e-5)
        True
        >>> net.training
        False

    Paper: Y. Wu, J. Johnson, "Rethinking 'Batch' in BatchNorm", arXiv 2105.07576, 2021.
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"recompute_batchnorm_stats: num_batches must be an int >= 1 (or None for all), "
                         f"got {num_batches!r}")
    layers = {name: m for name, m in batchnorm_layers(model).items()
              if getattr(m, "running_mean", None) is not None and not getattr(m, "frozen", False)}
    if not layers:
        return model
    run = forward or _call
    acc = {name: _Accumulator() for name in layers}
    saved = {name: (m.training, m.momentum, m.running_mean.clone(), m.running_var.clone(),
                    None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for name, m in layers.items()}
    hooks = []

    def make_hook(name: str):
        def hook(m, args, kwargs):
            x, rdims, keep = _geometry(m, args, kwargs)
            acc[name].add(x, rdims, keep)
        return hook

    seen = 0
    try:
        for name, m in layers.items():
            m.train()
            m.momentum = 0.0
            hooks.append(m.register_forward_pre_hook(make_hook(name), with_kwargs=True))
        it = batches if num_batches is None else itertools.islice(batches, num_batches)
        with torch.no_grad(), warnings.catch_warnings():
            # the layers' own warning about non-finite batch statistics: the pass moves nothing, the summary below
            # names the channels that keep their statistics
            warnings.filterwarnings("ignore", message=".*non-finite batch statistics", category=RuntimeWarning)
            for batch in it:
                run(model, batch)
                seen += 1
    finally:
        for h in hooks:
            h.remove()
        for name, m in layers.items():
            training, momentum, rm, rv, nbt = saved[name]
            m.train(training)
            m.momentum = momentum
            m.running_mean.copy_(rm)
            m.running_var.copy_(rv)
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
    if seen == 0:
        raise ValueError("recompute_batchnorm_stats: no batch was given (the iterable was empty)")
    unreached = [name for name, a in acc.items() if a.n is None]
    if unreached:
        raise ValueError(f"recompute_batchnorm_stats: {len(unreached)} BatchNorm layer(s) saw no input in "
                         f"{seen} batch(es): {', '.join(unreached[:5])}")
    bad: list[str] = []
    with torch.no_grad():
        for name, m in layers.items():
            a = acc[name]
            assert a.n is not None and a.mean is not None and a.m2 is not None
            mean = a.mean.reshape(m.running_mean.shape)
            var = (a.m2 / (a.n - 1).clamp_min(1)).reshape(m.running_var.shape)
            n = a.n.reshape(m.running_mean.shape)
            ok = (n > 0) & torch.isfinite(mean) & torch.isfinite(var)
            m.running_mean.copy_(torch.where(ok, mean.to(m.running_mean.dtype), m.running_mean))
            m.running_var.copy_(torch.where(ok, var.to(m.running_var.dtype), m.running_var))
            if not bool(ok.all()):
                bad.append(f"{name} (channels {(~ok).nonzero().flatten().tolist()[:10]})")
    if bad:
        warnings.warn("recompute_batchnorm_stats: channels without elements or with non-finite values kept their "
                      "old running statistics: " + "; ".join(bad), RuntimeWarning, stacklevel=2)
    return model

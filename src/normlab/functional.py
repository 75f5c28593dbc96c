r"""The one formula every normalizer in normlab computes.

.. math::

    y = \gamma \cdot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

where :math:`\mu` and :math:`\sigma^2` are the mean and (biased) variance of
``x`` over a chosen set of dims.  With ``center=False`` there is no
re-centering and :math:`\sigma^2` is replaced by the mean square
:math:`\overline{x^2}` (RMSNorm).  The named normalizers differ only in the
dims they reduce over, the dims their affine parameters cover, and
``center``; see :mod:`normlab.layers`.

Precision rule: statistics are computed in ``promote(x.dtype, float32)``
(float64 stays float64, bf16/fp16 are computed in float32), and the output
is cast back to ``x.dtype`` once, at the very end.

The variance uses the corrected two-pass algorithm (Chan, Golub & LeVeque
1983): ``d = x - mean(x)``, then ``var = mean(d^2) - mean(d)^2``.  The
second term is a tiny correction for the rounding error of the first mean;
it makes the result accurate even when ``|mean|`` is many orders of
magnitude larger than the spread (``x = 1e4 + 1e-2 * noise``), where the
textbook one-pass ``E[x^2] - E[x]^2`` loses every digit and can go negative.

Example::

    >>> import torch
    >>> from normlab import functional as NF
    >>> x = torch.randn(2, 5, 8)
    >>> y = NF.normalize(x, dims=-1)                  # LayerNorm over the last dim
    >>> torch.allclose(y, torch.nn.functional.layer_norm(x, (8,)), atol=1e-5)
    True
    >>> mean, var = NF.moments(x, dims=(0, 1))        # BatchNorm statistics for (B, T, D)
    >>> tuple(mean.shape)
    (1, 1, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload
import torch
from torch import Tensor

__all__ = ["compute_dtype", "resolve_dims", "reduce_dims", "moments", "normalize", "normalize_with", "affine"]

Dims = int | Sequence[int]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are computed in: at least float32, float64 stays."""
    if not dtype.is_floating_point:
        raise TypeError(f"normalization needs a floating-point tensor, got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


def resolve_dims(dims: Dims, ndim: int, *, what: str = "dims") -> tuple[int, ...]:
    """Turn ``dims`` (ints, negative allowed) into sorted non-negative dims of an ``ndim`` tensor."""
    if isinstance(dims, int):
        dims = (dims,)
    out = []
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool):
            raise TypeError(f"{what} must be ints, got {d!r} in {tuple(dims)!r}")
        if not -ndim <= d < ndim:
            raise ValueError(f"{what}={tuple(dims)} does not fit a {ndim}-D input: dim {d} is out of range [{-ndim}, {ndim - 1}]")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{what}={tuple(dims)} names the same dim twice for a {ndim}-D input")
    return tuple(sorted(out))


def reduce_dims(dims: Dims, ndim: int) -> tuple[int, ...]:
    """:func:`resolve_dims` for the dims to reduce over, which must name at least one dim.

    An empty tuple is refused: ``torch.sum(x, ())`` reduces *every* dim, so an
    empty reduction would pair a whole-tensor sum with a count of 1.
    """
    out = resolve_dims(dims, ndim)
    if not out:
        raise ValueError(f"dims=() reduces over nothing: name at least one dim of the {ndim}-D input to "
                         "normalize over (e.g. dims=-1 for a LayerNorm over the last dim)")
    return out


def numel_over(shape: Sequence[int], dims: Sequence[int]) -> int:
    """Number of elements of ``shape`` along ``dims`` (a plain loop: torch.compile traces it)."""
    n = 1
    for d in dims:
        n *= shape[d]
    return n


def _check_eps(eps: float) -> None:
    if not eps >= 0:  # also catches NaN
        raise ValueError(f"eps must be >= 0, got {eps}")


def _broadcast_mask(mask: Tensor, x: Tensor) -> Tensor:
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (True = real element), got {got}")
    try:
        return mask.expand_as(x)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the input's shape {tuple(x.shape)}"
        ) from None


def _stats(x: Tensor, dims: tuple[int, ...], center: bool, mask: Tensor | None):
    """``(shift, corr, var, count)`` in compute dtype, with mean = shift + corr.

    ``shift`` is the first-pass mean and ``corr`` the mean of ``x - shift``;
    they are kept apart because adding ``corr`` back into a large ``shift``
    (|mean| >> spread) would round it away again.  ``x - shift`` is exact
    for elements near the mean (Sterbenz), so ``(x - shift) - corr`` keeps
    the digits that ``x - (shift + corr)`` loses.
    """
    if not dims:  # torch reduces every dim over (), while the count below would be 1
        raise ValueError(f"normalization needs at least one dim to reduce over, got dims=() "
                         f"for an input of shape {tuple(x.shape)}")
    xc = x.to(compute_dtype(x.dtype))
    if mask is None:
        count: Tensor | int = numel_over(x.shape, dims)
        n = max(count, 1)
        keep = None
    else:
        keep = _broadcast_mask(mask, x)
        count = keep.sum(dims, keepdim=True, dtype=xc.dtype)
        n = count.clamp_min(1)
        xc = xc.masked_fill(~keep, 0)
    if not center:
        return None, None, xc.square().sum(dims, keepdim=True) / n, count
    shift = xc.sum(dims, keepdim=True) / n
    d = xc - shift
    if keep is not None:
        d = d.masked_fill(~keep, 0)
    corr = d.sum(dims, keepdim=True) / n
    var = (d.square().sum(dims, keepdim=True) / n - corr.square()).clamp_min(0)
    return shift, corr, var, count


@overload
def moments(x: Tensor, dims: Dims, *, center: bool = ..., mask: Tensor | None = ...,
            return_count: Literal[False] = ...) -> tuple[Tensor | None, Tensor]: ...
@overload
def moments(x: Tensor, dims: Dims, *, center: bool = ..., mask: Tensor | None = ...,
            return_count: Literal[True]) -> tuple[Tensor | None, Tensor, Tensor | int]: ...


def moments(
    x: Tensor,
    dims: Dims,
    *,
    center: bool = True,
    mask: Tensor | None = None,
    return_count: bool = False,
) -> tuple[Tensor | None, Tensor] | tuple[Tensor | None, Tensor, Tensor | int]:
    """Mean and biased variance of ``x`` over ``dims`` (kept as size-1 dims).

    Args:
        x: input of any shape and floating dtype.
        dims: the dims to reduce over.
        center: if False, return ``(None, mean(x^2))`` (the RMSNorm statistic).
        mask: optional bool tensor broadcastable to ``x``; only elements where
            it is True enter the statistics.
        return_count: also return the number of elements each statistic saw
            (a Python int without a mask, a tensor of the statistics' shape with one).

    Returns:
        ``(mean, var)`` (or ``(mean, var, count)``) in :func:`compute_dtype`
        of ``x.dtype``, each of ``x``'s shape with ``dims`` set to 1.  A
        statistic over zero elements is 0 (mean) and 0 (variance).
    """
    shift, corr, var, count = _stats(x, reduce_dims(dims, x.ndim), center, mask)
    mean = None if shift is None else shift + corr
    return (mean, var, count) if return_count else (mean, var)


def normalize_with(x: Tensor, shift: Tensor | None, var: Tensor, weight: Tensor | None = None,
                   bias: Tensor | None = None, *, eps: float, corr: Tensor | None = None) -> Tensor:
    """``weight * ((x - shift) - corr) / sqrt(var + eps) + bias`` with given statistics, in ``x``'s dtype.

    ``shift=None`` means no centering (RMSNorm); ``corr`` is an optional
    small correction of the mean (see :func:`moments`).  Statistics,
    weight and bias must broadcast to ``x``.
    """
    _check_eps(eps)
    cdtype = compute_dtype(x.dtype)
    xc = x.to(cdtype)
    rstd = torch.rsqrt(var.to(cdtype) + eps)
    if shift is not None:
        xc = xc - shift.to(cdtype)
        if corr is not None:
            xc = xc - corr.to(cdtype)
    return affine(xc * rstd, weight, bias).to(x.dtype)


def affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """``y * weight + bias`` with either part optional, in ``y``'s dtype."""
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y


def _split_groups(t: Tensor, dim: int, groups: int) -> Tensor:
    """View dim ``dim`` of size C as (groups, C // groups); a size-1 dim becomes (1, 1)."""
    size = t.shape[dim]
    inner = (1, 1) if size == 1 else (groups, size // groups)
    return t.reshape(t.shape[:dim] + inner + t.shape[dim + 1 :])


def normalize(
    x: Tensor,
    dims: Dims,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    *,
    center: bool = True,
    eps: float = 1e-5,
    mask: Tensor | None = None,
    num_groups: int | None = None,
    group_dim: int = 1,
    stats: tuple[Tensor | None, Tensor] | None = None,
) -> Tensor:
    """Normalize ``x`` over ``dims``, then apply an optional affine transform.

    ``y = weight * (x - mean) / sqrt(var + eps) + bias`` with ``mean`` and
    ``var`` from :func:`moments` (``center=False``: no mean, mean square).

    Args:
        x: input of any shape and floating dtype.
        dims: the dims to reduce over (ints, negative allowed).
        weight, bias: optional tensors broadcastable to ``x`` (e.g. shape
            ``(1, C, 1, 1)`` for per-channel parameters of an (N, C, H, W) input).
        center: subtract the mean (LayerNorm) or not (RMSNorm).
        eps: added to the variance; must be >= 0.
        mask: optional bool tensor broadcastable to ``x``; only True elements
            enter the statistics, every element is normalized with them.
        num_groups: split ``group_dim`` (which must be one of ``dims``) into
            this many contiguous groups and reduce within each (GroupNorm).
        stats: precomputed ``(mean, var)`` broadcastable to ``x`` (e.g. running
            statistics); then nothing is reduced.

    Returns:
        A tensor of ``x``'s shape and dtype.

    Shape:
        - x: ``(*)``, any shape; output: same.
    """
    _check_eps(eps)
    if stats is not None:
        mean, var = stats
        return normalize_with(x, mean if center else None, var, weight, bias, eps=eps)
    if num_groups is None:
        shift, corr, var, _ = _stats(x, reduce_dims(dims, x.ndim), center, mask)
        return normalize_with(x, shift, var, weight, bias, eps=eps, corr=corr)
    rdims = reduce_dims(dims, x.ndim)
    g = resolve_dims(group_dim, x.ndim, what="group_dim")[0]
    if g not in rdims:
        raise ValueError(f"group_dim={group_dim} must be one of the reduced dims {rdims}")
    size = x.shape[g]
    if num_groups < 1 or size % num_groups:
        raise ValueError(f"cannot split dim {g} of size {size} into {num_groups} equal groups")
    xg = _split_groups(x, g, num_groups)
    mg = None if mask is None else _split_groups(_broadcast_mask(mask, x), g, num_groups)
    gdims = tuple(d if d < g else d + 1 for d in rdims)  # reduce inside each group, keep the group index
    shift, corr, var, _ = _stats(xg, gdims, center, mg)
    y = normalize_with(xg.to(compute_dtype(x.dtype)), shift, var, eps=eps, corr=corr).reshape(x.shape)
    return affine(y, weight, bias).to(x.dtype)

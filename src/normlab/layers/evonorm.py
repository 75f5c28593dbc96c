r"""EvoNorm-B0 and EvoNorm-S0 (Liu et al. 2020): normalization-activation layers found by search."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as NF
from .norm import Norm, _as_int, _as_shape, _group_error, _host_checks

__all__ = ["EvoNormB0", "EvoNormS0"]


def _v_param(owner: Norm, num_features: int, on: bool, factory_kwargs: dict) -> None:
    """Register the per-channel ``v`` of the nonlinearity (or ``None`` without it)."""
    owner.register_parameter("v", nn.Parameter(torch.empty(num_features, **factory_kwargs)) if on else None)


def _reset_v(owner: Norm) -> None:
    """v starts at 1 (both variants)."""
    if getattr(owner, "v", None) is not None:
        nn.init.ones_(owner.v)


class EvoNormS0(Norm):
    r"""EvoNorm-S0: ``y = gamma * x * sigmoid(v * x) / group_std(x) + beta``, batch-free.

    .. math::

        y = \gamma_c \frac{x\, \sigma(v_c x)}{\sqrt{\mathrm{Var}_{g(c),*}[x_n] + \epsilon}} + \beta_c

    The denominator is GroupNorm's standard deviation (per sample, over the
    C/G channels of a group and every spatial position, biased variance);
    the numerator is *not* centered: ``x * sigmoid(v x)`` is the Swish/SiLU
    gate with a learned per-channel slope ``v`` (initialised to 1), so the
    layer is a normalization and an activation at once (it replaces
    GroupNorm + ReLU).  No batch statistics: the same output in training
    and eval, whatever the batch.

    ``nonlinearity=False`` drops the gate (no ``v``): ``y = gamma * x /
    group_std(x) + beta``, a GroupNorm that scales without re-centering, for
    positions without an activation (e.g. the last norm of a residual
    branch).  (timm's ``apply_act=False`` instead keeps only the affine; such
    layers are not converted.)

    Args:
        num_features: C (dim 1).
        groups: G, must divide C (default 32, the paper's); ``num_groups`` is accepted as its alias.
        eps: added to the group variance (default 1e-5).
        affine: learn ``weight`` (1) and ``bias`` (0).
        nonlinearity: the sigmoid gate with learned ``v`` (default True).
        bias: with ``affine``, learn the shift.

    Shape:
        - Input: ``(N, C, *)``.
        - mask (optional): the input's shape without C, bool; masked positions
          stay out of the group statistics.
        - Output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import EvoNormS0
        >>> evo = EvoNormS0(16, groups=4)
        >>> x = torch.randn(2, 16, 8, 8)
        >>> torch.allclose(evo(x)[:1], evo(x[:1]))        # batch-free
        True

    Paper: H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving
    Normalization-Activation Layers", NeurIPS 2020.
    """

    _fused_add = False  # its forward computes more than the fused add + norm kernel does

    _shape_arg = "num_features"

    def __init__(self, num_features: int, groups: int = 32, eps: float = 1e-5, affine: bool = True,
                 nonlinearity: bool = True, device=None, dtype=None, *, bias: bool = True,
                 num_groups: int | None = None) -> None:
        num_features = _as_shape(num_features, "num_features", "EvoNormS0")[0]
        if num_groups is not None:  # GroupNorm's name for it
            groups = num_groups
        groups = _as_int(groups, "groups", "EvoNormS0")
        if groups < 1 or num_features % groups:
            raise ValueError("EvoNormS0: " + _group_error(groups, num_features).replace("GroupNorm needs", "needs"))
        super().__init__(num_features, keep_dims=(0,), param_dims=(1,), eps=eps, affine=affine, bias=bias,
                         num_groups=groups, group_dim=1, min_ndim=2, device=device, dtype=dtype)
        self.num_features = num_features
        self.groups = groups
        self.nonlinearity = nonlinearity
        _v_param(self, num_features, nonlinearity, {"device": device, "dtype": dtype})
        _reset_v(self)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_v(self)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
        xc = x.to(NF.compute_dtype(x.dtype))
        n, c, g = x.shape[0], x.shape[1], self.groups
        xg = xc.reshape(n, g, c // g, *x.shape[2:])  # (N, G, C/G, *)
        mg = None
        if mask is not None:
            mg = mask.expand(n, 1, *x.shape[2:]).unsqueeze(1)  # (N, 1, 1, *): the same positions in every group
        gdims = tuple(range(2, xg.ndim))
        if mask is not None and _host_checks(mask):
            self._check_count(mask.expand(n, 1, *x.shape[2:]).sum(tuple(range(1, x.ndim))), x)
        _, var = NF.moments(xg, gdims, mask=mg)
        std = torch.sqrt(var + eps).expand(xg.shape).reshape(x.shape)  # (N, C, *)
        num = xc
        if self.v is not None:
            num = xc * torch.sigmoid(self._param_view(self.v, x, pdims).to(xc.dtype) * xc)
        return NF.affine(num / std, weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, groups={self.groups}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}, nonlinearity={self.nonlinearity}")


class EvoNormB0(Norm):
    r"""EvoNorm-B0: ``y = gamma * x / max(sqrt(s_B^2 + eps), v * x + sqrt(s_I^2 + eps)) + beta``.

    .. math::

        y = \gamma_c \frac{x}{\max\big(\sqrt{\mathrm{Var}_{N,*}[x_c] + \epsilon},\;
        v_c x + \sqrt{\mathrm{Var}_{*}[x_{n,c}] + \epsilon}\big)} + \beta_c

    The first argument of the elementwise max is BatchNorm's standard
    deviation (per channel over the batch and every spatial position; in
    eval mode from ``running_var``, updated as BatchNorm's: biased batch
    variance in the normalization, unbiased in the running average); the
    second is InstanceNorm's standard deviation plus a learned per-channel
    ``v x`` (``v`` initialised to 1), which makes the layer an activation
    too (it replaces BatchNorm + ReLU).  Like BatchNorm it depends on the
    batch in training and has a train/eval discrepancy.  The numerator is not
    centered, and no running mean is kept (state dict: ``weight``, ``bias``,
    ``v``, ``running_var``, ``num_batches_tracked``).

    ``nonlinearity=False`` drops ``v x`` (no ``v``): ``y = gamma * x /
    max(batch std, instance std) + beta``, for positions without an
    activation.

    Args:
        num_features: C (dim 1).
        eps: added to both variances (default 1e-5).
        momentum: running-variance factor as BatchNorm's (default 0.1; ``None``: cumulative average).
        affine: learn ``weight`` (1) and ``bias`` (0).
        nonlinearity: the ``v x`` term (default True).
        bias: with ``affine``, learn the shift.

    Shape:
        - Input: ``(N, C, *)`` with at least one spatial/time dim.
        - mask (optional): the input's shape without C, bool; masked positions
          stay out of both variances and the running variance.
        - Output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab.layers import EvoNormB0
        >>> evo = EvoNormB0(16)
        >>> y = evo(torch.randn(8, 16, 5, 5))            # training: batch variance
        >>> y = evo.eval()(torch.randn(2, 16, 5, 5))     # eval: running variance

    Paper: H. Liu, A. Brock, K. Simonyan, Q. V. Le, "Evolving
    Normalization-Activation Layers", NeurIPS 2020.
    """

    _fused_add = False  # its forward computes more than the fused add + norm kernel does

    _shape_arg = "num_features"
    _min_count_training = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 nonlinearity: bool = True, device=None, dtype=None, *, bias: bool = True) -> None:
        num_features = _as_shape(num_features, "num_features", "EvoNormB0")[0]
        super().__init__(num_features, keep_dims=(1,), param_dims=(1,), eps=eps, affine=affine, bias=bias,
                         momentum=momentum, track_running_stats=True, min_ndim=3, device=device, dtype=dtype)
        self.register_buffer("running_mean", None)  # B0 uses the batch variance only
        self.num_features = num_features
        self.nonlinearity = nonlinearity
        _v_param(self, num_features, nonlinearity, {"device": device, "dtype": dtype})
        _reset_v(self)

    def reset_running_stats(self) -> None:
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        _reset_v(self)

    def _update_running_var(self, var: Tensor, count: Tensor | int) -> None:
        """Fold the batch variance (unbiased) into ``running_var``; non-finite or too-few-value channels keep theirs."""
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = self._batch_weight()
            if isinstance(count, Tensor):
                unbiased = var * (count / (count - 1).clamp_min(1))
                enough = (count >= self._min_count()).expand(var.shape).reshape(self.shape)
            else:
                unbiased = var * (count / max(count - 1, 1))
                enough = torch.ones(self.shape, dtype=torch.bool, device=var.device)
            bvar = unbiased.reshape(self.shape).to(self.running_var.dtype)
            finite = torch.isfinite(bvar)
            self._fold_running(None, bvar, factor, finite & enough, finite)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        rdims, pdims, mask, weight, bias, eps = self._prepared(x, mask)
        cdtype = NF.compute_dtype(x.dtype)
        xc = x.to(cdtype)
        if self._use_batch_stats():
            _, bvar, count = NF.moments(x, rdims, mask=mask, return_count=True)
            self._check_count(count, x)
            if self._updates_running_stats():
                self._update_running_var(bvar.detach(), count)
        else:
            bvar = self._param_view(self.running_var, x, pdims).to(cdtype)
        idims = tuple(range(2, x.ndim))  # per sample and channel
        _, ivar = NF.moments(x, idims, mask=mask)
        right = torch.sqrt(ivar + eps)
        if self.v is not None:
            right = self._param_view(self.v, x, pdims).to(cdtype) * xc + right
        den = torch.maximum(torch.sqrt(bvar + eps).expand(x.shape), right.expand(x.shape))
        return NF.affine(xc / den, weight, bias).to(x.dtype)

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
             f"bias={self.bias is not None}, nonlinearity={self.nonlinearity}")
        return s + (", frozen=True" if self.frozen else "")

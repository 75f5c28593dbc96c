"""Optimizer parameter groups that leave normalization parameters and biases out of weight decay."""

from __future__ import annotations

from torch import nn

__all__ = ["param_groups", "is_norm_module"]


def is_norm_module(m: nn.Module) -> bool:
    """torch.nn and normlab normalizers, and modules whose class is named like one and hold no matrices."""
    from ..layers import DyT, Norm, ScaleNorm

    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, Norm, DyT, ScaleNorm)
    if hasattr(nn, "RMSNorm"):
        norms = norms + (nn.RMSNorm,)
    if isinstance(m, norms):
        return True
    name = type(m).__name__.lower()
    return "norm" in name and not any(p.ndim >= 2 and sum(s > 1 for s in p.shape) >= 2
                                      for p in m.parameters(recurse=False))


def param_groups(model: nn.Module, weight_decay: float, **group_options) -> list[dict]:
    """Two optimizer groups: weights with ``weight_decay``, and norm parameters and biases without it.

    Weight decay pulls a parameter toward 0; for a norm's gamma that shrinks
    the normalized signal (toward the C30 failure of gamma = 0) and it fights
    the scale invariance the norm provides; biases and betas are offsets that
    decay has no reason to shrink.  Left out of decay: every parameter of a
    normalization module (torch.nn's, normlab's, or a class named like a norm
    with no weight matrix), and every parameter with fewer than two dims
    (biases, layer-scale vectors, scalars).  Parameters shared between modules
    appear once; ones with ``requires_grad=False`` are left out.

    Args:
        model: the model.
        weight_decay: the decay of the first group.
        **group_options: extra keys for both groups (``lr=...``).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "name": "decay"},
        {"params": [...], "weight_decay": 0.0, "name": "no_decay"}]`` (an
        empty group is dropped), ready for any ``torch.optim`` optimizer.

    Example::

        >>> import torch, normlab as nl
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
        >>> groups = nl.param_groups(net, weight_decay=0.1)
        >>> [(g["name"], len(g["params"])) for g in groups]
        [('decay', 2), ('no_decay', 4)]
        >>> opt = torch.optim.AdamW(groups, lr=1e-3)
    """
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or weight_decay < 0:
        raise ValueError(f"param_groups: weight_decay must be a number >= 0, got {weight_decay!r}")
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in model.modules():
        norm = is_norm_module(m)
        for p in m.parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (no_decay if norm or p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay), "name": "decay", **group_options},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay", **group_options}]
    return [g for g in groups if g["params"]]

r"""GroupNorm, a preset of :class:`~normlab.Norm` that reduces within channel groups."""

from __future__ import annotations

from .norm import Norm, _as_int, _group_error

__all__ = ["GroupNorm"]


class GroupNorm(Norm):
    r"""Group normalization (Wu & He 2018): per sample, over groups of C/G channels and all positions.

    .. math::

        y_{n,c} = \gamma_c \cdot \frac{x_{n,c} - \mathrm{E}_{g(c),*}[x_n]}{\sqrt{\mathrm{Var}_{g(c),*}[x_n] + \epsilon}} + \beta_c

    where :math:`g(c)` is the group of channel c (contiguous blocks of C/G
    channels).  ``num_groups=1`` is LayerNorm over (C, *) with a per-channel
    affine; ``num_groups=C`` is InstanceNorm.  No batch coupling, no
    running statistics.  Constructor and state dict as ``torch.nn.GroupNorm``.

    Args:
        num_groups: G, must divide ``num_channels``.
        num_channels: C.
        eps: default 1e-5.
        affine: learn per-channel ``weight`` (1) and ``bias`` (0).
        bias: with ``affine``, learn the shift.

    Shape:
        - Input: ``(N, C, *)``.
        - mask (in ``forward``): the input's shape without C, bool; padded
          positions are left out of each group's statistics.
        - Output: same shape and dtype.

    Example::

        >>> import torch
        >>> from normlab import GroupNorm
        >>> x = torch.randn(2, 32, 8, 8)
        >>> torch.allclose(GroupNorm(8, 32)(x), torch.nn.GroupNorm(8, 32)(x), atol=1e-5)
        True
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True) -> None:
        num_groups = _as_int(num_groups, "num_groups", "GroupNorm")
        num_channels = _as_int(num_channels, "num_channels", "GroupNorm")
        if num_channels < 1:
            raise ValueError(f"GroupNorm: num_channels must be >= 1, got {num_channels}")
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(_group_error(num_groups, num_channels))
        super().__init__(num_channels, keep_dims=(0,), param_dims=(1,), eps=eps, affine=affine, bias=bias,
                         num_groups=num_groups, group_dim=1, min_ndim=2, device=device, dtype=dtype)
        self.num_channels = num_channels

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")

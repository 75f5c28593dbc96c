"""Small 1-D and 2-D convolutional nets whose normalization is configuration.

Sized for MNIST-1D signals (N, 1, 40) and scikit-learn's 8x8 digits
(N, 1, 8, 8).  ``arch`` picks a residual net, the same net without skips
("plain"), or a VGG-like stack (for the loss-landscape study); ``norm``
is a key of :data:`CONV_NORMS`; dropout can sit before or after each norm.
The normalization-activation layers ("frn": FRN + TLU, "evonorm_b0",
"evonorm_s0") replace the norm *and* its ReLU; where a unit has no
activation (the last unit of a residual block) they are built without their
nonlinearity.  "gn+ws" is GroupNorm after weight-standardized convs (BiT).

Example::

    >>> import torch
    >>> from normlab.models import ConvNet, ConvNetConfig
    >>> net = ConvNet(ConvNetConfig(dim=2, input_size=8, norm="groupnorm", groups=4))
    >>> net(torch.randn(5, 1, 8, 8)).shape
    torch.Size([5, 10])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .._checks import check_float, check_int
from ..layers import (BatchNorm, BatchRenorm, EvoNormB0, EvoNormS0, FilterResponseNorm, GhostBatchNorm, GroupNorm,
                      InstanceNorm, LayerNorm, LayerNorm2d, Norm, WSConv1d, WSConv2d, weight_norm)

__all__ = ["ConvNet", "ConvNetConfig", "CONV_NORMS", "NORM_ACTS"]


@dataclass
class ConvNetConfig:
    """Everything that defines a :class:`ConvNet`.

    Attributes:
        dim: 1 (signals, (N, C, L)) or 2 (images, (N, C, H, W)).
        in_channels, num_classes: input channels and classes.
        input_size: L or H (= W); LayerNorm over (C, *spatial) needs it.
        widths: channels of each stage (each stage after the first halves the resolution).
        blocks_per_stage: residual blocks (or conv units for vgg) per stage.
        arch: "resnet", "plain" (resnet blocks without skips) or "vgg".
        norm: a key of :data:`CONV_NORMS`.
        groups: GroupNorm's (and EvoNorm-S0's) number of groups.
        virtual_batch_size: GhostBatchNorm's samples per ghost batch ("ghostbn").
        renorm_rmax, renorm_dmax, renorm_warmup_steps: BatchRenorm's limits and the training steps
            (forward calls in training) over which they relax from (1, 0) ("batchrenorm").
        norm_eps: eps of the normalizers (None: their defaults).
        norm_momentum: running-statistics momentum of the norms that keep them (None: their defaults, 0.1).
        gamma_init: initial value of every norm's gamma (claim C30 sets 0).
        dropout: dropout probability; dropout_place: "none", "before_norm" or "after_norm".
    """

    dim: int = 1
    in_channels: int = 1
    num_classes: int = 10
    input_size: int = 40
    widths: tuple[int, ...] = (16, 32, 64)
    blocks_per_stage: int = 1
    arch: str = "resnet"
    norm: str = "batchnorm"
    groups: int = 4
    virtual_batch_size: int = 8
    renorm_rmax: float = 3.0
    renorm_dmax: float = 5.0
    renorm_warmup_steps: int = 5000
    norm_eps: float | None = None
    norm_momentum: float | None = None
    gamma_init: float = 1.0
    dropout: float = 0.0
    dropout_place: str = "none"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and ranges of every field; the error names the field, the value and what is allowed."""
        check_int(self, "dim", lo=1, hi=2)
        for k in ("in_channels", "input_size", "blocks_per_stage", "groups", "virtual_batch_size"):
            check_int(self, k, lo=1)
        check_int(self, "renorm_warmup_steps", lo=0)
        check_float(self, "renorm_rmax", lo=1)
        check_float(self, "renorm_dmax", lo=0)
        check_int(self, "num_classes", lo=2)
        if not isinstance(self.widths, (tuple, list)) or not self.widths or \
                any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.widths):
            raise ValueError(f"ConvNetConfig.widths must be a non-empty tuple of ints >= 1 (one per stage), "
                             f"got {self.widths!r}")
        check_float(self, "norm_eps", lo=0, optional=True)
        check_float(self, "norm_momentum", lo=0, hi=1, optional=True)
        check_float(self, "gamma_init")
        check_float(self, "dropout", lo=0, hi=1, hi_open=True)
        if self.dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {self.dim}")
        if self.arch not in ("resnet", "plain", "vgg"):
            raise ValueError(f"arch must be resnet, plain or vgg, got {self.arch!r}")
        if self.norm not in CONV_NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; choose one of {', '.join(CONV_NORMS)}")
        if self.dropout_place not in ("none", "before_norm", "after_norm"):
            raise ValueError(f"dropout_place must be none, before_norm or after_norm, got {self.dropout_place!r}")
        if self.input_size >> (len(self.widths) - 1) < 1:
            raise ValueError(f"input_size {self.input_size} is too small for {len(self.widths)} stages")

    def to_dict(self) -> dict:
        return asdict(self)


def _eps(cfg: ConvNetConfig, default: float) -> float:
    return default if cfg.norm_eps is None else cfg.norm_eps


def _mom(cfg: ConvNetConfig) -> float:
    return 0.1 if cfg.norm_momentum is None else cfg.norm_momentum


#: norm name -> builder(cfg, channels, spatial shape); "weightnorm" reparametrizes the convs instead
CONV_NORMS: dict[str, Callable[[ConvNetConfig, int, tuple[int, ...]], nn.Module]] = {
    "batchnorm": lambda cfg, c, sp: BatchNorm(c, eps=_eps(cfg, 1e-5), momentum=_mom(cfg)),
    "groupnorm": lambda cfg, c, sp: GroupNorm(cfg.groups, c, eps=_eps(cfg, 1e-5)),
    "layernorm": lambda cfg, c, sp: LayerNorm((c, *sp), eps=_eps(cfg, 1e-5)),  # per sample over C, *spatial
    "layernorm2d": lambda cfg, c, sp: LayerNorm2d(c, eps=_eps(cfg, 1e-6)),  # per position over C
    "instancenorm": lambda cfg, c, sp: InstanceNorm(c, eps=_eps(cfg, 1e-5), affine=True),
    "rmsnorm": lambda cfg, c, sp: Norm(c, dims=(1,), param_dims=(1,), center=False, bias=False,
                                       eps=_eps(cfg, 1e-6), min_ndim=2),  # per position over C, no centering
    "weightnorm": lambda cfg, c, sp: nn.Identity(),
    "none": lambda cfg, c, sp: nn.Identity(),
    "batchrenorm": lambda cfg, c, sp: BatchRenorm(c, eps=_eps(cfg, 1e-5), momentum=_mom(cfg), rmax=cfg.renorm_rmax,
                                                  dmax=cfg.renorm_dmax, warmup_steps=cfg.renorm_warmup_steps),
    "ghostbn": lambda cfg, c, sp: GhostBatchNorm(c, virtual_batch_size=cfg.virtual_batch_size, eps=_eps(cfg, 1e-5),
                                                 momentum=_mom(cfg)),
    "gn+ws": lambda cfg, c, sp: GroupNorm(cfg.groups, c, eps=_eps(cfg, 1e-5)),  # after weight-standardized convs
    "frn": lambda cfg, c, sp: FilterResponseNorm(c, eps=_eps(cfg, 1e-6)),  # FRN + TLU: replaces norm + ReLU
    "evonorm_b0": lambda cfg, c, sp: EvoNormB0(c, eps=_eps(cfg, 1e-5), momentum=_mom(cfg)),
    "evonorm_s0": lambda cfg, c, sp: EvoNormS0(c, groups=cfg.groups, eps=_eps(cfg, 1e-5)),
}

#: normalization-activation layers: in a unit with an activation they replace norm + ReLU; in a unit without one
#: (a residual block's last) they are built by these builders, without their nonlinearity
NORM_ACTS: dict[str, Callable[[ConvNetConfig, int, tuple[int, ...]], nn.Module]] = {
    "frn": lambda cfg, c, sp: FilterResponseNorm(c, eps=_eps(cfg, 1e-6), tlu=False),
    "evonorm_b0": lambda cfg, c, sp: EvoNormB0(c, eps=_eps(cfg, 1e-5), momentum=_mom(cfg), nonlinearity=False),
    "evonorm_s0": lambda cfg, c, sp: EvoNormS0(c, groups=cfg.groups, eps=_eps(cfg, 1e-5), nonlinearity=False),
}

#: the conv classes (1-D, 2-D) a norm is used with: weight-standardized for "gn+ws"
_CONVS: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {"gn+ws": (WSConv1d, WSConv2d)}


class ConvUnit(nn.Module):
    """conv -> [dropout] -> norm -> ReLU -> [dropout], the dropout where ``dropout_place`` says.

    A normalization-activation layer (:data:`NORM_ACTS`) is the norm and the activation at once: the ReLU is
    left out, and without ``act`` the layer is built without its nonlinearity.
    """

    def __init__(self, cfg: ConvNetConfig, c_in: int, c_out: int, spatial: tuple[int, ...], stride: int = 1,
                 act: bool = True):
        super().__init__()
        conv = _CONVS.get(cfg.norm, (nn.Conv1d, nn.Conv2d))[cfg.dim - 1]
        self.conv = conv(c_in, c_out, 3, stride=stride, padding=1, bias=cfg.norm in ("none", "weightnorm"))
        if cfg.norm == "weightnorm":
            weight_norm(self.conv)
        norm_act = cfg.norm in NORM_ACTS
        self.norm = (CONV_NORMS if act or not norm_act else NORM_ACTS)[cfg.norm](cfg, c_out, spatial)
        self.act = nn.ReLU() if act and not norm_act else nn.Identity()
        self.drop_before = nn.Dropout(cfg.dropout) if cfg.dropout_place == "before_norm" else nn.Identity()
        self.drop_after = nn.Dropout(cfg.dropout) if cfg.dropout_place == "after_norm" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop_after(self.act(self.norm(self.drop_before(self.conv(x)))))


class ResBlock(nn.Module):
    """Two conv units; with ``skip`` the input (projected if the shape changes) is added before the last ReLU."""

    def __init__(self, cfg: ConvNetConfig, c_in: int, c_out: int, spatial: tuple[int, ...], stride: int,
                 skip: bool):
        super().__init__()
        self.unit1 = ConvUnit(cfg, c_in, c_out, spatial, stride)
        self.unit2 = ConvUnit(cfg, c_out, c_out, spatial, act=False)
        conv = (nn.Conv1d, nn.Conv2d)[cfg.dim - 1]
        self.skip = None
        if skip:
            self.skip = nn.Identity() if (c_in == c_out and stride == 1) else conv(c_in, c_out, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        h = self.unit2(self.unit1(x))
        return torch.relu(h if self.skip is None else h + self.skip(x))


class ConvNet(nn.Module):
    """A small classifier: stem, stages of blocks, global average pool, linear head."""

    def __init__(self, cfg: ConvNetConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        size = cfg.input_size
        spatial = (size,) * cfg.dim
        self.stem = ConvUnit(cfg, cfg.in_channels, cfg.widths[0], spatial)
        layers: list[nn.Module] = []
        c_in = cfg.widths[0]
        pool = (nn.MaxPool1d, nn.MaxPool2d)[cfg.dim - 1]
        for s, width in enumerate(cfg.widths):
            for b in range(cfg.blocks_per_stage):
                down = s > 0 and b == 0
                if cfg.arch == "vgg":
                    if down:
                        layers.append(pool(2))
                        size //= 2
                    layers.append(ConvUnit(cfg, c_in, width, (size,) * cfg.dim))
                else:
                    if down:
                        size = (size + 1) // 2
                    layers.append(ResBlock(cfg, c_in, width, (size,) * cfg.dim, 2 if down else 1,
                                           skip=cfg.arch == "resnet"))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, cfg.num_classes)
        if cfg.norm == "weightnorm":
            weight_norm(self.head)
        self.reset_gamma()

    def reset_gamma(self) -> None:
        """Set every norm's gamma to ``cfg.gamma_init`` (1 by default)."""
        with torch.no_grad():
            for m in self.norm_layers().values():
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(self.cfg.gamma_init)

    def norm_layers(self) -> dict[str, nn.Module]:
        """Every normalization module by its qualified name (``stem.norm``, ``features.0.unit1.norm``, ...)."""
        return {n: m for n, m in self.named_modules() if isinstance(m, Norm)}

    def forward(self, x: Tensor) -> Tensor:
        expected = (self.cfg.in_channels, *(self.cfg.input_size,) * self.cfg.dim)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"ConvNet expects inputs of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        h = self.features(self.stem(x))
        return self.head(h.mean(dim=tuple(range(2, h.ndim))))

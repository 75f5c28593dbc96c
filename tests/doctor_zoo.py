"""Models for the doctor's tests: one deliberate bug each (and the same model fixed), and clean architectures.

``BUGS`` maps a name to a :class:`Case` factory: ``case(fixed=False)`` builds the
buggy model with what the doctor needs (inputs, optimizer, flags) and the
finding it must raise; ``case(fixed=True)`` the same model without the bug.

``resnet18`` and ``convnext_tiny`` follow torchvision's published
architectures (torchvision itself cannot be imported next to this CPU torch
build): BasicBlocks with a conv1x1 + BN downsample, ConvNeXt blocks with a
depthwise 7x7 conv, a channels-last LayerNorm applied through permutes, layer
scale and a GELU MLP, and channels-first LayerNorm2d in the stem, the
downsampling layers and the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab as nl
from normlab.models import GPT, ConvNet, ConvNetConfig, GPTConfig


@dataclass
class Case:
    model: nn.Module
    inputs: Any = None
    kwargs: dict = field(default_factory=dict)
    optimizer: Any = None
    causal: bool = False
    train_step: bool = False
    expect: tuple[str, str, str] | None = None  # (check, module, severity) the buggy model must raise
    scheduler: Any = None

    def run(self, **extra):
        return nl.doctor(self.model, self.inputs, self.kwargs, optimizer=self.optimizer, causal=self.causal,
                         train_step=self.train_step, scheduler=self.scheduler, **extra)


def _images(n: int = 16, c: int = 3, s: int = 8) -> Tensor:
    return torch.randn(n, c, s, s, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------ the bugs
def momentum(fixed: bool) -> Case:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, momentum=0.1 if fixed else 0.99), nn.ReLU())
    return Case(m, (_images(),), expect=("bn-momentum-convention", "1", "warning"))


class ConvBN(nn.Module):
    """conv and norm kept in a dict and called in forward: no nn.Sequential tells that one feeds the other."""

    def __init__(self, bias: bool, norm: str = "bn"):
        super().__init__()
        self.parts = nn.ModuleDict({"conv": nn.Conv2d(3, 16, 3, padding=1, bias=bias),
                                    "norm": {"bn": nn.BatchNorm2d(16), "in": nn.InstanceNorm2d(16, affine=True),
                                             "gn": nn.GroupNorm(4, 16)}[norm]})
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        h = torch.relu(self.parts["norm"](self.parts["conv"](x)))
        return self.head(h.mean((2, 3)))


def bias_before_norm(fixed: bool) -> Case:
    return Case(ConvBN(bias=not fixed), (_images(),), expect=("bias-before-norm", "parts.conv", "warning"))


class LNModel(nn.Module):
    def __init__(self, d: int = 16, eps: float = 1e-5):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.ln = nn.LayerNorm(d, eps=eps)
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        return self.out(self.ln(self.inp(x)))


def norm_weight_decay(fixed: bool) -> Case:
    m = LNModel()
    params = nl.param_groups(m, weight_decay=0.1) if fixed else m.parameters()
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1)
    return Case(m, (torch.randn(4, 8),), optimizer=opt, expect=("norm-weight-decay", "ln", "warning"))


def dropout_before_bn(fixed: bool) -> Case:
    if fixed:
        m = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 2))
    else:
        m = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Linear(16, 2))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    return Case(m, (x,), expect=("dropout-before-bn", "1", "warning"))


def bn_small_batch(fixed: bool) -> Case:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    return Case(m, (_images(32 if fixed else 4),), expect=("bn-small-batch", "1", "warning"))


class SeqBN(nn.Module):
    """Token embedding -> a channel-last BatchNorm over (B, T) -> head; the forward takes an attention mask."""

    def __init__(self, masked: bool, vocab: int = 50, d: int = 16):
        super().__init__()
        self.masked = masked
        self.emb = nn.Embedding(vocab, d)
        self.norm = nl.BatchNorm(d, channel_dim=-1)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids, attention_mask=None):
        h = self.emb(ids)
        h = self.norm(h, mask=attention_mask.bool()) if self.masked and attention_mask is not None else self.norm(h)
        return self.head(h)


def bn_padding(fixed: bool) -> Case:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 50, (16, 12), generator=g)
    lengths = torch.tensor([12, 5, 7, 3] * 4)
    mask = torch.arange(12)[None, :] < lengths[:, None]
    ids = ids.masked_fill(~mask, 0)
    return Case(SeqBN(masked=fixed), (ids,), {"attention_mask": mask.long()}, expect=("bn-padding", "norm", "error"))


def bn_eval_batch_stats(fixed: bool) -> Case:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8, track_running_stats=fixed), nn.ReLU())
    return Case(m, (_images(),), expect=("bn-eval-batch-stats", "1", "warning"))


def stale_running_stats(fixed: bool) -> Case:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    x = _images(32)
    with torch.no_grad():
        h = m[0](x)
        bn = m[1]
        if fixed:
            bn.running_mean.copy_(h.mean((0, 2, 3)))
            bn.running_var.copy_(h.var((0, 2, 3)))
        else:  # statistics of another distribution: offset by 3 std and 10x the variance
            bn.running_mean.copy_(h.mean((0, 2, 3)) + 3 * h.std((0, 2, 3)))
            bn.running_var.copy_(h.var((0, 2, 3)) * 10)
        bn.num_batches_tracked.fill_(500)
    m.eval()
    return Case(m, (x,), expect=("stale-running-stats", "1", "warning"))


class LowPrecRMSNorm(nn.Module):
    """A user's RMSNorm whose statistics stay in the input's dtype (bf16): the bug."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class Float32RMSNorm(LowPrecRMSNorm):
    """The fix, as Llama's RMSNorm: statistics in float32, the result cast back."""

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class RMSModel(nn.Module):
    def __init__(self, norm: nn.Module, d: int = 64):
        super().__init__()
        self.inp = nn.Linear(16, d)
        self.norm = norm
        self.out = nn.Linear(d, 4)

    def forward(self, x):
        return self.out(self.norm(self.inp(x)))


def lowprec_stats(fixed: bool) -> Case:
    norm = Float32RMSNorm(64) if fixed else LowPrecRMSNorm(64)
    m = RMSModel(norm).to(torch.bfloat16)
    x = (torch.randn(32, 16, generator=torch.Generator().manual_seed(3)) * 2 + 3).to(torch.bfloat16)
    return Case(m, (x,), expect=("lowprec-stats", "norm", "error"))


def eps_zero(fixed: bool) -> Case:
    return Case(LNModel(eps=1e-5 if fixed else 0.0), (torch.randn(4, 8),), expect=("eps-too-small", "ln", "error"))


class NoEpsNorm(nn.Module):
    """A user's LayerNorm that forgot eps (no attribute to read: only measuring finds it)."""

    def __init__(self, d: int, eps: float | None = None):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self._e = eps or 0.0

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        return self.w * (x - mu) / ((x - mu).pow(2).mean(-1, keepdim=True) + self._e).sqrt()


def eps_measured(fixed: bool) -> Case:
    m = RMSModel(NoEpsNorm(64, 1e-5 if fixed else None))
    return Case(m, (torch.randn(8, 16),), expect=("eps-too-small", "norm", "error"))


def zero_gamma(fixed: bool) -> Case:
    m = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    if not fixed:
        nn.init.zeros_(m[1].weight)
    return Case(m, (torch.randn(32, 8),), train_step=True, expect=("zero-gamma", "1", "error"))


class ConvLN(nn.Module):
    """conv -> LayerNorm(C) on the (N, C, H, W) output, where W happens to equal C: the last-dim trap."""

    def __init__(self, fixed: bool, c: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.norm = nl.LayerNorm2d(c) if fixed else nn.LayerNorm(c)
        self.head = nn.Linear(c, 4)

    def forward(self, x):
        return self.head(torch.relu(self.norm(self.conv(x))).mean((2, 3)))


def last_dim_trap(fixed: bool) -> Case:
    return Case(ConvLN(fixed), (_images(8, 3, 16),), expect=("last-dim-trap", "norm", "error"))


class OutlierLN(nn.Module):
    def __init__(self, fixed: bool, d: int = 64):
        super().__init__()
        self.inp = nn.Linear(16, d)
        if not fixed:
            with torch.no_grad():
                self.inp.bias[5] = 40.0  # one massive feature in every token
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, 4)

    def forward(self, x):
        return self.out(self.ln(self.inp(x)))


def outlier_feature(fixed: bool) -> Case:
    return Case(OutlierLN(fixed), (torch.randn(4, 10, 16),), expect=("outlier-feature", "ln", "warning"))


def _gpt(**kw) -> GPT:
    cfg = dict(n_layer=4, d_model=32, n_head=4, block_size=16, vocab_size=40)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def _ids(b: int = 4, t: int = 16) -> Tensor:
    return torch.randint(0, 40, (b, t), generator=torch.Generator().manual_seed(4))


def missing_final_norm(fixed: bool) -> Case:
    m = _gpt()
    if not fixed:
        m.ln_f = None
    return Case(m, (_ids(),), expect=("missing-final-norm", "lm_head", "warning"))


def mixed_placement(fixed: bool) -> Case:
    m = _gpt(placement="pre" if fixed else ["pre", "pre", "post", "pre"])
    return Case(m, (_ids(),), expect=("mixed-placement", "blocks.2", "warning"))


def attn_logit_growth(fixed: bool) -> Case:
    m = _gpt(n_layer=2)
    if not fixed:
        with torch.no_grad():
            m.blocks[0].attn.c_attn.weight[:64].mul_(300.0)  # queries and keys 300x: logits 9e4x
    return Case(m, (_ids(),), expect=("attn-logit-growth", "blocks.0.attn", "warning"))


def frozen_bn_updates(fixed: bool) -> Case:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    if fixed:
        m = nl.freeze_batchnorm(m).train()
    else:
        m[1].requires_grad_(False)  # "frozen", but model.train() keeps it updating its running statistics
    return Case(m, (_images(),), expect=("frozen-bn-updates", "1", "warning"))


class Reused(nn.Module):
    def __init__(self, fixed: bool, d: int = 16):
        super().__init__()
        self.a, self.b = nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d) if fixed else None

    def forward(self, x):
        x = x + self.a(self.norm(x))
        return x + self.b((self.norm2 or self.norm)(x))


def norm_reused(fixed: bool) -> Case:
    return Case(Reused(fixed), (torch.randn(4, 6, 16),), expect=("norm-reused", "norm", "warning"))


class HalfLN(nn.Module):
    def __init__(self, fixed: bool, d: int = 32):
        super().__init__()
        self.inp = nn.Linear(d, d)
        with torch.no_grad():
            self.inp.weight.mul_(1.0 if fixed else 1e4)  # outputs beyond fp16's 65504
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, 2)

    def forward(self, x):
        return self.out(self.ln(self.inp(x)))


def lowprec_overflow(fixed: bool) -> Case:
    m = HalfLN(fixed).half()
    return Case(m, (torch.randn(8, 32).half() * 4,), expect=("lowprec-overflow", "ln", "error"))


def bn_future_leak(fixed: bool) -> Case:
    m = _gpt(n_layer=2, norm="layernorm" if fixed else "batchnorm")
    return Case(m, (_ids(16),), causal=True, expect=("bn-future-leak", "blocks.0.norms.ln_1", "error"))


class DDPNet(nn.Module):
    def __init__(self, sync: bool):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nl.SyncBatchNorm(8) if sync else nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


# ------------------------------------------------------------------------------------------ round 2 bugs
class BackboneHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.backbone(x).mean((2, 3)))


def partial_eval(fixed: bool) -> Case:
    m = BackboneHead()
    if fixed:
        m.eval()
    else:
        m.backbone.eval()  # "inference", but the head's BatchNorm and dropout still train
    return Case(m, (_images(),), expect=("partial-eval", "head.1", "warning"))


class GAN(nn.Module):
    """A generator and a BatchNorm discriminator; D scores the real and the fake batch apart, or one mixed batch."""

    def __init__(self, mixed: bool):
        super().__init__()
        self.mixed = mixed
        self.G = nn.Sequential(nn.Linear(8, 48), nn.Tanh())
        self.D = nn.Sequential(nn.Linear(48, 32, bias=False), nn.BatchNorm1d(32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, real, z):
        fake = self.G(z)
        if self.mixed:
            return self.D(torch.cat([real, fake])).split(real.shape[0])
        return self.D(real), self.D(fake)


def bn_split_batches(fixed: bool) -> Case:
    g = torch.Generator().manual_seed(6)
    real = 3 * torch.randn(32, 48, generator=g) + 2.0  # data far from the generator's tanh outputs
    return Case(GAN(mixed=fixed), (real, torch.randn(32, 8, generator=g)),
                expect=("bn-split-batches", "D.1", "warning"))


class ConvGN(nn.Module):
    def __init__(self, fixed: bool, c: int = 16):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.norm = nl.LayerNorm2d(c) if fixed else nn.GroupNorm(1, c)  # meant: a LayerNorm over the channels

    def forward(self, x):
        return torch.relu(self.norm(self.conv(x)))


def groupnorm_one_group(fixed: bool) -> Case:
    return Case(ConvGN(fixed), (_images(4),), expect=("groupnorm-one-group", "norm", "warning"))


class FunctionalDropoutBN(nn.Module):
    def __init__(self, fixed: bool):
        super().__init__()
        self.fixed = fixed
        self.inp = nn.Linear(8, 16, bias=False)
        self.bn = nn.BatchNorm1d(16)
        self.out = nn.Linear(16, 2)

    def forward(self, x):
        h = self.inp(x)
        if self.fixed:
            return self.out(F.dropout(torch.relu(self.bn(h)), 0.5, self.training))
        return self.out(torch.relu(self.bn(F.dropout(h, 0.5, self.training))))


def functional_dropout_before_bn(fixed: bool) -> Case:
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    return Case(FunctionalDropoutBN(fixed), (x,), expect=("dropout-before-bn", "bn", "warning"))


def postln_no_warmup(fixed: bool) -> Case:
    m = _gpt(n_layer=12, placement="post")
    opt = torch.optim.AdamW(nl.param_groups(m, 0.1), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100)) if fixed else \
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    return Case(m, (_ids(2, 8),), optimizer=opt, scheduler=sched, expect=("postln-no-warmup", "blocks", "warning"))


class ConvTimeLN(nn.Module):
    """Conv1d -> (B, C, T) -> a LayerNorm over T (C != T): each channel normalized over time; fixed: over C."""

    def __init__(self, fixed: bool, c: int = 8, t: int = 20):
        super().__init__()
        self.fixed = fixed
        self.conv = nn.Conv1d(3, c, 3, padding=1, bias=False)
        self.norm = nn.LayerNorm(c if fixed else t)
        self.head = nn.Linear(c if fixed else t, 2)

    def forward(self, x):
        h = self.conv(x)
        return self.head(self.norm(h.transpose(1, 2)) if self.fixed else self.norm(h))


def last_dim_time(fixed: bool) -> Case:
    return Case(ConvTimeLN(fixed), (torch.randn(4, 3, 20, generator=torch.Generator().manual_seed(0)),),
                expect=("last-dim-trap", "norm", "warning"))


class HalfRMS(nn.Module):
    """An RMSNorm whose mean square is reduced in float32 but cast back before eps is added: in float16 an eps of
    1e-8 rounds to 0 and an all-zero row gives 0/0."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        ms = x.float().square().mean(-1, keepdim=True).to(x.dtype)
        return self.weight * x / torch.sqrt(ms + self.eps)


def eps_fp16(fixed: bool) -> Case:
    m = nn.Sequential(nn.Linear(16, 32), HalfRMS(32, 1e-3 if fixed else 1e-8), nn.Linear(32, 2)).half()
    return Case(m, (torch.randn(8, 16).half(),), expect=("eps-too-small", "1", "error"))


#: bug name -> factory; ddp-without-syncbn needs a process group and is tested on its own
BUGS = {
    "bn-momentum-convention": momentum,
    "bias-before-norm": bias_before_norm,
    "norm-weight-decay": norm_weight_decay,
    "dropout-before-bn": dropout_before_bn,
    "bn-small-batch": bn_small_batch,
    "bn-padding": bn_padding,
    "bn-eval-batch-stats": bn_eval_batch_stats,
    "stale-running-stats": stale_running_stats,
    "lowprec-stats": lowprec_stats,
    "eps-too-small": eps_zero,
    "eps-too-small (measured)": eps_measured,
    "zero-gamma": zero_gamma,
    "last-dim-trap": last_dim_trap,
    "outlier-feature": outlier_feature,
    "missing-final-norm": missing_final_norm,
    "mixed-placement": mixed_placement,
    "attn-logit-growth": attn_logit_growth,
    "frozen-bn-updates": frozen_bn_updates,
    "norm-reused": norm_reused,
    "lowprec-overflow": lowprec_overflow,
    "bn-future-leak": bn_future_leak,
    "partial-eval": partial_eval,
    "bn-split-batches": bn_split_batches,
    "groupnorm-one-group": groupnorm_one_group,
    "dropout-before-bn (functional)": functional_dropout_before_bn,
    "postln-no-warmup": postln_no_warmup,
    "last-dim-trap (time axis)": last_dim_time,
    "eps-too-small (float16)": eps_fp16,
}


# ------------------------------------------------------------------------------------------ ResNet-18
def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 1000, zero_init_residual: bool = False):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._layer(64, layers[0])
        self.layer2 = self._layer(128, layers[1], stride=2)
        self.layer3 = self._layer(256, layers[2], stride=2)
        self.layer4 = self._layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(**kw) -> ResNet:
    return ResNet((2, 2, 2, 2), **kw)


# ------------------------------------------------------------------------------------------ ConvNeXt-Tiny
class Permute(nn.Module):
    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm as torchvision writes it: permute to channels-last, layer_norm, permute back."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class StochasticDepth(nn.Module):
    """Drops the whole residual branch of a sample with probability p in training ("row" mode)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * noise.div_(keep)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, sd_prob: float):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim, bias=True),
            nn.GELU(),
            nn.Linear(4 * dim, dim, bias=True),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x):
        result = self.layer_scale * self.block(x)
        return self.stochastic_depth(result) + x


class ConvNeXt(nn.Module):
    def __init__(self, stages=((96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)),
                 stochastic_depth_prob: float = 0.1, layer_scale: float = 1e-6, num_classes: int = 1000):
        super().__init__()
        first = stages[0][0]
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, first, kernel_size=4, stride=4, bias=True),
                                                 LayerNorm2d(first, eps=1e-6))]
        total = sum(s[2] for s in stages)
        block_id = 0
        for c_in, c_out, n in stages:
            blocks = []
            for _ in range(n):
                blocks.append(CNBlock(c_in, layer_scale, stochastic_depth_prob * block_id / (total - 1.0)))
                block_id += 1
            layers.append(nn.Sequential(*blocks))
            if c_out is not None:
                layers.append(nn.Sequential(LayerNorm2d(c_in, eps=1e-6), nn.Conv2d(c_in, c_out, 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = stages[-1][0]
        self.classifier = nn.Sequential(LayerNorm2d(last, eps=1e-6), nn.Flatten(1), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def convnext_tiny(**kw) -> ConvNeXt:
    return ConvNeXt(**kw)


# ------------------------------------------------------------------------------------------ normlab's own
GPT_NORMS = ("layernorm", "rmsnorm", "batchnorm", "none", "dyt", "scalenorm")
GPT_PLACEMENTS = ("post", "pre", "sandwich", "parallel", "deepnorm")
GPT_QK = ("none", "layernorm", "rmsnorm", "l2")
CONV_NORMS = ("batchnorm", "groupnorm", "layernorm", "layernorm2d", "instancenorm", "rmsnorm", "weightnorm", "none")


def clean_gpt(norm: str, placement: str, qk: str = "none", **kw) -> tuple[nn.Module, tuple]:
    m = _gpt(norm=norm, placement=placement, qk_norm=qk, **kw)
    return m, (_ids(16),)


def clean_convnet(norm: str, arch: str = "resnet", dim: int = 2,
                  dropout_place: str = "none") -> tuple[nn.Module, tuple]:
    size = 8 if dim == 2 else 40
    cfg = ConvNetConfig(dim=dim, input_size=size, widths=(8, 16), norm=norm, arch=arch, groups=4,
                        dropout=0.2 if dropout_place != "none" else 0.0, dropout_place=dropout_place)
    x = torch.randn((16, 1) + (size,) * dim, generator=torch.Generator().manual_seed(5))
    return ConvNet(cfg), (x,)


def state_of(model: nn.Module) -> dict:
    """Everything a doctor run must leave unchanged (values compared exactly)."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "hooks": {n: (list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks))
                  for n, m in model.named_modules()},
        "ids": {n: id(p) for n, p in model.named_parameters()} | {n: id(b) for n, b in model.named_buffers()},
    }


def assert_same_state(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["requires_grad"] == b["requires_grad"]
    assert a["hooks"] == b["hooks"]
    assert a["ids"] == b["ids"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for k in a["grad"]:
        ga, gb = a["grad"][k], b["grad"][k]
        assert (ga is None) == (gb is None) and (ga is None or torch.equal(ga, gb)), k


def math_ok(x: float) -> bool:
    return math.isfinite(x)

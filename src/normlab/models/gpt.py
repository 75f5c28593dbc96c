"""A small GPT-style causal language model whose normalization is configuration.

Readable and nanoGPT-sized.  What varies is looked up by name in registries:
``NORMS`` (which normalizer), ``PLACEMENTS`` (where it sits in a block) and
``QK_NORMS`` (how queries and keys are normalized), so adding a variant is
one entry.  Placements may differ per block (``placement=["pre", "post",
...]``) to reproduce the mixed pre/post-LN bug.

Example::

    >>> import torch
    >>> from normlab.models import GPT, GPTConfig
    >>> cfg = GPTConfig(n_layer=2, d_model=32, n_head=4, block_size=16, vocab_size=50,
    ...                 norm="rmsnorm", placement="pre", qk_norm="layernorm")
    >>> model = GPT(cfg)
    >>> idx = torch.randint(0, 50, (3, 16))
    >>> model(idx).shape
    torch.Size([3, 16, 50])
    >>> logits, loss = model(idx, targets=idx)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_choice, check_float, check_int
from ..layers import BatchNorm, DyT, LayerNorm, RMSNorm, ScaleNorm
from ..layers.norm import add_norm
from ..layers.norm import _host_checks

__all__ = ["GPT", "GPTConfig", "NORMS", "PLACEMENTS", "QK_NORMS"]


@dataclass
class GPTConfig:
    """Everything that defines a :class:`GPT`; passed whole to every module.

    Attributes:
        n_layer, d_model, n_head, block_size, vocab_size: the usual sizes.
        norm: a key of :data:`NORMS` (layernorm, rmsnorm, batchnorm, none, dyt, scalenorm).
        placement: a key of :data:`PLACEMENTS` (post, pre, sandwich, parallel,
            deepnorm), or one per block.
        qk_norm: a key of :data:`QK_NORMS` (none, layernorm, rmsnorm, l2).
        norm_eps: eps of the normalizers (None: each normalizer's default).
        dyt_alpha0: DyT's initial alpha.
        mlp_ratio: hidden width of the MLP / d_model.
        activation: the MLP's nonlinearity, a key of :data:`ACTIVATIONS` ("gelu"; "relu" as in the
            original Transformer and Xiong et al.'s analysis).
        dropout: on attention weights and residual branches.
        bias: biases in the linear layers.
        tie_weights: share the token embedding with the output head.
        init: "gpt2" (normal(0, init_std), residual-branch outputs / sqrt(2 n_layer)) or
            "xavier" (Xavier-normal block matrices, as Xiong et al. 2020 and the original
            Transformer; embeddings stay normal(0, init_std)).
        init_std: std of the normal init of weights (GPT-2: 0.02).
        init_scale: multiplies the initial scale of the blocks' weight matrices; the embeddings and
            the head keep theirs (claim C31 sweeps it).
        embed_scale: Vaswani et al.'s embeddings: token and position tables start N(0, 1/d_model) and
            their sum is multiplied by sqrt(d_model / 2), so the first block sees unit-variance inputs
            (Xiong et al.'s analysis assumes them; with ``init="xavier"`` this is their setup). The tied
            head then gives logits of unit scale.
        z_loss: coefficient of the z-loss mean(logsumexp(logits)^2) added to the loss.
        mup_base_width: if set, muP-style width scaling relative to this
            d_model: hidden init std / sqrt(m), hidden Adam lr / m, output
            logits / m, attention scale 1/d_head (m = d_model / base).
    """

    n_layer: int = 4
    d_model: int = 128
    n_head: int = 4
    block_size: int = 64
    vocab_size: int = 128
    norm: str = "layernorm"
    placement: str | list[str] = "pre"
    qk_norm: str = "none"
    norm_eps: float | None = None
    dyt_alpha0: float = 0.5
    mlp_ratio: int = 4
    activation: str = "gelu"
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    init: str = "gpt2"
    init_std: float = 0.02
    init_scale: float = 1.0
    embed_scale: bool = False
    z_loss: float = 0.0
    mup_base_width: int | None = None

    def placements(self) -> list[str]:
        p = [self.placement] * self.n_layer if isinstance(self.placement, str) else list(self.placement)
        if len(p) != self.n_layer:
            raise ValueError(f"GPTConfig.placement lists {len(p)} blocks, n_layer is {self.n_layer}")
        return p

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types and ranges of every field; the error names the field, the value and what is allowed."""
        for k in ("n_layer", "d_model", "n_head", "block_size", "vocab_size", "mlp_ratio"):
            check_int(self, k, lo=1)
        check_int(self, "mup_base_width", lo=1, optional=True)
        if self.d_model % self.n_head:
            raise ValueError(f"GPTConfig.d_model={self.d_model} must be divisible by n_head={self.n_head}")
        check_choice(self, "norm", NORMS)
        check_choice(self, "qk_norm", QK_NORMS)
        check_choice(self, "activation", ACTIVATIONS)
        check_choice(self, "init", ("gpt2", "xavier"))
        if not isinstance(self.placement, (str, list, tuple)):
            raise ValueError(f"GPTConfig.placement must be a placement name or a list of one per block, "
                             f"got {self.placement!r} ({type(self.placement).__name__})")
        for p in self.placements():
            check_choice(self, "placement", PLACEMENTS, value=p)
        check_float(self, "norm_eps", lo=0, optional=True)
        check_float(self, "dyt_alpha0")
        check_float(self, "dropout", lo=0, hi=1, hi_open=True)
        check_float(self, "init_std", lo=0, lo_open=True)
        check_float(self, "init_scale", lo=0, lo_open=True)
        check_float(self, "z_loss", lo=0)
        for k in ("bias", "tie_weights", "embed_scale"):
            check_bool(self, k)

    def to_dict(self) -> dict:
        return asdict(self)


#: MLP nonlinearity name -> function
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"gelu": F.gelu, "relu": F.relu}


def _eps(cfg: GPTConfig, default: float | None) -> dict:
    return {"eps": default if cfg.norm_eps is None else cfg.norm_eps}


#: norm name -> builder(cfg, dim); "batchnorm" is channel-last and takes the padding mask
NORMS: dict[str, Callable[[GPTConfig, int], nn.Module]] = {
    "layernorm": lambda cfg, d: LayerNorm(d, **_eps(cfg, 1e-5)),
    "rmsnorm": lambda cfg, d: RMSNorm(d, **_eps(cfg, None)),
    "batchnorm": lambda cfg, d: BatchNorm(d, channel_dim=-1, **_eps(cfg, 1e-5)),
    "none": lambda cfg, d: nn.Identity(),
    "dyt": lambda cfg, d: DyT(d, alpha0=cfg.dyt_alpha0),
    "scalenorm": lambda cfg, d: ScaleNorm(d, **_eps(cfg, 1e-5)),
}

#: qk-norm name -> builder(cfg, head_dim) of the module applied to q and k per head (None: no module)
QK_NORMS: dict[str, Callable[[GPTConfig, int], nn.Module | None]] = {
    "none": lambda cfg, hd: None,
    "layernorm": lambda cfg, hd: LayerNorm(hd, **_eps(cfg, 1e-5)),
    "rmsnorm": lambda cfg, hd: RMSNorm(hd, **_eps(cfg, None)),
    "l2": lambda cfg, hd: None,  # F.normalize + a learned logit scale, in the attention itself
}


def apply_norm(norm: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
    """Call a norm; batch-coupled ones (BatchNorm) also get the padding mask."""
    return norm(x, mask=mask) if isinstance(norm, BatchNorm) else norm(x)


@dataclass
class Context:
    """Per-forward information every block needs: padding mask and the attention mask."""

    mask: Tensor | None  # (B, T) bool, True = real token
    attn_mask: Tensor | None  # (B, 1, T, T) bool, True = may attend; None = plain causal


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.d_model // cfg.n_head
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.qk_kind = cfg.qk_norm
        self.q_norm = QK_NORMS[cfg.qk_norm](cfg, self.head_dim)
        self.k_norm = QK_NORMS[cfg.qk_norm](cfg, self.head_dim)
        if cfg.qk_norm == "l2":  # Henry et al. 2020: learned scale, initialised at log2(T^2 - T)
            self.qk_scale = nn.Parameter(torch.tensor(math.log2(max(cfg.block_size**2 - cfg.block_size, 2))))
        else:
            self.register_parameter("qk_scale", None)
        self.scale = 1 / self.head_dim if cfg.mup_base_width else 1 / math.sqrt(self.head_dim)
        self.track_logits = False  # instruments set this to record the largest attention logit
        self.last_max_logit: Tensor | None = None

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        scale = self.scale
        if self.qk_kind == "l2":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            scale = self.qk_scale
        if self.track_logits or not isinstance(scale, float):
            att = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, T)
            allowed = ctx.attn_mask if ctx.attn_mask is not None else \
                torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            if self.track_logits:
                self.last_max_logit = att.detach().masked_fill(~allowed, float("-inf")).amax()
            att = F.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
            att = F.dropout(att, self.dropout, self.training)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx.attn_mask, scale=scale,
                                               dropout_p=self.dropout if self.training else 0.0,
                                               is_causal=ctx.attn_mask is None)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.act = ACTIVATIONS[cfg.activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.c_proj(self.act(self.c_fc(x))))


# ------------------------------------------------------------------ placements
# Each placement: the norms a block needs, whether the model ends with a final
# norm before the head, and the block's forward, which reads like the diagram.

def _post(b: Block, x: Tensor, ctx: Context) -> Tensor:
    x = b.norm("ln_1", x + b.attn(x, ctx), ctx)
    return b.norm("ln_2", x + b.mlp(x), ctx)


def _pre(b: Block, x: Tensor, ctx: Context) -> Tensor:
    h, x = b.add_norm("ln_2", x, b.attn(b.norm("ln_1", x, ctx), ctx), ctx)  # x += attn(ln_1(x)); h = ln_2(x)
    return x + b.mlp(h)


def _sandwich(b: Block, x: Tensor, ctx: Context) -> Tensor:
    h, x = b.add_norm("ln_2", x, b.norm("ln_1_out", b.attn(b.norm("ln_1", x, ctx), ctx), ctx), ctx)
    return x + b.norm("ln_2_out", b.mlp(h), ctx)


def _parallel(b: Block, x: Tensor, ctx: Context) -> Tensor:
    h = b.norm("ln_1", x, ctx)
    return x + b.attn(h, ctx) + b.mlp(h)


def _deepnorm(b: Block, x: Tensor, ctx: Context) -> Tensor:
    x = b.norm("ln_1", b.alpha * x + b.attn(x, ctx), ctx)
    return b.norm("ln_2", b.alpha * x + b.mlp(x), ctx)


@dataclass(frozen=True)
class Placement:
    forward: Callable[[Block, Tensor, Context], Tensor]
    norms: tuple[str, ...]
    final_norm: bool


PLACEMENTS: dict[str, Placement] = {
    "post": Placement(_post, ("ln_1", "ln_2"), final_norm=False),
    "pre": Placement(_pre, ("ln_1", "ln_2"), final_norm=True),
    "sandwich": Placement(_sandwich, ("ln_1", "ln_1_out", "ln_2", "ln_2_out"), final_norm=True),
    "parallel": Placement(_parallel, ("ln_1",), final_norm=True),
    "deepnorm": Placement(_deepnorm, ("ln_1", "ln_2"), final_norm=False),
}


def deepnorm_constants(n_layer: int) -> tuple[float, float]:
    """DeepNorm's (alpha, beta) for a decoder-only model of N blocks (Wang et al. 2022): ((2N)^1/4, (8N)^-1/4)."""
    return (2 * n_layer) ** 0.25, (8 * n_layer) ** -0.25


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, placement: str):
        super().__init__()
        self.placement = placement
        spec = PLACEMENTS[placement]
        self.norms = nn.ModuleDict({name: NORMS[cfg.norm](cfg, cfg.d_model) for name in spec.norms})
        self.attn = CausalSelfAttention(cfg)
        self.mlp = MLP(cfg)
        self.alpha = deepnorm_constants(cfg.n_layer)[0] if placement == "deepnorm" else 1.0

    def norm(self, name: str, x: Tensor, ctx: Context) -> Tensor:
        return apply_norm(self.norms[name], x, ctx.mask)

    def add_norm(self, name: str, x: Tensor, branch: Tensor, ctx: Context) -> tuple[Tensor, Tensor]:
        """``(norm(x + branch), x + branch)``: the residual add and the next norm in one pass where possible."""
        norm = self.norms[name]
        if isinstance(norm, BatchNorm):  # needs the padding mask; nothing to fuse
            s = x + branch
            return apply_norm(norm, s, ctx.mask), s
        return add_norm(x, branch, norm)

    def forward(self, x: Tensor, ctx: Context) -> Tensor:
        return PLACEMENTS[self.placement].forward(self, x, ctx)

    def extra_repr(self) -> str:
        return f"placement={self.placement!r}" + (f", alpha={self.alpha:.3f}" if self.alpha != 1.0 else "")


class GPT(nn.Module):
    """A causal character/token language model; see the module docstring and :class:`GPTConfig`.

    ``forward(idx, targets=None, mask=None, doc_ids=None)``:

    - idx: (B, T) long token ids, T <= block_size.
    - targets: (B, T) long next-token ids, -1 = not scored.
    - mask: (B, T) bool, True = real token (padding is kept out of BatchNorm
      statistics and of attention).
    - doc_ids: (B, T) long document index per token for packed rows:
      attention stays inside a document and positions restart at 0 at
      each document, so a document is treated as if it were alone.

    Returns logits (B, T, vocab_size), or ``(logits, loss)`` with targets.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        placements = cfg.placements()
        self.blocks = nn.ModuleList(Block(cfg, p) for p in placements)
        self.ln_f = NORMS[cfg.norm](cfg, cfg.d_model) if PLACEMENTS[placements[-1]].final_norm else None
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.width_mult = cfg.d_model / cfg.mup_base_width if cfg.mup_base_width else 1.0
        self.reset_parameters()

    # ---------------------------------------------------------------- init
    def reset_parameters(self) -> None:
        cfg = self.cfg
        std = cfg.init_std
        hidden_std = std * cfg.init_scale / math.sqrt(self.width_mult)
        for name, p in self.named_parameters():
            if p.ndim < 2:
                continue
            if name.startswith(("wte", "wpe", "lm_head")):
                nn.init.normal_(p, 0.0, 1 / math.sqrt(cfg.d_model) if cfg.embed_scale else std)
            elif cfg.init == "xavier":
                nn.init.xavier_normal_(p, gain=cfg.init_scale / math.sqrt(self.width_mult))
            elif name.endswith("c_proj.weight"):  # residual-branch outputs, GPT-2's 1/sqrt(2 n_layer)
                nn.init.normal_(p, 0.0, hidden_std / math.sqrt(2 * cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, hidden_std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if m is not self and hasattr(m, "reset_parameters") and not isinstance(m, (nn.Linear, nn.Embedding)):
                m.reset_parameters()
        for block in self.blocks:
            if block.placement == "deepnorm":  # DeepNorm init: xavier with gain beta on v, out-proj and MLP
                beta = deepnorm_constants(cfg.n_layer)[1]
                d = cfg.d_model
                with torch.no_grad():
                    nn.init.xavier_normal_(block.attn.c_attn.weight[: 2 * d], gain=1.0)  # q, k
                    nn.init.xavier_normal_(block.attn.c_attn.weight[2 * d:], gain=beta)  # v
                    for lin in (block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                        nn.init.xavier_normal_(lin.weight, gain=beta)

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer groups: decay only matrices; under muP, hidden matrices get lr / width_mult."""
        hidden, embed, other = [], [], []
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if p.ndim >= 2 and name.startswith(("wte", "wpe", "lm_head")):
                embed.append(p)
            elif p.ndim >= 2:
                hidden.append(p)
            else:
                other.append(p)
        groups = [{"params": hidden, "lr": lr / self.width_mult, "weight_decay": weight_decay, "name": "hidden"},
                  {"params": embed, "lr": lr, "weight_decay": weight_decay, "name": "embedding"},
                  {"params": other, "lr": lr, "weight_decay": 0.0, "name": "vectors"}]
        return [g for g in groups if g["params"]]

    # -------------------------------------------------------------- access
    def norm_layers(self) -> dict[str, nn.Module]:
        """Every normalization module by its qualified name (``blocks.0.norms.ln_1``, ``ln_f``, q/k norms)."""
        kinds = (LayerNorm, RMSNorm, BatchNorm, DyT, ScaleNorm)
        return {n: m for n, m in self.named_modules() if isinstance(m, kinds)}

    def _context(self, idx: Tensor, mask: Tensor | None, doc_ids: Tensor | None) -> Context:
        B, T = idx.shape
        if mask is None and doc_ids is None:
            return Context(None, None)
        allowed = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril().expand(B, 1, T, T)
        if doc_ids is not None:
            if doc_ids.shape != idx.shape:
                raise ValueError(f"doc_ids must have idx's shape {tuple(idx.shape)}, got {tuple(doc_ids.shape)}")
            allowed = allowed & (doc_ids.unsqueeze(-1) == doc_ids.unsqueeze(-2)).unsqueeze(1)
        if mask is not None:
            if mask.shape != idx.shape or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of idx's shape {tuple(idx.shape)}, "
                                 f"got {mask.dtype} of shape {tuple(mask.shape)}")
            eye = torch.eye(T, dtype=torch.bool, device=idx.device)
            allowed = allowed & (mask[:, None, None, :] | eye)  # padding is never attended to (but itself)
        return Context(mask, allowed)

    def forward(self, idx: Tensor, targets: Tensor | None = None, mask: Tensor | None = None,
                doc_ids: Tensor | None = None):
        if idx.ndim != 2 or idx.dtype != torch.long:
            raise ValueError(f"idx must be a (B, T) long tensor, got {idx.dtype} of shape {tuple(idx.shape)}")
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        if targets is not None and (targets.shape != idx.shape or targets.dtype != torch.long):
            raise ValueError(f"targets must be a long tensor of idx's shape {tuple(idx.shape)} (-1 = ignore), "
                             f"got {targets.dtype} of shape {tuple(targets.shape)}")
        if _host_checks(idx) and idx.numel():  # a host sync elsewhere (CUDA, compile): torch's own error there
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.cfg.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} is outside the vocabulary: ids must be in [0, vocab_size="
                                 f"{self.cfg.vocab_size}); raise vocab_size or check the tokenizer")
        ctx = self._context(idx, mask, doc_ids)
        pos = torch.arange(T, device=idx.device)
        if doc_ids is not None:  # positions restart at each packed document: (B, T)
            start = doc_ids != torch.cat([doc_ids[:, :1] - 1, doc_ids[:, :-1]], dim=1)
            pos = pos - torch.where(start, pos, torch.zeros_like(pos)).cummax(dim=1).values
        x = self.wte(idx) + self.wpe(pos)  # (B, T, D)
        if self.cfg.embed_scale:
            x = x * math.sqrt(self.cfg.d_model / 2)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, ctx)
        if self.ln_f is not None:
            x = apply_norm(self.ln_f, x, ctx.mask)
        logits = self.lm_head(x)  # (B, T, V)
        if self.width_mult != 1.0:  # muP's output multiplier (dividing by 1 would be a pass over the logits)
            logits = logits / self.width_mult
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if self.cfg.z_loss:
            keep = targets.reshape(-1) != -1
            z = torch.logsumexp(logits.float().view(-1, logits.size(-1))[keep], dim=-1)
            loss = loss + self.cfg.z_loss * z.square().mean()
        return logits, loss

"""The GPT: every norm x placement x qk-norm runs and is causal; placements match hand-written blocks."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import normlab as nl
from normlab.models import GPT, NORMS, PLACEMENTS, QK_NORMS, GPTConfig, deepnorm_constants

V, T = 23, 12


def _cfg(**kw) -> GPTConfig:
    base = dict(n_layer=2, d_model=16, n_head=2, block_size=T, vocab_size=V)
    return GPTConfig(**{**base, **kw})


COMBOS = list(itertools.product(NORMS, PLACEMENTS, QK_NORMS))


@pytest.mark.parametrize("norm,placement,qk", COMBOS, ids=["-".join(c) for c in COMBOS])
def test_shapes_loss_and_causality(norm, placement, qk):
    torch.manual_seed(0)
    model = GPT(_cfg(norm=norm, placement=placement, qk_norm=qk)).double()
    idx = torch.randint(0, V, (3, T))
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (3, T, V) and torch.isfinite(loss)
    loss.backward()
    # causality: changing tokens after t must not change the output at t (eval mode: BatchNorm
    # uses running statistics; see test_batchnorm_in_training_leaks_the_future)
    model.eval()
    t = 5
    other = idx.clone()
    other[:, t + 1 :] = torch.randint(0, V, (3, T - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(other)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=1e-10, atol=1e-10)
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 0


def test_batchnorm_in_training_leaks_the_future():
    """Batch statistics pool every position, so in training a token's output depends on later tokens."""
    torch.manual_seed(0)
    model = GPT(_cfg(norm="batchnorm")).double().train()
    idx = torch.randint(0, V, (3, T))
    other = idx.clone()
    other[:, 8:] = (other[:, 8:] + 1) % V
    assert (model(idx)[:, :8] - model(other)[:, :8]).abs().max() > 1e-6
    ln = GPT(_cfg(norm="layernorm")).double().train()
    torch.testing.assert_close(ln(idx)[:, :8], ln(other)[:, :8])


# ---------------------------------------------------------------- references
def _ref_attn(attn, x):
    """Causal multi-head attention written out from the module's weights."""
    B, Tn, C = x.shape
    H = attn.n_head
    qkv = x @ attn.c_attn.weight.T + attn.c_attn.bias
    q, k, v = (t.reshape(B, Tn, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))
    scores = q @ k.transpose(-2, -1) / math.sqrt(C // H)
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    w = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    y = (w @ v).transpose(1, 2).reshape(B, Tn, C)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias


def _ref_mlp(mlp, x):
    h = F.gelu(x @ mlp.c_fc.weight.T + mlp.c_fc.bias)
    return h @ mlp.c_proj.weight.T + mlp.c_proj.bias


def _ref_ln(norm, x):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


REFERENCES = {
    "post": lambda b, x: (lambda h: _ref_ln(b.norms["ln_2"], h + _ref_mlp(b.mlp, h)))(
        _ref_ln(b.norms["ln_1"], x + _ref_attn(b.attn, x))),
    "pre": lambda b, x: (lambda h: h + _ref_mlp(b.mlp, _ref_ln(b.norms["ln_2"], h)))(
        x + _ref_attn(b.attn, _ref_ln(b.norms["ln_1"], x))),
    "sandwich": lambda b, x: (lambda h: h + _ref_ln(b.norms["ln_2_out"], _ref_mlp(b.mlp, _ref_ln(b.norms["ln_2"], h))))(
        x + _ref_ln(b.norms["ln_1_out"], _ref_attn(b.attn, _ref_ln(b.norms["ln_1"], x)))),
    "parallel": lambda b, x: x + _ref_attn(b.attn, _ref_ln(b.norms["ln_1"], x)) + _ref_mlp(
        b.mlp, _ref_ln(b.norms["ln_1"], x)),
    "deepnorm": lambda b, x: (lambda a: (lambda h: _ref_ln(b.norms["ln_2"], a * h + _ref_mlp(b.mlp, h)))(
        _ref_ln(b.norms["ln_1"], a * x + _ref_attn(b.attn, x))))((2 * 2) ** 0.25),
}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_each_placement_matches_a_hand_written_block(placement):
    torch.manual_seed(1)
    model = GPT(_cfg(placement=placement)).double()
    with torch.no_grad():
        for n in model.norm_layers().values():  # non-trivial gamma/beta
            n.weight.uniform_(0.5, 1.5)
            n.bias.uniform_(-0.3, 0.3)
    block = model.blocks[0]
    x = torch.randn(2, T, 16, dtype=torch.float64, requires_grad=True)
    ctx = model._context(torch.zeros(2, T, dtype=torch.long), None, None)
    y = block(x, ctx)
    x2 = x.detach().clone().requires_grad_(True)
    ref = REFERENCES[placement](block, x2)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-10, atol=1e-10)


def test_final_norm_only_for_pre_like_placements():
    assert GPT(_cfg(placement="pre")).ln_f is not None
    assert GPT(_cfg(placement="post")).ln_f is None
    assert GPT(_cfg(placement="deepnorm")).ln_f is None
    assert GPT(_cfg(placement=["post", "pre"])).ln_f is not None


def test_mixed_placements_per_block():
    model = GPT(_cfg(n_layer=3, placement=["pre", "post", "sandwich"]))
    assert [b.placement for b in model.blocks] == ["pre", "post", "sandwich"]
    with pytest.raises(ValueError, match="placement lists 2 blocks, n_layer is 3"):
        GPT(_cfg(n_layer=3, placement=["pre", "post"]))


def test_deepnorm_constants_and_init():
    alpha, beta = deepnorm_constants(6)
    assert alpha == pytest.approx(12**0.25) and beta == pytest.approx(48**-0.25)
    torch.manual_seed(0)
    model = GPT(_cfg(n_layer=6, d_model=64, n_head=4, placement="deepnorm"))
    assert model.blocks[0].alpha == pytest.approx(alpha)
    d = 64
    w_v = model.blocks[0].attn.c_attn.weight[2 * d :]  # (d, d): xavier std sqrt(2 / (d + d)), times beta
    w_q = model.blocks[0].attn.c_attn.weight[:d]
    assert w_v.std().item() == pytest.approx(beta * math.sqrt(2 / (d + d)), rel=0.15)
    assert w_q.std().item() > 2 * w_v.std().item()  # q and k keep gain 1


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown norm 'groupnorm'; choose one of layernorm, rmsnorm"):
        GPT(_cfg(norm="groupnorm"))
    with pytest.raises(ValueError, match="unknown placement 'middle'"):
        GPT(_cfg(placement="middle"))
    with pytest.raises(ValueError, match="unknown qk_norm"):
        GPT(_cfg(qk_norm="batchnorm"))
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPT(_cfg(d_model=15))
    with pytest.raises(ValueError, match="exceeds block_size"):
        GPT(_cfg())(torch.zeros(1, T + 1, dtype=torch.long))


def test_padding_is_kept_out_of_batchnorm_statistics_inside_the_model():
    torch.manual_seed(0)
    model = GPT(_cfg(norm="batchnorm")).double().train()
    idx = torch.randint(1, V, (3, T))
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[0, 7:] = False
    mask[2, 4:] = False
    garbage = idx.clone()
    garbage[~mask] = torch.randint(0, V, (int((~mask).sum()),))
    twin = copy.deepcopy(model)
    a = model(idx, mask=mask)
    b = twin(garbage, mask=mask)
    torch.testing.assert_close(a[mask], b[mask], rtol=1e-10, atol=1e-10)
    for (name, m), t in zip(model.norm_layers().items(), twin.norm_layers().values()):  # same real tokens
        torch.testing.assert_close(m.running_mean, t.running_mean, rtol=1e-10, atol=1e-10, msg=name)
        torch.testing.assert_close(m.running_var, t.running_var, rtol=1e-10, atol=1e-10, msg=name)
    unmasked = model(garbage)
    assert (unmasked[mask] - a[mask]).abs().max() > 1e-4  # without the mask, padding changes real outputs


def test_packed_document_equals_document_alone_for_layernorm():
    torch.manual_seed(0)
    model = GPT(_cfg(norm="layernorm")).double().eval()
    doc_a, doc_b = torch.randint(0, V, (1, 5)), torch.randint(0, V, (1, 7))
    packed = torch.cat([doc_a, doc_b], dim=1)
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    out = model(packed, doc_ids=doc_ids)
    torch.testing.assert_close(out[:, 5:], model(doc_b), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out[:, :5], model(doc_a), rtol=1e-10, atol=1e-10)


def test_tied_weights_zloss_and_norm_access():
    model = GPT(_cfg(z_loss=1e-2))
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(_cfg(tie_weights=False))
    assert untied.lm_head.weight is not untied.wte.weight
    idx = torch.randint(0, V, (2, T))
    _, with_z = model(idx, targets=idx)
    model.cfg.z_loss = 0.0
    _, without = model(idx, targets=idx)
    assert with_z > without
    names = GPT(_cfg(qk_norm="rmsnorm")).norm_layers()
    assert "blocks.0.norms.ln_1" in names and "ln_f" in names and "blocks.1.attn.q_norm" in names
    assert all(isinstance(m, nl.RMSNorm) for n, m in names.items() if "q_norm" in n)


def test_mup_scales_groups_and_logits():
    model = GPT(_cfg(d_model=32, mup_base_width=16))
    assert model.width_mult == 2.0
    groups = {g["name"]: g["lr"] for g in model.param_groups(1e-3)}
    assert groups["hidden"] == pytest.approx(5e-4) and groups["embedding"] == pytest.approx(1e-3)
    assert model.blocks[0].attn.scale == pytest.approx(1 / 16)


def test_init_scale_multiplies_init():
    torch.manual_seed(0)
    small = GPT(_cfg(d_model=64, n_head=4)).blocks[0].mlp.c_fc.weight.std().item()
    torch.manual_seed(0)
    big_model = GPT(_cfg(d_model=64, n_head=4, init_scale=4.0))
    big = big_model.blocks[0].mlp.c_fc.weight.std().item()
    assert big == pytest.approx(4 * small, rel=1e-6)
    assert big_model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)  # embeddings and head keep theirs
    torch.manual_seed(0)
    xav = GPT(_cfg(d_model=64, n_head=4, init="xavier", init_scale=4.0)).blocks[0].mlp.c_fc.weight
    assert xav.std().item() == pytest.approx(4 * math.sqrt(2 / (64 + 256)), rel=0.05)


def test_embed_scale_gives_unit_variance_inputs_and_relu_is_used():
    torch.manual_seed(0)
    model = GPT(_cfg(d_model=128, n_head=4, embed_scale=True, activation="relu"))
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model(torch.randint(0, V, (8, T)))
    assert seen["x"].var().item() == pytest.approx(1.0, rel=0.15)
    assert model.blocks[0].mlp.act is torch.nn.functional.relu
    with pytest.raises(ValueError, match="unknown activation 'tanh'; choose one of gelu, relu"):
        GPT(_cfg(activation="tanh"))


def test_convert_is_a_no_op_on_an_all_normlab_model():
    model = GPT(_cfg())
    idx = torch.randint(0, V, (2, T))
    before = model(idx)
    torch.testing.assert_close(nl.convert(model)(idx), before)

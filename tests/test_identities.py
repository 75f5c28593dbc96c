"""Identities the maths demands between the family's members, and mask/padding/packing semantics."""

from __future__ import annotations

import torch

import normlab as nl

F64 = torch.float64


def test_groupnorm_one_group_is_cnn_layernorm_with_per_channel_affine():
    x = torch.randn(3, 6, 4, 5, dtype=F64)
    gn = nl.GroupNorm(1, 6, dtype=F64)
    ln = nl.LayerNorm((6, 4, 5), dtype=F64)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2)
        gn.bias.uniform_(-1, 1)
        ln.weight.copy_(gn.weight.view(6, 1, 1).expand(6, 4, 5))
        ln.bias.copy_(gn.bias.view(6, 1, 1).expand(6, 4, 5))
    torch.testing.assert_close(gn(x), ln(x))


def test_groupnorm_c_groups_is_instancenorm():
    x = torch.randn(3, 6, 4, 5, dtype=F64)
    gn = nl.GroupNorm(6, 6, dtype=F64)
    inorm = nl.InstanceNorm(6, affine=True, dtype=F64)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 2)
        inorm.weight.copy_(gn.weight)
        gn.bias.uniform_(-1, 1)
        inorm.bias.copy_(gn.bias)
    torch.testing.assert_close(gn(x), inorm(x))


def test_rmsnorm_equals_layernorm_on_zero_mean_rows():
    x = torch.randn(4, 7, 32, dtype=F64)
    x = x - x.mean(-1, keepdim=True)
    torch.testing.assert_close(nl.RMSNorm(32, eps=1e-5, dtype=F64)(x),
                               nl.LayerNorm(32, bias=False, dtype=F64)(x))


def test_cnn_layernorm_and_transformer_layernorm_differ():
    x = torch.randn(2, 4, 3, 3, dtype=F64)
    over_chw = nl.LayerNorm((4, 3, 3), dtype=F64)(x)
    over_c = nl.LayerNorm2d(4, eps=1e-5, dtype=F64)(x)
    assert (over_chw - over_c).abs().max() > 0.1


def test_layernorm_is_not_batchnorm_at_batch_size_one():
    """LN pools a sample's features; BN (eval off, batch of 1 sequence) pools positions per channel."""
    x = torch.randn(1, 10, 8, dtype=F64)  # one sequence of 10 tokens, 8 features
    ln = nl.LayerNorm(8, dtype=F64)(x)
    bn = nl.BatchNorm(8, channel_dim=-1, dtype=F64)(x)
    assert (ln - bn).abs().max() > 0.1
    torch.testing.assert_close(ln.mean(-1), torch.zeros(1, 10, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(bn.mean((0, 1)), torch.zeros(8, dtype=F64), atol=1e-12, rtol=0)


def _padded_batch(lengths, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(n, d, generator=g, dtype=F64) * 2 + 1 for n in lengths]
    T = max(lengths)
    x = torch.zeros(len(lengths), T, d, dtype=F64)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return seqs, x, mask


def test_masked_batchnorm_on_padded_batch_equals_batchnorm_on_real_tokens():
    seqs, x, mask = _padded_batch([7, 3, 5, 1])
    real = torch.cat(seqs)  # (sum of lengths, D): the unpadded tokens
    masked = nl.BatchNorm(6, channel_dim=-1, dtype=F64)
    plain = nl.BatchNorm(6, channel_dim=-1, dtype=F64)
    xr = x.clone().requires_grad_(True)
    rr = real.clone().requires_grad_(True)
    for _ in range(3):
        y = masked(xr, mask=mask)
        y_ref = plain(rr)
    torch.testing.assert_close(y[mask], y_ref)
    torch.testing.assert_close(masked.running_mean, plain.running_mean)
    torch.testing.assert_close(masked.running_var, plain.running_var)
    g = torch.randn_like(y_ref)
    (y[mask] * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(xr.grad[mask], rr.grad)
    assert (xr.grad[~mask] == 0).all()  # padding does not feed the statistics
    assert torch.isfinite(y).all()


def test_unmasked_batchnorm_is_corrupted_by_padding():
    seqs, x, mask = _padded_batch([7, 3, 5, 1])
    real = torch.cat(seqs)
    y = nl.BatchNorm(6, channel_dim=-1, dtype=F64)(x)
    y_ref = nl.BatchNorm(6, channel_dim=-1, dtype=F64)(real)
    assert (y[mask] - y_ref).abs().max() > 0.05


def test_masked_groupnorm_and_instancenorm_equal_unpadded():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 9, generator=g, dtype=F64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, 4:] = False
    for layer in (nl.GroupNorm(2, 4, dtype=F64), nl.InstanceNorm(4, affine=True, dtype=F64)):
        y = layer(x, mask=mask)
        for i, n in enumerate((6, 4)):
            torch.testing.assert_close(y[i, :, :n], layer(x[i : i + 1, :, :n])[0])
        assert torch.isfinite(y).all()


def test_layernorm_token_independent_of_batch_padding_and_packing():
    ln = nl.LayerNorm(6, dtype=F64)
    seqs, x, mask = _padded_batch([5, 2, 4])
    alone = ln(seqs[1].unsqueeze(0))[0]  # the token sequence on its own
    padded = ln(x)[1, :2]
    packed = ln(torch.cat(seqs).unsqueeze(0))[0, 5:7]  # packed after the first document
    torch.testing.assert_close(padded, alone, rtol=0, atol=0)
    torch.testing.assert_close(packed, alone, rtol=0, atol=0)


def test_batchnorm_token_depends_on_what_it_is_packed_with():
    seqs, _, _ = _padded_batch([5, 2, 4])
    bn = nl.BatchNorm(6, channel_dim=-1, dtype=F64)
    packed = bn(torch.cat(seqs).unsqueeze(0))[0, 5:7]
    with_other = bn(torch.cat([seqs[1], seqs[2] * 3]).unsqueeze(0))[0, :2]
    assert (packed - with_other).abs().max() > 0.05


def test_train_and_eval_agree_for_layernorm_not_for_batchnorm():
    x = torch.randn(8, 6, dtype=F64)
    ln = nl.LayerNorm(6, dtype=F64)
    torch.testing.assert_close(ln.train()(x), ln.eval()(x), rtol=0, atol=0)
    bn = nl.BatchNorm(6, dtype=F64)
    assert (bn.train()(x) - bn.eval()(x)).abs().max() > 0.1

"""Offline, deterministic data: the text corpus, the sequence batchers, digits and MNIST-1D."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from normlab import data


def test_network_is_blocked_in_tests():
    with pytest.raises(RuntimeError, match="tried to reach the network"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)


def test_default_corpus_is_cpython_docs_and_deterministic():
    a, b = data.text(), data.text()
    assert a.source == "pydoc_data.topics" and a.vocab_size > 50 and len(a.train) > 400_000
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val) and a.vocab == b.vocab
    assert len(a.val) == pytest.approx(0.1 * (len(a.train) + len(a.val)), rel=0.01)
    assert a.decode(a.encode("Return the value")) == "Return the value"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        a.encode("\u2603")
    assert a.describe()["vocab"] == "".join(a.vocab)


def test_user_text_file_and_bad_files(tmp_path):
    p = tmp_path / "tiny.txt"
    p.write_text("to be or not to be, that is the question. " * 10, encoding="utf-8")
    c = data.text(p)
    assert c.source == str(p) and c.vocab_size == len(set(p.read_text()))
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        data.text(bad)
    with pytest.raises(FileNotFoundError, match="text file not found"):
        data.text(tmp_path / "missing.txt")
    (tmp_path / "short.txt").write_text("abc")
    with pytest.raises(ValueError, match="holds 3 characters"):
        data.text(tmp_path / "short.txt")


@pytest.fixture(scope="module")
def tokens():
    return data.text().train


def test_random_windows_are_shifted_targets_and_seeded(tokens):
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = data.random_windows(tokens, 4, 16, g1), data.random_windows(tokens, 4, 16, g2)
    assert torch.equal(a.x, b.x) and a.x.shape == (4, 16)
    assert torch.equal(a.x[:, 1:], a.y[:, :-1])


@pytest.mark.parametrize("dist", ["uniform", "exponential", "fixed"])
def test_padded_batch_masks_padding(tokens, dist):
    b = data.padded_batch(tokens, 64, 32, torch.Generator().manual_seed(0), dist=dist, min_len=3)
    lengths = b.mask.sum(1)
    assert lengths.min() >= 3 and lengths.max() <= 32
    assert (b.x[~b.mask] == data.PAD).all() and (b.y[~b.mask] == data.IGNORE).all()
    assert (b.y[b.mask] >= 0).all()
    for i in range(4):  # right padding: a prefix of real tokens
        n = int(lengths[i])
        assert b.mask[i, :n].all() and not b.mask[i, n:].any()
    if dist == "fixed":
        assert b.mask.all()
    if dist == "exponential":
        assert lengths.float().median() < 16  # mostly short


def test_packed_batch_documents(tokens):
    b = data.packed_batch(tokens, 8, 32, torch.Generator().manual_seed(0), min_len=4)
    assert b.mask is None and b.x.shape == b.doc_ids.shape == (8, 32)
    assert (b.doc_ids.diff(dim=1) >= 0).all() and (b.doc_ids.diff(dim=1) <= 1).all()
    assert b.doc_ids.max() >= 1  # several documents per row
    boundary = torch.cat([b.doc_ids.diff(dim=1) != 0, torch.ones(8, 1, dtype=torch.bool)], dim=1)
    assert (b.y[boundary] == data.IGNORE).all() and (b.y[~boundary] >= 0).all()


def test_batcher_errors(tokens):
    with pytest.raises(ValueError, match="unknown length distribution 'zipf'"):
        data.padded_batch(tokens, 2, 8, torch.Generator(), dist="zipf")
    with pytest.raises(ValueError, match="need more than block_size"):
        data.random_windows(tokens[:5], 2, 8, torch.Generator())
    with pytest.raises(ValueError, match="min_len must be in"):
        data.draw_lengths(3, 8, torch.Generator(), min_len=9)


def test_digits_split_and_train_only_standardization():
    d = data.digits()
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert len(d.y_train) + len(d.y_test) == 1797
    assert abs(d.x_train.mean().item()) < 1e-5 and d.x_train.std().item() == pytest.approx(1, abs=1e-3)
    assert abs(d.x_test.mean().item()) > 1e-5  # test uses train's statistics, not its own
    assert torch.equal(d.x_test, data.digits().x_test)
    assert not torch.equal(d.y_test, data.digits(seed=1).y_test)


def test_mnist1d_offline_cached_and_shiftable(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path))
    d = data.mnist1d(num_samples=600)
    assert d.x_train.shape == (480, 1, 40) and d.x_test.shape == (120, 1, 40)
    assert sorted(set(d.y_train.tolist())) == list(range(10))
    assert abs(d.x_train.mean().item()) < 1e-5
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    again = data.mnist1d(num_samples=600)  # loaded from the cache
    assert torch.equal(again.x_train, d.x_train)
    state = np.random.get_state()[1].copy()
    shifted = data.mnist1d(num_samples=600, iid_noise_scale=0.2, standardize_with=(d.mean, d.std))
    assert np.array_equal(np.random.get_state()[1], state)  # the generator leaves numpy's global RNG alone
    assert shifted.mean == d.mean and not torch.equal(shifted.x_train, d.x_train)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 2
    with pytest.raises(ValueError, match="unknown MNIST-1D settings \\['noise'\\]"):
        data.mnist1d(noise=1)

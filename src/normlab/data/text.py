"""A character-level text corpus that needs no network.

Default: the English documentation text that ships inside CPython
(``pydoc_data.topics``, the help text of ``help('topics')``; about 0.46 M
characters, ~100 distinct characters).  Or any UTF-8 file the user passes
(e.g. tinyshakespeare).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TextCorpus", "text", "default_text"]


def default_text() -> str:
    """CPython's bundled documentation topics, concatenated in a fixed (sorted-key) order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


@dataclass
class TextCorpus:
    """A character corpus split into train and validation token ids.

    Attributes:
        train, val: 1-D ``torch.long`` tensors of character ids.
        vocab: the characters, sorted; id ``i`` is ``vocab[i]``.
        source: where the text came from (a path, or ``"pydoc_data.topics"``).
    """

    train: Tensor
    val: Tensor
    vocab: list[str]
    source: str

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, s: str) -> Tensor:
        index = {c: i for i, c in enumerate(self.vocab)}
        missing = sorted({c for c in s if c not in index})
        if missing:
            raise ValueError(f"characters not in the vocabulary: {missing[:10]!r}")
        return torch.tensor([index[c] for c in s], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def describe(self) -> dict:
        """What a run record keeps about the data (the vocabulary included, so samples can be decoded)."""
        return {"source": self.source, "train_tokens": len(self.train), "val_tokens": len(self.val),
                "vocab": "".join(self.vocab)}


def text(path: str | os.PathLike | None = None, *, val_fraction: float = 0.1) -> TextCorpus:
    """Load a character corpus: CPython's documentation text by default, or a UTF-8 file.

    The split is deterministic: the last ``val_fraction`` of the text is
    validation, the rest training.

    Example::

        >>> from normlab.data import text
        >>> corpus = text()
        >>> corpus.vocab_size > 50 and len(corpus.train) > 400_000
        True
        >>> corpus.decode(corpus.encode("normalize"))
        'normalize'
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if path is None:
        s, source = default_text(), "pydoc_data.topics"
    else:
        source = os.fspath(path)
        if os.path.isdir(source):
            raise ValueError(f"{source} is a directory; expected a UTF-8 text file")
        if not os.path.isfile(source):
            raise FileNotFoundError(f"text file not found: {source}")
        try:
            with open(source, encoding="utf-8") as f:
                s = f.read()
        except UnicodeDecodeError as e:
            raise ValueError(f"{source} is not UTF-8 text (byte {e.start}: {e.reason}); "
                             "pass a UTF-8 file") from None
    if len(s) < 100:
        raise ValueError(f"{source} holds {len(s)} characters; a corpus needs at least 100")
    vocab = sorted(set(s))
    index = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([index[c] for c in s], dtype=torch.long)
    n_val = max(1, int(len(ids) * val_fraction))
    return TextCorpus(ids[:-n_val], ids[-n_val:], vocab, source)

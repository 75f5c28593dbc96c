"""Data that ships with installed packages: a character corpus, sequence batchers, digits, MNIST-1D."""

from .sequences import IGNORE, PAD, SeqBatch, draw_lengths, packed_batch, padded_batch, random_windows
from .text import TextCorpus, default_text, text
from .vision import MNIST1D_DEFAULTS, ClassificationData, cache_dir, digits, mnist1d

__all__ = ["text", "default_text", "TextCorpus", "SeqBatch", "IGNORE", "PAD", "random_windows", "padded_batch",
           "packed_batch", "draw_lengths", "digits", "mnist1d", "ClassificationData", "cache_dir",
           "MNIST1D_DEFAULTS"]

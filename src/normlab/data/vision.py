"""Small image/signal classification sets that ship with installed packages (no network).

- :func:`digits`: scikit-learn's 8x8 handwritten digits (1797 images), as (N, 1, 8, 8).
- :func:`mnist1d`: MNIST-1D (Greydanus 2020), produced by the ``mnist1d``
  package's procedural generator (never its download path), as (N, 1, 40);
  generator settings can be changed to make a shifted distribution.

Both are standardized with the mean and std of the *training* split only;
pass ``standardize_with`` to apply another split's statistics (for a
distribution-shift study, the source training set's).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .._cache import cache_dir

__all__ = ["ClassificationData", "digits", "mnist1d", "cache_dir", "MNIST1D_DEFAULTS"]


@dataclass
class ClassificationData:
    """Train/test tensors; x is float32 (N, C, *), y is long (N,); mean/std are the train statistics used."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    mean: float
    std: float
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def describe(self) -> dict:
        return {"name": self.name, "train": len(self.y_train), "test": len(self.y_test),
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "mean": self.mean, "std": self.std}


def _standardize(x_train: np.ndarray, x_test: np.ndarray, standardize_with: tuple[float, float] | None):
    mean, std = standardize_with if standardize_with is not None else (float(x_train.mean()), float(x_train.std()))
    if not std > 0:
        raise ValueError(f"cannot standardize: training std is {std}")
    return (x_train - mean) / std, (x_test - mean) / std, mean, std


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def digits(*, test_fraction: float = 0.2, seed: int = 0,
           standardize_with: tuple[float, float] | None = None) -> ClassificationData:
    """scikit-learn's 8x8 digits as (N, 1, 8, 8) float32, a seeded train/test split.

    Example::

        >>> from normlab.data import digits
        >>> d = digits()
        >>> d.x_train.shape[1:], d.num_classes
        (torch.Size([1, 8, 8]), 10)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise _missing("digits()", "scikit-learn") from e

    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr, te = _split(len(y), test_fraction, seed)
    x_tr, x_te, mean, std = _standardize(x[tr], x[te], standardize_with)
    return ClassificationData(torch.from_numpy(x_tr).float(), torch.from_numpy(y[tr]),
                              torch.from_numpy(x_te).float(), torch.from_numpy(y[te]), 10, mean, std, "digits")


def _missing(what: str, packages: str) -> ImportError:
    """The error for a data set whose package belongs to the ``suite`` extra and is not installed."""
    return ImportError(f"normlab.data.{what} needs {packages}, which is not installed: "
                       "pip install 'normlab[suite]'")


#: the generator settings of the original MNIST-1D (mnist1d.data.get_dataset_args, without its download url)
MNIST1D_DEFAULTS = {"num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60],
                    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25, "iid_noise_scale": 2e-2,
                    "shear_scale": 0.75, "shuffle_seq": False, "final_seq_length": 40, "seed": 42}


def _generate_mnist1d(settings: dict) -> dict[str, np.ndarray]:
    try:
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView
    except ImportError as e:
        raise _missing("mnist1d()", "mnist1d (and its requests and matplotlib)") from e

    state = np.random.get_state()  # the generator seeds numpy's global RNG: leave the caller's alone
    try:
        data = make_dataset(ObjectView(dict(settings)))
    finally:
        np.random.set_state(state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _save_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def mnist1d(*, num_samples: int = 5000, seed: int = 42, standardize_with: tuple[float, float] | None = None,
            cache: bool = True, **overrides) -> ClassificationData:
    """MNIST-1D signals as (N, 1, 40) float32, generated offline and cached.

    Args:
        num_samples: total examples (80% train, 20% test as the original).
        seed: the generator's seed (42 reproduces the original data set).
        standardize_with: (mean, std) to apply instead of the train split's.
        cache: keep the generated arrays under :func:`cache_dir` (keyed by
            the settings), so the next call loads them.
        **overrides: other generator settings of :data:`MNIST1D_DEFAULTS`
            (e.g. ``iid_noise_scale=0.1, scale_coeff=0.8`` for a shifted
            distribution).

    Example::

        >>> from normlab.data import mnist1d
        >>> d = mnist1d(num_samples=500, cache=False)
        >>> tuple(d.x_train.shape)
        (400, 1, 40)
    """
    unknown = set(overrides) - set(MNIST1D_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown MNIST-1D settings {sorted(unknown)}; known: {sorted(MNIST1D_DEFAULTS)}")
    settings = {**MNIST1D_DEFAULTS, **overrides, "num_samples": num_samples, "seed": seed}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"mnist1d-{key}.npz")
    arrays = None
    if cache and os.path.exists(path):
        try:
            with np.load(path) as f:
                arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            arrays = None  # a damaged cache file is regenerated
    if arrays is None:
        arrays = _generate_mnist1d(settings)
        if cache:
            _save_atomic(path, arrays)
    x_tr, x_te, mean, std = _standardize(arrays["x"].astype(np.float64), arrays["x_test"].astype(np.float64),
                                         standardize_with)
    return ClassificationData(torch.from_numpy(x_tr[:, None]).float(), torch.from_numpy(arrays["y"].astype(np.int64)),
                              torch.from_numpy(x_te[:, None]).float(),
                              torch.from_numpy(arrays["y_test"].astype(np.int64)), 10, mean, std, "mnist1d")

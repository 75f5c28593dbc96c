"""Fast paths under normlab's layers, chosen per call; the reference in :mod:`normlab.functional` stays the truth.

For each call a :class:`~normlab.Norm` describes what it computes (a
:class:`Call`: dims, affine dims, centering, groups, batch or given
statistics, the running statistics to fold) and :func:`choose` picks the
fastest implementation of exactly those semantics (precision included):

- ``cpp:*``: normlab's fused C++ CPU kernels (``csrc/``, built once per
  machine, see :mod:`normlab.kernels.build`), with the reference's corrected
  two-pass statistics, for contiguous (or channels-last BatchNorm) CPU
  tensors: ``cpp:rows`` (LayerNorm, RMSNorm, CNN LayerNorm, GroupNorm,
  InstanceNorm, fused add + norm), ``cpp:chfirst`` (LayerNorm2d, per-position
  RMSNorm), ``cpp:batch`` / ``cpp:batch-cols`` (BatchNorm, masked too, in
  training and with running statistics).
- ``native:*``: torch's fused kernels (``F.layer_norm``, ``F.group_norm``,
  ``F.batch_norm``, ``F.instance_norm``) where the configuration is exactly
  theirs and their precision is acceptable: float64 inputs, and bf16/fp16
  inputs, whose own rounding (2^-8 / 2^-11) dwarfs the error of torch's
  float32 Welford statistics.  On float32 rows with a large mean and a small
  spread (mean 1e4, std 1e-2) torch's kernels are off by ~0.1 normalized
  units, so float32 never takes them unless asked (``native`` mode).
- ``triton:rows`` (opt-in, mode ``triton``): triton kernels for CUDA inputs of LayerNorm and
  RMSNorm over the last dim, affine or not, fused add + norm (:func:`normlab.add_norm`), float32 /
  bf16 / fp16 with float32 statistics (``triton_rows.py``, ``triton_ops.py``).  Tested in triton's
  interpreter on CPU; no GPU has run them yet, so no default mode takes them (see ``docs/gpu.md``).
- ``reference``: :mod:`normlab.functional`, for everything else (masked
  GroupNorm/InstanceNorm, arbitrary dims, SyncBatchNorm across processes,
  tensors on devices without a fast path, empty tensors).

Selection is visible and controllable::

    >>> import torch, normlab as nl
    >>> ln = nl.LayerNorm(64)
    >>> x = torch.randn(8, 64)
    >>> nl.kernels.implementation(ln, x) in ("cpp:rows", "reference")
    True
    >>> with nl.use_reference():
    ...     nl.kernels.implementation(ln, x)
    'reference'

The package is a leaf under the layers: ``mode.py`` (the kernel mode, per
thread), ``call.py`` (the description of a call), ``choose.py`` (the choice of
path), ``run.py`` (the calls), ``ops.py`` (the C++ ops' autograd and shape
registrations), ``build.py`` (the build and cache of the C++ library).  The
layer keeps its own state (parameters, running statistics, and the plan it
remembers per input signature) and gets tensors back.

Eager calls take ops whose autograd is in C++ (``normlab::rows_ad``,
``normlab::batch_ad``: no Python in the backward; BatchNorm's running
statistics are folded in by the same op); under ``torch.compile`` the
layers use autograd.Functions over the same kernels, which the compiler
traces.  Row outputs larger than half the last-level cache are written with
streaming stores (:func:`streaming_stores`; the same bits either way).

``NORMLAB_KERNELS`` sets the default mode: ``auto`` (default: the
order above), ``reference`` (only the reference), ``native`` (torch's
kernels wherever the configuration is theirs, any dtype, then the
reference), ``cpp`` (normlab's kernels where they apply, then the
reference), ``triton`` (the triton kernels where they apply, else as ``auto``).
:func:`use` sets it for a block of code, in the thread that runs the block (each thread
starts in the default mode).
"""

from __future__ import annotations

from . import build, ops, triton_ops
from .call import Call, Running
from .choose import choose, cpp_available, eager, implementation, triton_applies
from .mode import MODES, mode, use, use_reference
from .run import run, run_add_norm, run_add_norm_triton, run_planned, streaming_stores

__all__ = ["MODES", "mode", "use", "use_reference", "implementation", "cpp_available", "streaming_stores",
           "Call", "Running", "choose", "eager", "run", "run_planned", "run_add_norm", "run_add_norm_triton",
           "triton_applies", "build", "ops", "triton_ops"]

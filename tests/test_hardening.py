"""Issue 16, hardening for real users: each test pins one row of the issue's table.

Silent wrong numbers, host syncs in the forward, state-dict conventions, strict constructors and
configs, TorchScript.  (Interrupts: test_interrupts.py; the CLI: test_cli_strict.py.)
"""

from __future__ import annotations

import pytest
import torch

import normlab as nl
from normlab import functional as NF


# ------------------------------------------------- dims: empty, overlapping, non-int
def test_empty_dims_are_refused_not_silently_wrong():
    x = torch.randn(3, 4) * 100 + 7
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        nl.Norm(4, dims=())
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        NF.normalize(x, dims=())
    with pytest.raises(ValueError, match=r"dims=\(\) reduces over nothing"):
        NF.moments(x, dims=())
    with pytest.raises(ValueError, match=r"at least one dim to reduce over, got dims=\(\)"):
        NF._stats(x, (), True, None)


def test_keep_dims_that_keep_everything_are_refused():
    with pytest.raises(ValueError, match=r"keep_dims=\(0, 1\) keeps every dim of a 2-D input"):
        nl.Norm(4, keep_dims=(0, 1), param_dims=(1,))(torch.randn(3, 4))
    nl.Norm(4, keep_dims=(0, 1), param_dims=(1,))(torch.randn(3, 4, 5))  # a 3-D input has a dim left


def test_overlapping_dims_and_param_dims_with_running_stats_are_named():
    with pytest.raises(ValueError, match=r"dims=\(0, 1\) and param_dims=\(1,\) overlap at dim\(s\) \[1\]"):
        nl.Norm(4, dims=(0, 1), param_dims=(1,), track_running_stats=True)
    bn = nl.Norm(4, dims=(0, -1), param_dims=(1,), track_running_stats=True)  # overlap only once resolved
    with pytest.raises(ValueError, match=r"reduced dims \(0, 1\) and param_dims \(1,\) overlap"):
        bn(torch.randn(3, 4))
    nl.Norm(4, dims=-1)(torch.randn(3, 4))  # without running statistics overlap is LayerNorm: allowed


def test_dims_must_be_ints_named_once():
    with pytest.raises(TypeError, match=r"dims must be ints, got 1.0 in dims=\(1.0,\)"):
        nl.Norm(4, dims=(1.0,))
    with pytest.raises(ValueError, match=r"keep_dims=\(1, 1\) names the same dim twice"):
        nl.Norm(4, keep_dims=(1, 1), param_dims=(1,))
    with pytest.raises(ValueError, match=r"out of range"):
        NF.normalize(torch.randn(3, 4), dims=(2,))

"""Setups of the CNN claims (C01, C09, C13): what each grid runs, and the gap read at the target loss."""

from __future__ import annotations

import math

import pytest

from normlab.experiments.claims import c01_ics, c09_small_batch, c13_regularization
from normlab.experiments.harness.landscape import landscape_grid


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c09_every_norm_trains_with_the_per_worker_batch_and_sees_the_same_samples(mode):
    runs = c09_small_batch.grid(mode)
    norms = {c["norm"] for _, c in runs}
    assert {"batchnorm", "groupnorm"} <= norms
    for _, c in runs:
        b = c["per_worker"]
        assert c["batch"] == b and "ghost_batch" not in c  # GN's and LN's batches change too
        assert c["train"]["steps"] * b == c09_small_batch.STEPS32[mode] * 32  # same samples at every size
        assert c["train"]["lr"] == pytest.approx(c09_small_batch.LR * math.sqrt(b / 32))
    for norm in norms:
        assert len({c["per_worker"] for _, c in runs if c["norm"] == norm}) >= 2


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c01_runs_two_lrs_without_the_untrained_default_init_arm(mode):
    runs = landscape_grid("ics", c01_ics.ICS_LRS)(mode)
    assert {c["lr"] for _, c in runs} == set(c01_ics.ICS_LRS)
    assert {c["init"] for _, c in runs} == {"he"}
    assert sorted(c["model"]["norm"] for _, c in runs) == ["batchnorm", "batchnorm", "none", "none"]


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_c13_trains_at_a_constant_lr(mode):
    for _, c in c13_regularization.grid(mode):
        assert c["train"]["schedule"] == "constant"


def test_c13_gap_is_interpolated_at_the_target_loss():
    evals = [{"train_loss": 0.4, "test_loss": 0.5}, {"train_loss": 0.2, "test_loss": 0.5},
             {"train_loss": 0.1, "test_loss": 0.5}]
    r = {"result": {"evals": evals}}
    # gaps 0.1, 0.3, 0.4; sqrt(0.2 * 0.1) is halfway in log loss between 0.2 and 0.1
    assert c13_regularization._gap_at_target(r, math.sqrt(0.2 * 0.1)) == pytest.approx(0.35)
    assert c13_regularization._gap_at_target(r, 0.2) == pytest.approx(0.3)
    assert c13_regularization._gap_at_target(r, 0.5) == pytest.approx(0.1)  # already below at the first evaluation
    assert math.isnan(c13_regularization._gap_at_target(r, 0.05))  # never reached


def test_c01_primary_quantity_is_relative_and_keeps_every_seed():
    from cases_vision import _ics

    from normlab.experiments import get

    # BN's absolute ICS 0.1x the plain net's, but its gradients are 0.1x too: relative, no reduction
    v = get("C01").verdict(_ics({0.05: [1.0, 1.0], 0.2: [1.0, 1.0]}, g_bn=0.1))
    assert v.status == "supported" and "primary" in v.summary and "(absolute)" in v.summary
    assert v.tests[0]["n"] == [4] and len(v.tests) == 1  # one judged interval over every seed
    values, seeds = c01_ics.primary(_ics({0.05: [0.1, 1.0], 0.2: [1.0, 1.0]}, acc_none=0.1))
    assert seeds == [0, 1, 2, 3] and values[0] == pytest.approx(-0.25)  # log10 0.1 averaged with three 0s

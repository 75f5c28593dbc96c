"""Helpers shared by the synthetic-record verdict cases (tests/cases_*.py)."""

from __future__ import annotations


def rec(name, seed, result):
    return {"name": name, "seed": seed, "status": "ok", "result": result}


def lm_rec(name, seed, loss, status="ok", first=4.6, **extra):
    return rec(name, seed, {"status": status, "final": {"val_loss": loss} if status == "ok" else {},
                            "first_loss": first, **extra})


def groups(losses: dict[str, list[float]]):
    return [lm_rec(name, seed, v) for name, vals in losses.items() for seed, v in enumerate(vals)]


def profile(last_over_first, n=6):
    return [1.0 * last_over_first ** (k / (n - 1)) for k in range(n)]


def train_result(final=None, status="ok", **extra):
    return {"status": status, "final": final or {}, **extra}

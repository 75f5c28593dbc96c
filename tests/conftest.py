"""Shared helpers: run a normlab layer and its torch twin side by side."""

from __future__ import annotations

import copy

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# the fake claim modules register claims on import; --doctest-modules would import them into the
# test process, where only the tests that ask for them (through NORMLAB_EXPERIMENTS) should see them
collect_ignore_glob = ["fake_*.py"]

TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def twin_run(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, *, steps: int = 3,
             train: bool = True, seed: int = 0):
    """Load theirs' state into ours, run ``steps`` forward/backward passes on both, return both sides.

    Each side gets the same input and the same random output gradient; returns
    a dict per side with the last output, the input grad, the parameter grads
    and the final state dict.
    """
    ours.load_state_dict(theirs.state_dict())
    ours.train(train)
    theirs.train(train)
    gen = torch.Generator().manual_seed(seed)
    results = []
    for mod in (ours, theirs):
        out = {}
        for step in range(steps):
            xi = (x + 0.1 * step).detach().requires_grad_(True)
            mod.zero_grad(set_to_none=True)
            y = mod(xi)
            g = torch.randn(y.shape, generator=gen.manual_seed(seed + step), dtype=y.dtype)
            (y * g).sum().backward()
        out["y"] = y.detach()
        out["dx"] = xi.grad
        out["grads"] = {n: p.grad for n, p in mod.named_parameters()}
        out["state"] = copy.deepcopy(mod.state_dict())
        results.append(out)
    return results


def _close_or_better(ours, theirs, ref, tol, what):
    """ours ~ theirs within tol, or (float32) ours at least as close to the float64 reference as theirs."""
    if torch.allclose(ours, theirs, **tol) or ref is None:
        torch.testing.assert_close(ours, theirs, **tol, msg=lambda m: f"{what}: {m}")
        return
    err_ours = (ours.double() - ref).abs().max().item()
    err_theirs = (theirs.double() - ref).abs().max().item()
    assert err_ours <= 2 * err_theirs + 1e-7, (
        f"{what}: normlab differs from torch and is further from the float64 reference "
        f"(normlab err {err_ours:.3e}, torch err {err_theirs:.3e})")


def assert_twins(a: dict, b: dict, dtype: torch.dtype, ref: dict | None = None) -> None:
    """Compare the two sides of :func:`twin_run`; ``ref`` is an optional float64 run of the torch twin."""
    tol = TOL[dtype]
    r = ref or {"y": None, "dx": None, "grads": {}, "state": {}}
    _close_or_better(a["y"], b["y"], r["y"], tol, "output")
    _close_or_better(a["dx"], b["dx"], r["dx"], tol, "input grad")
    assert a["grads"].keys() == b["grads"].keys()
    for k in a["grads"]:
        _close_or_better(a["grads"][k], b["grads"][k], r["grads"].get(k), tol, f"grad of {k}")
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        _close_or_better(a["state"][k], b["state"][k], r["state"].get(k), tol, f"state {k}")


def check_twins(ours: torch.nn.Module, theirs: torch.nn.Module, x: torch.Tensor, **kwargs) -> None:
    """twin_run + assert_twins; in float32 a float64 copy of the torch twin is the referee."""
    ref = None
    if x.dtype != torch.float64:
        ref64 = copy.deepcopy(theirs).double()
        ref = twin_run(copy.deepcopy(ref64), ref64, x.double(), **kwargs)[1]
    assert_twins(*twin_run(ours, theirs, x, **kwargs), x.dtype, ref)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Any connection beyond this machine fails the test: data must come from installed packages."""
    import ipaddress
    import socket

    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None:
            try:
                local = ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = host == "localhost"
            if not local:
                raise RuntimeError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    socket.socket.connect = guarded
    yield
    socket.socket.connect = real_connect

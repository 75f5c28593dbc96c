"""normlab's layers trace into one torch.compile graph (what the fast paths will build on)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

import normlab as nl

CASES = [
    ("LayerNorm", lambda: nl.LayerNorm(16), (3, 5, 16)),
    ("RMSNorm", lambda: nl.RMSNorm(16), (3, 5, 16)),
    ("LayerNorm2d", lambda: nl.LayerNorm2d(4), (3, 4, 5, 5)),
    ("BatchNorm train", lambda: nl.BatchNorm2d(4), (3, 4, 5, 5)),
    ("BatchNorm eval", lambda: nl.BatchNorm2d(4).eval(), (3, 4, 5, 5)),
    ("GroupNorm", lambda: nl.GroupNorm(2, 4), (3, 4, 5, 5)),
    ("InstanceNorm", lambda: nl.InstanceNorm2d(4, affine=True), (3, 4, 5, 5)),
]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_no_graph_breaks_and_same_results(name, make, shape):
    dynamo.reset()
    x = torch.randn(shape)
    eager, compiled = make(), make()
    assert dynamo.explain(make())(x).graph_break_count == 0
    fn = torch.compile(compiled, backend="eager", fullgraph=True)
    for _ in range(2):
        torch.testing.assert_close(fn(x), eager(x))
    for (n, a), (_, b) in zip(compiled.named_buffers(), eager.named_buffers()):
        torch.testing.assert_close(a, b, msg=n)

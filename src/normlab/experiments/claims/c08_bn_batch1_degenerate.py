"""C08: BatchNorm at batch size 1 in training is degenerate.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

import math

from ..harness.exact import EXACT_SEEDS, exact_grid
from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import exact_part, exact_verdict, fmt


def run(config: dict, seed: int) -> dict:
    import torch

    from ... import BatchNorm1d
    from ...functional import moments, normalize

    c = 8
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, c, generator=g, dtype=torch.float64) * 5).requires_grad_(True)
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    _, var = moments(x, (0,))
    y = normalize(x, (0,), torch.ones(c, dtype=torch.float64), beta)
    (grad,) = torch.autograd.grad(y, x, torch.randn(1, c, generator=g, dtype=torch.float64))
    errors: dict[str, str | None] = {}
    for lib, layer in (("normlab", BatchNorm1d(c)), ("torch", torch.nn.BatchNorm1d(c))):
        try:
            layer.train()(x.detach().float())
            errors[lib] = None
        except Exception as e:  # the message is the result
            errors[lib] = f"{type(e).__name__}: {e}"
    return {"max_var": var.abs().max().item(), "output_minus_beta": (y - beta).abs().max().item(),
            "max_input_grad": grad.abs().max().item(), "errors": errors,
            "values": {"input": x.detach()[0].tolist(), "output": y.detach()[0].tolist(), "beta": beta.tolist(),
                       "input gradient": grad[0].tolist()}}


def _clear(err: str | None) -> bool:
    return bool(err) and "batch size 1" in err and "(1, 8)" in err


def verdict(records) -> Verdict:
    records = sorted(records, key=lambda r: r["seed"])
    res = [r["result"] for r in records]
    zeros = [max(r["max_var"], r["output_minus_beta"], r["max_input_grad"]) for r in res]
    clear = [float(_clear(r["errors"].get("normlab"))) for r in res]
    parts = [exact_part(zeros, lambda z: z == 0, what="max of the batch variance, |output - beta| and |input "
                        "gradient| of BN on a (1, 8) batch", rule="supported if all three are exactly 0"),
             exact_part(clear, lambda c: c == 1, worst=min, what="normlab's BatchNorm1d raises an error naming the "
                        "shape and the batch size (1 = yes)", rule="supported if the error names both")]
    r = res[0] if res else {"max_var": math.nan, "output_minus_beta": math.nan, "max_input_grad": math.nan,
                            "errors": {}}
    err = r["errors"].get("normlab") or ""
    summary = (f"BN statistics of a (1, 8) batch: variance {fmt(r['max_var'])}, |output - beta| "
               f"{fmt(r['output_minus_beta'])}, |input gradient| {fmt(r['max_input_grad'])} (largest over "
               f"{len(res)} seeds: {fmt(max(zeros)) if zeros else 'n/a'}); normlab's BatchNorm1d in training raises: "
               f"{err or 'nothing'}; torch: {r['errors'].get('torch') or 'nothing'}")
    return exact_verdict(parts, summary, "supported if the batch variance, output - beta and input gradient are all "
                         "exactly 0 and normlab raises an error naming the shape and the batch size, on every seed",
                         {"zeros": zeros, "clear_error": clear},
                         key_number=f"var {fmt(r['max_var'])}, grad {fmt(r['max_input_grad'])}")


def plot(records, verdict, prefix):
    plt = pyplot()
    vals = records[0]["result"]["values"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    width = 0.2
    for i, (name, v) in enumerate(vals.items()):
        ax.bar([c + (i - 1.5) * width for c in range(len(v))], v, width, label=name)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("channel")
    ax.set_ylabel("value")
    ax.set_title("BatchNorm on a (1, 8) batch in training: output = beta, no input gradient", fontsize=9)
    ax.legend(fontsize=8)
    return [save_fig(fig, prefix + "-batch1.png")]


SPEC = experiment(
    claim="C08", title="BatchNorm at batch size 1 in training is degenerate",
    statement="With one sample of a 1-D feature, BatchNorm's per-channel variance is zero: the output is beta and "
              "no gradient reaches the input.",
    setup="float64 (1, 8) input with std 5; the batch statistics and normalization from normlab.functional, "
          "the input gradient for a random upstream gradient; normlab's and torch's BatchNorm1d in training mode; "
          "2 seeds quick, 3 full. Rule: exact checks, every seed must pass (all fail: not supported; seeds "
          "disagree: inconclusive).",
    grid=exact_grid, seeds=EXACT_SEEDS, run=run, verdict=verdict, plot=plot,
)

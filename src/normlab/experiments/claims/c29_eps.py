"""C29: eps guards constant inputs; too small an eps fails in low precision.

The claim's grid, run, verdict, plot and paper text; ``SPEC`` is what the registry finds."""

from __future__ import annotations

from ..plots import pyplot, save_fig
from ..spec import Verdict, experiment
from ..verdicts import combine_verdicts, exact, fmt


def run(config: dict, seed: int) -> dict:
    import torch

    from ...functional import normalize

    d = 64
    g = torch.Generator().manual_seed(seed)
    const = torch.full((4, d), 3.0)
    near = (3.0 + 1e-3 * torch.randn(4, d, generator=g))  # spread below fp16's spacing at 3 (0.002)

    def finite(y):
        return float(torch.isfinite(y).float().mean())

    def lowp(x, eps, dtype):  # a kernel that keeps the statistics and eps in the input's dtype
        x = x.to(dtype)
        m = x.mean(-1, keepdim=True)
        v = (x - m).square().mean(-1, keepdim=True)
        return (x - m) * torch.rsqrt(v + torch.tensor(eps, dtype=dtype))

    out = {
        "eps0_fp32_normlab": finite(normalize(const, (-1,), eps=0.0)),
        "eps0_fp32_torch": finite(torch.nn.functional.layer_norm(const, (d,), eps=0.0)),
        "eps1e-5_fp32": finite(normalize(const, (-1,), eps=1e-5)),
        "eps1e-5_fp32_output_absmax": normalize(const, (-1,), eps=1e-5).abs().max().item(),
        "eps1e-12_in_fp16": float(torch.tensor(1e-12, dtype=torch.float16)),
        "eps1e-12_fp16_stats": finite(lowp(const, 1e-12, torch.float16)),
        "eps1e-5_fp16_stats": finite(lowp(const, 1e-5, torch.float16)),
        "eps1e-12_fp16_input_normlab": finite(normalize(const.half(), (-1,), eps=1e-12)),
    }
    # rounding noise of near-constant rows: how much of it the normalization blows up to unit scale
    nh = near.half()
    for eps in (1e-12, 1e-5, 1e-3):
        y = normalize(nh, (-1,), eps=eps).float()
        out[f"near_const_fp16_output_std_eps{eps:g}"] = y.std().item()
        x = nh.float().requires_grad_(True)
        (grad,) = torch.autograd.grad(normalize(x, (-1,), eps=eps), x, torch.randn(4, d, generator=g))
        out[f"near_const_grad_absmax_eps{eps:g}"] = grad.abs().max().item()
    return out


def _exact_part(what: str, values: dict[str, float], status: str, rule: str) -> Verdict:
    """A deterministic check with its measured values as zero-width intervals."""
    text = ", ".join(f"{k} {fmt(x)}" for k, x in values.items())
    return Verdict(status, f"{what}: {text}", rule, dict(values), key_number=text,
                   tests=[exact(x, what=f"{what}: {k}", status=status, rule=rule) for k, x in values.items()])


def verdict(records) -> Verdict:
    if not records:
        return Verdict("inconclusive", "no records", "needs the eps run",
                       tests=[exact(0, what="runs present", status="inconclusive", rule="needs the eps run")])
    r = records[0]["result"]
    zero = [r["eps0_fp32_normlab"], r["eps0_fp32_torch"]]
    small = (r["eps1e-12_in_fp16"] == 0, r["eps1e-12_fp16_stats"] < 1)
    parts = {
        "eps=0 breaks": _exact_part(
            "constant rows, eps=0, float32: finite fraction of the output",
            {"normlab": zero[0], "torch": zero[1]},
            "supported" if max(zero) < 1 else "not supported" if min(zero) == 1 else "inconclusive",
            "supported if both implementations give non-finite outputs; not supported if both stay finite; "
            "inconclusive if they disagree"),
        "eps=1e-5 guards": _exact_part(
            "constant rows, eps=1e-5, float32", {"finite fraction": r["eps1e-5_fp32"],
                                                 "max |output| (beta = 0)": r["eps1e-5_fp32_output_absmax"]},
            "supported" if r["eps1e-5_fp32"] == 1 and r["eps1e-5_fp32_output_absmax"] == 0
            else "not supported" if r["eps1e-5_fp32"] < 1 else "inconclusive",
            "supported if every output is finite and equals beta (0); not supported if any is non-finite; "
            "inconclusive if finite but not beta"),
        "eps=1e-12 too small for fp16": _exact_part(
            "eps=1e-12 in fp16", {"eps as fp16": r["eps1e-12_in_fp16"],
                                  "finite fraction, fp16 statistics": r["eps1e-12_fp16_stats"]},
            "supported" if all(small) else "not supported" if not any(small) else "inconclusive",
            "supported if 1e-12 rounds to 0 in fp16 and fp16 statistics then give non-finite outputs on constant "
            "rows; not supported if neither; inconclusive if only one"),
    }
    v = combine_verdicts(parts, key_number=f"eps=0: {1 - r['eps0_fp32_normlab']:.0%} non-finite; eps=1e-12 as fp16 "
                                           f"= {r['eps1e-12_in_fp16']:g}")
    v.summary += (f"; reported: normlab (float32 statistics) on fp16 input with eps=1e-12: "
                  f"{r['eps1e-12_fp16_input_normlab']:.2f} finite; near-constant fp16 rows (spread 1e-3): output std "
                  f"{fmt(r['near_const_fp16_output_std_eps1e-12'])} at eps 1e-12 vs "
                  f"{fmt(r['near_const_fp16_output_std_eps1e-05'])} at 1e-5 (rounding noise blown up to unit scale), "
                  f"max |input grad| {fmt(r['near_const_grad_absmax_eps1e-12'])} vs "
                  f"{fmt(r['near_const_grad_absmax_eps1e-05'])}")
    return v


def plot(records, verdict, prefix):
    plt = pyplot()
    r = records[0]["result"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    cases = {"eps=0, fp32": "eps0_fp32_normlab", "eps=1e-5, fp32": "eps1e-5_fp32",
             "eps=1e-12, fp16 stats": "eps1e-12_fp16_stats", "eps=1e-5, fp16 stats": "eps1e-5_fp16_stats",
             "eps=1e-12, fp16 in,\nfp32 stats": "eps1e-12_fp16_input_normlab"}
    a1.bar(range(len(cases)), [100 * r[k] for k in cases.values()], color="C0")
    a1.set_xticks(range(len(cases)), list(cases), fontsize=7, rotation=20, ha="right")
    a1.set_ylabel("finite outputs (%)")
    a1.set_title("Rows of equal values", fontsize=9)
    eps = [1e-12, 1e-5, 1e-3]
    a2.plot(eps, [r[f"near_const_fp16_output_std_eps{e:g}"] for e in eps], marker="o", label="output std")
    a2.plot(eps, [r[f"near_const_grad_absmax_eps{e:g}"] for e in eps], marker="s", label="max |input gradient|")
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.set_xlabel("eps")
    a2.set_title("Near-constant fp16 rows (spread 1e-3)", fontsize=9)
    a2.legend(fontsize=8)
    return [save_fig(fig, prefix + "-eps.png")]


SPEC = experiment(
    claim="C29", title="eps guards constant inputs; too small an eps fails in low precision",
    statement="eps prevents division by zero on constant inputs (default about 1e-5); eps=0, or an eps the dtype "
              "cannot represent, breaks.",
    setup="Rows of 64 equal values (3.0) and near-constant rows (spread 1e-3, stored as fp16); LayerNorm "
          "statistics in float32 (normlab, torch) and in fp16 (a kernel keeping everything in the input dtype); "
          "eps 0, 1e-12, 1e-5, 1e-3. Deterministic, one run; judged exactly (each check a zero-width interval): "
          "eps=0 gives non-finite outputs in both implementations, eps=1e-5 gives finite outputs equal to beta, "
          "1e-12 rounds to 0 in fp16 and fp16 statistics then give non-finite outputs.",
    grid=lambda mode: [("eps", {})], seeds={"quick": 1, "full": 1}, run=run, verdict=verdict,
    plot=plot,
)

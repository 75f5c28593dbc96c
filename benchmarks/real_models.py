"""normlab.convert on real model code: transformers' architectures (and timm's, where timm imports), random weights.

Two parts:

``--sweep``: every architecture of the installed transformers that builds offline from its default config
shrunk to a tiny size: the modules whose class name ends in RMSNorm or LayerNorm, and what ``convert`` did
with each (converted by class, by behaviour, or left with its reason); every converted module is then run
against its original on random inputs in float32 and bfloat16 (max difference in units of the dtype's
rounding).  Writes a JSON record and prints the counts.

default: the timing table.  Per model (tiny random-weight configs of Llama, Mistral, Qwen2, Gemma, T5,
BERT, ViT, ConvNeXt, and timm's ConvNeXt / ResNet where timm imports): norm modules and how many were
converted, the max output difference in float32 and bfloat16, and the time of an eval forward and of a
training step (forward, backward, SGD step), torch vs converted, interleaved in one process (the order
alternating by round), medians and the spread (interquartile range of the per-round ratio) over rounds.

    python benchmarks/real_models.py                        # the timing table, float32, one thread
    python benchmarks/real_models.py --dtype bfloat16 --threads 2
    python benchmarks/real_models.py --quick                # seconds
    python benchmarks/real_models.py --sweep --out sweep.json
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

import normlab as nl  # noqa: E402

NORM_SUFFIXES = ("RMSNorm", "LayerNorm")


def is_norm_name(m: nn.Module) -> bool:
    return type(m).__name__.endswith(NORM_SUFFIXES)


# ----------------------------------------------------------------------------------------------- the sweep
#: config attributes set to small values wherever a config (or a sub-config) has them
_SMALL = {
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "dim": 32, "width": 32,
    "intermediate_size": 64, "d_ff": 64, "ffn_dim": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "num_decoder_layers": 2, "encoder_layers": 2,
    "decoder_layers": 2, "depth": 2,
    "num_attention_heads": 4, "n_head": 4, "num_heads": 4, "encoder_attention_heads": 4,
    "decoder_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "d_kv": 8,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 1,
    "topk_group": 1, "max_position_embeddings": 128,
}  # vocab_size stays: special token ids index into it


def shrink(cfg, seen=None) -> None:
    """Set the size attributes of ``cfg`` and of every sub-config it holds to small values, best effort."""
    seen = set() if seen is None else seen
    if id(cfg) in seen:
        return
    seen.add(id(cfg))
    for key, value in _SMALL.items():
        if isinstance(getattr(cfg, key, None), int) and not isinstance(getattr(cfg, key), bool):
            try:
                setattr(cfg, key, value)
            except Exception:  # a config that validates or derives the field: leave it
                pass
    for key in ("layer_types", "mlp_layer_types", "block_types"):
        v = getattr(cfg, key, None)
        n = getattr(cfg, "num_hidden_layers", None)
        if isinstance(v, list) and isinstance(n, int) and len(v) > n:
            try:
                setattr(cfg, key, v[:n])
            except Exception:
                pass
    for key in ("hidden_sizes", "depths"):
        v = getattr(cfg, key, None)
        if isinstance(v, (list, tuple)) and v and all(isinstance(i, int) for i in v):
            new = [16 * 2 ** i for i in range(len(v))] if key == "hidden_sizes" else [1] * len(v)
            try:
                setattr(cfg, key, new)
            except Exception:
                pass
    for value in list(vars(cfg).values()):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            shrink(value, seen)


def _build(model_type: str, max_params: int):
    """(model, '') or (None, why not) for one architecture, from its default config shrunk, random weights."""
    import transformers

    cfg = transformers.CONFIG_MAPPING[model_type]()
    shrink(cfg)
    errors = []
    for auto in ("AutoModel", "AutoModelForCausalLM", "AutoModelForImageClassification", "AutoBackbone"):
        try:
            with torch.device("meta"):
                meta = getattr(transformers, auto).from_config(cfg)
            n = sum(p.numel() for p in meta.parameters())
            if n > max_params:
                return None, f"{n / 1e6:.0f}M parameters after shrinking (limit {max_params / 1e6:.0f}M)"
            torch.manual_seed(0)
            return getattr(transformers, auto).from_config(cfg).float(), ""
        except Exception as e:  # this auto class does not take the config, or the config does not build
            msg = str(e).splitlines()[0][:100] if str(e) else ""
            if not msg.startswith("Unrecognized configuration class"):
                errors.append(f"{auto}: {type(e).__name__}: {msg}")
    return None, errors[0] if errors else "no auto class takes its config (a part of another architecture)"


def _check_twin(orig: nn.Module, twin: nn.Module, gen: torch.Generator) -> dict:
    """Max |twin - original| on random inputs, in units of the dtype's rounding allowance, float32 and bf16."""
    from normlab.tools.probe import _matches

    out = {}
    w = orig._parameters.get("weight")
    d = getattr(twin, "shape", ()) or (tuple(w.shape) if w is not None else ())
    chfirst = type(twin).__name__ in ("LayerNorm2d", "ChannelsFirstLayerNorm")
    shapes = [(2, d[0], 3, 3)] if chfirst else ([(2, 3, *d)] if d else [(2, 3, 32)])
    for dtype in (torch.float32, torch.bfloat16):
        o, t = copy.deepcopy(orig).to(dtype), copy.deepcopy(twin).to(dtype)
        with torch.no_grad():
            for p_o, p_t in zip(o.parameters(), t.parameters()):
                p_o.copy_(torch.randn(p_o.shape, generator=gen) * 0.3 + 1)
                p_t.copy_(p_o)
            worst = 0.0
            for shape in shapes:
                for x in (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen) * 3 + 5):
                    x = x.to(dtype)
                    try:
                        ok, ratio, _ = _matches(o(x), t(x), dtype)
                    except Exception as e:
                        return {"error": f"{type(e).__name__}: {str(e)[:80]}"}
                    worst = max(worst, ratio)
        out[str(dtype).split(".")[-1]] = worst
    return out


def sweep(max_params: int, only: list[str] | None, out_path: str | None) -> dict:
    import transformers

    types = sorted(transformers.CONFIG_MAPPING.keys())
    if only:
        types = [t for t in types if t in only]
    gen = torch.Generator().manual_seed(0)
    rows, skipped = [], {}
    t0 = time.time()
    for i, mt in enumerate(types):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model, why = _build(mt, max_params)
            except Exception as e:
                model, why = None, f"{type(e).__name__}: {str(e)[:100]}"
        if model is None:
            skipped[mt] = why
            continue
        originals = {n: m for n, m in model.named_modules() if is_norm_name(m)}
        keep = {n: copy.deepcopy(m) for n, m in originals.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conv, rep = nl.convert(model, report=True)
        conv_by = {c.name: c for c in rep.converted}
        left_by = {x.name: x for x in rep.left}
        for n, m in originals.items():
            row = {"model_type": mt, "module": n, "class": type(m).__name__}
            if n in conv_by:
                row.update(how=conv_by[n].how, twin=conv_by[n].twin, detail=conv_by[n].detail)
                row["check"] = _check_twin(keep[n], conv.get_submodule(n) if n else conv, gen)
            elif n in left_by:
                row.update(how="left", reason=left_by[n].reason)
            else:
                row.update(how="unreached")
            rows.append(row)
        print(f"[{i + 1}/{len(types)}] {mt}: {len(originals)} norm modules, "
              f"{Counter(r['how'] for r in rows if r['model_type'] == mt)}  ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
        del model, conv
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "architectures": len(types),
              "built": len(types) - len(skipped), "skipped": skipped, "rows": rows}
    if out_path:
        with open(out_path, "w") as f:
            json.dump(result, f, indent=1)
    return result


def summarize(result: dict) -> str:
    rows = result["rows"]
    lines = [f"transformers {result['transformers']}, torch {result['torch']}: {result['built']} of "
             f"{result['architectures']} architectures built from their shrunk default config "
             f"({len(result['skipped'])} did not)"]
    how = Counter(r["how"] for r in rows)
    lines.append(f"modules named *RMSNorm/*LayerNorm: {len(rows)}; converted by class {how['class']}, by behaviour "
                 f"{how['behaviour']}, left {how['left']} (with a reason), unreached {how['unreached']}")
    classes = {h: len({r["class"] for r in rows if r["how"] == h}) for h in ("class", "behaviour", "left")}
    lines.append(f"distinct classes: by class {classes['class']}, by behaviour {classes['behaviour']}, "
                 f"left {classes['left']}")
    worst = {dt: max((r["check"].get(dt, 0.0) for r in rows if "check" in r and "error" not in r["check"]),
                     default=0.0) for dt in ("float32", "bfloat16")}
    errors = [r for r in rows if "check" in r and "error" in r["check"]]
    lines.append(f"converted modules vs originals: worst max|diff| / rounding allowance float32 {worst['float32']:.3g}, "
                 f"bfloat16 {worst['bfloat16']:.3g} (<= 1: within rounding); {len(errors)} check errors")
    reasons: Counter[str] = Counter()
    for r in rows:
        if r["how"] == "left":
            reasons[r["reason"].split(" (closest")[0].split(":")[0][:90]] += 1
    lines.append("reasons left (modules):")
    lines += [f"  {n:4d}  {why}" for why, n in reasons.most_common()]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- the timing
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", action="store_true", help="the architecture sweep instead of the timing table")
    p.add_argument("--only", default="", help="sweep: comma-separated model types")
    p.add_argument("--max-params", type=float, default=30e6, help="sweep: skip models larger than this")
    p.add_argument("--out", default=None, help="sweep: write the JSON record here")
    p.add_argument("--summarize", default=None, help="print the summary of a sweep's JSON record")
    a, rest = p.parse_known_args(argv)
    if a.summarize:
        with open(a.summarize) as f:
            print(summarize(json.load(f)))
        return
    if a.sweep:
        print(summarize(sweep(int(a.max_params), [s for s in a.only.split(",") if s] or None, a.out)))
        return
    timing_main(rest)


def _lm_config(kind: str, d: int, layers: int):
    import transformers

    common = dict(vocab_size=1024, hidden_size=d, intermediate_size=d * 8 // 3, num_hidden_layers=layers,
                  num_attention_heads=d // 64, num_key_value_heads=max(1, d // 128), max_position_embeddings=512)
    cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
           "qwen2": transformers.Qwen2Config, "gemma": transformers.GemmaConfig}[kind]
    return transformers.AutoModelForCausalLM.from_config(cls(**common, head_dim=64))


def build_model(name: str, d: int, layers: int, batch: int, seq: int, image: int):
    """(model, a batch of keyword arguments with labels) for one benchmark model, random weights, eval mode."""
    import transformers

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1024, (batch, seq), generator=g)
    pixels = torch.randn(batch, 3, image, image, generator=g)
    labels = torch.randint(0, 10, (batch,), generator=g)
    if name in ("llama", "mistral", "qwen2", "gemma"):
        return _lm_config(name, d, layers), {"input_ids": ids, "labels": ids}
    if name == "t5":
        cfg = transformers.T5Config(vocab_size=1024, d_model=d, d_ff=4 * d, d_kv=64, num_heads=d // 64,
                                    num_layers=layers, num_decoder_layers=layers, decoder_start_token_id=0,
                                    pad_token_id=0)
        return transformers.T5ForConditionalGeneration(cfg), {"input_ids": ids, "labels": ids}
    if name == "bert":
        cfg = transformers.BertConfig(vocab_size=1024, hidden_size=d, num_hidden_layers=layers,
                                      num_attention_heads=d // 64, intermediate_size=4 * d)
        return transformers.BertForMaskedLM(cfg), {"input_ids": ids, "labels": ids}
    if name == "vit":
        cfg = transformers.ViTConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=d // 64,
                                     intermediate_size=4 * d, image_size=image, patch_size=8, num_labels=10)
        return transformers.ViTForImageClassification(cfg), {"pixel_values": pixels, "labels": labels}
    if name == "convnext":
        cfg = transformers.ConvNextConfig(hidden_sizes=[d // 4, d // 2, d, 2 * d], depths=[2, 2, 2, 2],
                                          num_labels=10, image_size=image)
        return transformers.ConvNextForImageClassification(cfg), {"pixel_values": pixels, "labels": labels}
    if name.startswith("timm-"):
        import timm  # needs torchvision; see the note in docs/real_models.md

        arch = {"timm-convnext": "convnext_atto", "timm-resnet": "resnet18"}[name]
        model = timm.create_model(arch, pretrained=False, num_classes=10)
        return model, {"x": pixels, "labels": labels}
    raise ValueError(f"unknown model {name!r}")


def _loss(model: nn.Module, batch: dict) -> torch.Tensor:
    if "x" in batch:  # timm: a plain module
        return nn.functional.cross_entropy(model(batch["x"]), batch["labels"])
    return model(**batch).loss


def _forward(model: nn.Module, batch: dict):
    if "x" in batch:
        return model(batch["x"])
    # T5 takes its decoder inputs from the labels; the others run without them (no loss)
    out = model(**{k: v for k, v in batch.items() if k != "labels" or type(model).__name__.startswith("T5")})
    return out.logits


def _norm_count(model: nn.Module) -> int:
    torch_norms = (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    return sum(is_norm_name(m) or isinstance(m, torch_norms) or type(m).__name__ in ("LayerNorm2d", "RmsNorm",
                                                                                     "GroupNorm1")
               for m in model.modules())


def _max_diff(name: str, args, dtype: torch.dtype) -> float:
    model, batch = build_model(name, *args)
    model = model.to(dtype).eval()
    conv = nl.convert(copy.deepcopy(model))
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
    with torch.no_grad():
        a, b = _forward(model, batch).float(), _forward(conv, batch).float()
    return (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)


def _norm_calls(model: nn.Module, batch: dict) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every call of a norm module in one eval forward, with its input (recorded by hooks)."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: calls.append((mod, args[0].detach().clone())))
             for m in model.modules()
             if is_norm_name(m) or isinstance(m, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm, nl.Norm))]
    try:
        with torch.no_grad():
            _forward(model.eval(), batch)
    finally:
        for h in hooks:
            h.remove()
    return calls


def norm_times(arms: dict[str, nn.Module], batch: dict, rounds: int) -> dict[str, float]:
    """Per arm, the time of all its norm calls of one eval forward, replayed on their recorded inputs (median over
    rounds, the arms interleaved): what the norms cost in the forward, without the rest of the model."""
    calls = {k: _norm_calls(m, batch) for k, m in arms.items()}
    times: dict[str, list[float]] = {k: [] for k in arms}
    with torch.no_grad():
        for r in range(rounds + 1):
            for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                t0 = time.perf_counter()
                for m, x in calls[k]:
                    m(x)
                if r:
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def time_model(name: str, args, dtype: torch.dtype, rounds: int, warmup: int) -> dict:
    model, batch = build_model(name, *args)
    model = model.to(dtype)
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
    conv, rep = nl.convert(copy.deepcopy(model), report=True)
    arms = {"torch": model, "normlab": conv}
    opts = {k: torch.optim.SGD(m.parameters(), lr=1e-4) for k, m in arms.items()}
    res: dict[str, dict[str, list[float]]] = {mode: {k: [] for k in arms} for mode in ("eval", "train")}
    for r in range(warmup + rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for k in order:
            m = arms[k].eval()
            t0 = time.perf_counter()
            with torch.no_grad():
                _forward(m, batch)
            t1 = time.perf_counter()
            m.train()
            loss = _loss(m, batch)
            loss.backward()
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            if r >= warmup:
                res["eval"][k].append((t1 - t0) * 1e3)
                res["train"][k].append((t2 - t1) * 1e3)
    out = {"model": name, "norms": _norm_count(model), "converted": len(rep.converted), "left": len(rep.left),
           "norm_ms": norm_times(arms, batch, rounds)}
    for mode in ("eval", "train"):
        t, c = res[mode]["torch"], res[mode]["normlab"]
        ratios = sorted(b / a for a, b in zip(t, c))
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        out[mode] = {"torch_ms": statistics.median(t), "normlab_ms": statistics.median(c),
                     "ratio": statistics.median(ratios), "q1": q[0], "q3": q[2]}
    return out


def _verdict(r: dict) -> str:
    if r["q3"] < 1:
        return "faster"
    if r["q1"] > 1:
        return "slower"
    return "no clear difference"


TIMED = ("llama", "mistral", "qwen2", "gemma", "t5", "bert", "vit", "convnext", "timm-convnext", "timm-resnet")


def timing_main(argv) -> None:
    p = argparse.ArgumentParser(description="the timing table (see the module docstring)")
    p.add_argument("--models", default=",".join(TIMED))
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--d", type=int, default=256, help="hidden size (transformers)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--image", type=int, default=64)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="llama and bert, d=128, 2 layers, 5 rounds")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = ["llama", "bert"] if a.quick else [m.strip() for m in a.models.split(",") if m.strip()]
    if a.quick:
        a.d, a.layers, a.rounds, a.warmup, a.seq = 128, 2, 5, 1, 64
    args = (a.d, a.layers, a.batch, a.seq, a.image)
    dtype = getattr(torch, a.dtype)
    print(f"torch {torch.__version__}, normlab {nl.__version__}, {platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), timed in {a.dtype}; d={a.d}, {a.layers} layers, batch {a.batch}, seq {a.seq}, image "
          f"{a.image}; {a.rounds} rounds after {a.warmup} warm-up, torch and normlab interleaved, order alternating")
    print("ratio = normlab / torch time, median over rounds [interquartile range]; max|diff| relative to max|output|;"
          " norms = the norm calls of one eval forward replayed alone, torch -> normlab, ms (and % of the forward)")
    head = (f"{'model':14s} {'norms':>5s} {'conv':>4s} {'diff f32':>9s} {'diff bf16':>9s} {'norms ms (% of eval)':>25s} | "
            f"{'eval torch':>10s} "
            f"{'normlab':>8s} {'ratio [IQR]':>20s} | {'train torch':>11s} {'normlab':>8s} {'ratio [IQR]':>20s} | verdict")
    print(head)
    for name in names:
        try:
            diffs = [_max_diff(name, args, dt) for dt in (torch.float32, torch.bfloat16)]
            r = time_model(name, args, dtype, a.rounds, a.warmup)
        except Exception as err:  # e.g. timm without a working torchvision
            why = str(err).splitlines()[0][:90] if str(err) else ""
            print(f"{name:14s} not run: {type(err).__name__}: {why}")
            continue
        e, t = r["eval"], r["train"]
        verdict = f"eval {_verdict(e)}, train {_verdict(t)}"
        nt, nn_ = r["norm_ms"]["torch"], r["norm_ms"]["normlab"]
        share = f"{nt:.2f}->{nn_:.2f} ({100 * nt / e['torch_ms']:.1f}->{100 * nn_ / e['normlab_ms']:.1f}%)"
        print(f"{name:14s} {r['norms']:5d} {r['converted']:4d} {diffs[0]:9.1e} {diffs[1]:9.1e} {share:>25s} | "
              f"{e['torch_ms']:8.2f}ms {e['normlab_ms']:6.2f}ms {e['ratio']:6.3f} [{e['q1']:.3f}, {e['q3']:.3f}] | "
              f"{t['torch_ms']:9.2f}ms {t['normlab_ms']:6.2f}ms {t['ratio']:6.3f} [{t['q1']:.3f}, {t['q3']:.3f}] | "
              f"{verdict}", flush=True)


if __name__ == "__main__":
    main()

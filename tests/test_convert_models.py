"""normlab.convert on other libraries' norms: transformers' families by class against the original modules
(forward and backward, float32 and bfloat16), the behaviour probe and its refusals, the report, to_torch back
to the original class with the state dict unchanged, dtypes kept, no graph break under torch.compile; and the
two first-hour fixes (convert(42), fold_batchnorm's return)."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import normlab as nl
from normlab.tools.twins import CastLayerNorm, CastRMSNorm, ChannelsFirstLayerNorm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


# ------------------------------------------------------------------------------------------ the originals
def _hf(module: str, cls: str):
    mod = __import__(f"transformers.models.{module}.modeling_{module}", fromlist=[cls])
    return getattr(mod, cls)


#: family -> (factory of the original module, input shape, expected twin class, weight offset of a gamma near 1)
FAMILIES = {
    "llama": (lambda: _hf("llama", "LlamaRMSNorm")(48, eps=1e-6), (3, 5, 48), "CastRMSNorm", 1.0),
    "mistral": (lambda: _hf("mistral", "MistralRMSNorm")(48, eps=1e-5), (3, 5, 48), "CastRMSNorm", 1.0),
    "qwen2": (lambda: _hf("qwen2", "Qwen2RMSNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "llama4": (lambda: _hf("llama4", "Llama4TextRMSNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "gemma": (lambda: _hf("gemma", "GemmaRMSNorm")(48), (3, 5, 48), "CastRMSNorm", 0.0),
    "gemma3": (lambda: _hf("gemma3", "Gemma3RMSNorm")(48), (3, 5, 48), "CastRMSNorm", 0.0),
    "gemma3n": (lambda: _hf("gemma3n", "Gemma3nRMSNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "gemma3n-noscale": (lambda: _hf("gemma3n", "Gemma3nRMSNorm")(48, with_scale=False), (3, 5, 48), "Norm", 1.0),
    "t5": (lambda: _hf("t5", "T5LayerNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "mt5": (lambda: _hf("mt5", "MT5LayerNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "longt5": (lambda: _hf("longt5", "LongT5LayerNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "olmo2": (lambda: _hf("olmo2", "Olmo2RMSNorm")(48), (3, 5, 48), "CastRMSNorm", 1.0),
    "cohere": (lambda: _hf("cohere", "CohereLayerNorm")(48), (3, 5, 48), "LayerNorm", 1.0),
    "cohere-qk": (lambda: _hf("cohere", "CohereLayerNorm")((4, 12)), (2, 3, 4, 12), "Norm", 1.0),
    "olmo": (lambda: _hf("olmo", "OlmoLayerNorm")(48), (3, 5, 48), "LayerNorm", 1.0),
    "convnext-last": (lambda: _hf("convnext", "ConvNextLayerNorm")(24), (2, 3, 4, 24), "LayerNorm", 1.0),
    "convnext-first": (lambda: _hf("convnext", "ConvNextLayerNorm")(24, data_format="channels_first"),
                       (2, 24, 3, 4), "ChannelsFirstLayerNorm", 1.0),
}


def _nontrivial(m: nn.Module, offset: float, gen: torch.Generator) -> nn.Module:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + offset)
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_family_matches_the_original_forward_and_backward(family, dtype):
    factory, shape, twin_cls, offset = FAMILIES[family]
    gen = torch.Generator().manual_seed(1)
    orig = _nontrivial(factory(), offset, gen).to(dtype)
    conv, rep = nl.convert(copy.deepcopy(orig), report=True)
    assert type(conv).__name__ == twin_cls
    assert rep.counts() == {"class": 1, "behaviour": 0, "left": 0}
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = orig(xa), conv(xb)
    assert b.dtype == a.dtype and b.shape == a.shape
    if dtype == torch.float32:
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    else:  # the casting order kept: bit-identical but for rare flips of the last bit by float32 sum order
        assert (a == b).float().mean().item() >= 0.995, f"{family}: the casting order differs"
        torch.testing.assert_close(b, a, rtol=2 ** -7, atol=1e-5)
    dy = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    a.backward(dy)
    b.backward(dy)
    tol = 1e-5 if dtype == torch.float32 else 1.5e-2
    assert _rel(xb.grad, xa.grad) <= tol
    for (n, pa), (_, pb) in zip(orig.named_parameters(), conv.named_parameters()):
        assert _rel(pb.grad, pa.grad) <= tol, n


def test_a_class_that_shares_gemmas_forward_but_normalizes_in_groups_is_not_taken_by_class():
    """Qwen4Exp's RMSNorm has Gemma's forward code and a _norm over groups of group_size features (the sweep
    of benchmarks/real_models.py found it 2000x off when it sat in the Gemma table)."""
    cls = _hf("qwen4_exp", "Qwen4ExpTextRMSNorm")
    gen = torch.Generator().manual_seed(6)
    grouped = _nontrivial(cls(48, group_size=16), 0.0, gen)
    conv, rep = nl.convert(nn.Sequential(copy.deepcopy(grouped)), report=True)
    assert rep.counts() == {"class": 0, "behaviour": 0, "left": 1} and type(conv[0]) is cls
    plain = _nontrivial(cls(48), 0.0, gen)  # without groups it is Gemma's: the probe finds it
    conv, rep = nl.convert(nn.Sequential(copy.deepcopy(plain)), report=True)
    assert rep.counts() == {"class": 0, "behaviour": 1, "left": 0}
    x = torch.randn(3, 48, generator=gen)
    torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-5)


def test_channels_first_twin_keeps_the_originals_memory_layout():
    """ConvNeXt's channels-first LayerNorm returns a channels-last-strided tensor (permute, normalize, permute);
    the next conv picks its algorithm by that layout, so the twin keeps it (normlab's LayerNorm2d returns
    NCHW-contiguous: a tiny ConvNeXt ran 18% slower with it)."""
    orig = _hf("convnext", "ConvNextLayerNorm")(8, data_format="channels_first")
    conv = nl.convert(copy.deepcopy(orig))
    x = torch.randn(2, 8, 5, 5)
    assert conv(x).stride() == orig(x).stride() != nl.LayerNorm2d(8)(x).stride()


def test_llama_order_differs_from_one_rounding_so_the_test_above_can_fail():
    """In bf16 a single rounding (normlab's own order) disagrees with Llama's weight * x_hat.to(bf16) often."""
    gen = torch.Generator().manual_seed(2)
    orig = _nontrivial(_hf("llama", "LlamaRMSNorm")(256), 1.0, gen).bfloat16()
    one = nl.RMSNorm(256, 1e-6).bfloat16()
    one.weight = orig.weight
    x = torch.randn(8, 256, generator=gen).bfloat16()
    assert (one(x) == orig(x)).float().mean().item() < 0.95
    assert torch.equal(nl.convert(copy.deepcopy(orig))(x), orig(x))


def test_gemma_half_weight_forms_gamma_in_float32():
    gen = torch.Generator().manual_seed(3)
    orig = _nontrivial(_hf("gemma", "GemmaRMSNorm")(512), 0.0, gen).bfloat16()
    x = torch.randn(16, 512, generator=gen).bfloat16()
    conv = nl.convert(copy.deepcopy(orig))
    assert (conv(x) == orig(x)).float().mean().item() >= 0.999
    own = nl.RMSNorm(512, 1e-6, zero_centered_gamma=True).bfloat16()  # 1 + weight in bf16: not Gemma's numbers
    own.weight = orig.weight
    assert (own(x) == orig(x)).float().mean().item() < 0.95


# ------------------------------------------------------------------------------------------------- probe
class UserRMSNorm(nn.Module):
    """A look-alike that transformers does not define: found by behaviour."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()).to(x.dtype)


class OtherDimRMSNorm(UserRMSNorm):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + self.eps) * self.weight


class AddsRMSNorm(UserRMSNorm):
    def forward(self, x):
        return super().forward(x) + 1e-3


class LearnedEpsRMSNorm(UserRMSNorm):
    def __init__(self, d: int):
        super().__init__(d)
        self.eps = nn.Parameter(torch.tensor(1e-6))


class CenteredLayerNorm(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))
        self.variance_epsilon = 1e-5

    def forward(self, x):
        xf = x.float()
        mu = xf.mean(-1, keepdim=True)
        var = (xf - mu).pow(2).mean(-1, keepdim=True)
        return ((xf - mu) * torch.rsqrt(var + self.variance_epsilon) * self.weight + self.bias).to(x.dtype)


def test_probe_converts_look_alikes_that_match_and_says_how():
    net = nn.Sequential(nn.Linear(16, 16), UserRMSNorm(16), CenteredLayerNorm(16))
    x = torch.randn(4, 7, 16)
    ref = net(x)
    out, rep = nl.convert(net, report=True)
    assert rep.counts() == {"class": 0, "behaviour": 2, "left": 0}
    assert [c.name for c in rep.converted] == ["1", "2"]
    assert isinstance(out[1], nl.RMSNorm) and isinstance(out[2], nl.LayerNorm)
    assert "RMSNorm, rounded once" in rep.converted[0].detail
    torch.testing.assert_close(out(x), ref, rtol=1e-5, atol=1e-5)


class GatedRMSNorm(UserRMSNorm):
    def forward(self, x, gate=None):
        y = super().forward(x)
        return y if gate is None else y * torch.sigmoid(gate)


@pytest.mark.parametrize("cls, reason", [
    (GatedRMSNorm, r"its forward takes \(x, gate=None\), not one tensor"),
    (OtherDimRMSNorm, "no normlab layer matches its outputs"),
    (AddsRMSNorm, "no normlab layer matches its outputs"),
    (LearnedEpsRMSNorm, r"its eps \('eps'\) is a tensor \(learned\)"),
])
def test_probe_refuses_look_alikes_that_differ(cls, reason):
    m = cls(16)
    net = nn.Sequential(m)
    out, rep = nl.convert(net, report=True)
    assert out[0] is m
    assert rep.counts() == {"class": 0, "behaviour": 0, "left": 1}
    assert rep.left[0].name == "0" and rep.left[0].original == cls.__name__
    assert __import__("re").search(reason, rep.left[0].reason), rep.left[0].reason
    assert "left 0 (" in str(rep)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_probe_finds_debertas_casting_order(dtype):
    """DeBERTa's LayerNorm (not in the class tables) rounds x_hat to the input dtype before weight and bias."""
    gen = torch.Generator().manual_seed(5)
    orig = _nontrivial(_hf("deberta", "DebertaLayerNorm")(48), 1.0, gen).to(dtype)
    conv, rep = nl.convert(copy.deepcopy(orig), report=True)
    assert rep.counts() == {"class": 0, "behaviour": 1, "left": 0}
    assert "LayerNorm, rounded to the input dtype before the weight" in rep.converted[0].detail
    x = (torch.randn(4, 7, 48, generator=gen) * 2 + 1).to(dtype)
    a, b = orig(x), conv(x)
    if dtype == torch.bfloat16:  # the casting order kept: bit-identical but for float32 sum-order flips
        assert (a == b).float().mean().item() >= 0.995
    torch.testing.assert_close(b, a, rtol=1e-5 if dtype == torch.float32 else 2 ** -7, atol=1e-5)


def test_probe_leaves_the_module_it_looks_at_untouched():
    m = UserRMSNorm(8)
    with torch.no_grad():
        m.weight.mul_(3)
    before = m.weight.detach().clone()
    nl.convert(nn.Sequential(m), probe=False)  # no probe: nothing converted
    assert type(nl.convert(nn.Sequential(copy.deepcopy(m)), probe=False)[0]) is UserRMSNorm
    twin = nl.convert(nn.Sequential(m))[0]
    assert torch.equal(twin.weight, before) and twin.weight is m.weight and m.weight.dtype == torch.float32


# -------------------------------------------------------------------------------------------- tiny models
def _tiny_llama(kind: str = "llama"):
    cfgs = {"llama": transformers.LlamaConfig, "gemma": transformers.GemmaConfig, "qwen2": transformers.Qwen2Config}
    cfg = cfgs[kind](vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    for n, m in model.named_modules():
        if type(m).__name__.endswith("RMSNorm"):
            _nontrivial(m, 0.0 if kind == "gemma" else 1.0, gen)
    return model


@pytest.mark.parametrize("kind", ["llama", "gemma", "qwen2"])
def test_tiny_causal_lm_converts_every_norm_and_keeps_its_logits(kind):
    model = _tiny_llama(kind)
    norms = sum(type(m).__name__.endswith("RMSNorm") for m in model.modules())
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    ref = model(ids).logits
    conv, rep = nl.convert(copy.deepcopy(model), report=True)
    assert rep.counts()["class"] == norms > 0 and not rep.left
    assert not any(type(m).__name__.endswith("RMSNorm") and not isinstance(m, nl.RMSNorm) for m in conv.modules())
    torch.testing.assert_close(conv(ids).logits, ref, rtol=1e-4, atol=1e-4)


def test_to_torch_takes_twins_back_to_the_original_class_with_the_same_state_dict():
    model = _tiny_llama("gemma")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    classes = {n: type(m) for n, m in model.named_modules()}
    conv = nl.convert(copy.deepcopy(model))
    assert list(conv.state_dict()) == list(sd)
    # train a step on the converted model, save it, load it into the unmodified model: same outputs
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD(conv.parameters(), lr=0.1)
    conv.train()
    conv(ids, labels=ids).loss.backward()
    opt.step()
    conv.eval()
    trained = conv.state_dict()
    fresh = copy.deepcopy(model)
    fresh.load_state_dict(trained)  # normlab's metadata must not shift Gemma's 1 + weight
    torch.testing.assert_close(fresh(ids).logits, conv(ids).logits, rtol=1e-4, atol=1e-4)
    # and the original's state dict (no normlab metadata) loads into the converted model unchanged
    conv2 = nl.convert(copy.deepcopy(model))
    conv2.load_state_dict(sd)
    torch.testing.assert_close(conv2(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-4)
    back = nl.to_torch(conv)
    assert {n: type(m) for n, m in back.named_modules()} == classes
    assert list(back.state_dict()) == list(sd)
    torch.testing.assert_close(back(ids).logits, fresh(ids).logits, rtol=0, atol=0)
    assert back.model.norm.weight is conv.model.norm.weight  # the same tensors, not copies


def test_converted_model_keeps_its_dtype():
    model = _tiny_llama("llama").to(torch.bfloat16)
    conv = nl.convert(copy.deepcopy(model))
    assert {p.dtype for p in conv.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, 96, (2, 9))
    out, ref = conv(ids).logits, model(ids).logits
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("make, shape", [
    (lambda: CastRMSNorm(16, 1e-6, cast="input"), (4, 16)),
    (lambda: CastRMSNorm(16, 1e-6, cast="weight"), (4, 16)),
    (lambda: CastRMSNorm(16, 1e-6, cast="output", zero_centered_gamma=True), (4, 16)),
    (lambda: CastLayerNorm(16, 1e-6, cast="input"), (4, 16)),
    (lambda: ChannelsFirstLayerNorm(16), (2, 16, 3, 3)),
])
def test_compile_has_no_graph_break_at_the_twins(make, shape):
    net = nn.Sequential(nn.Identity(), make()).bfloat16()
    explained = torch._dynamo.explain(net)(torch.randn(shape, dtype=torch.bfloat16))
    assert explained.graph_break_count == 0, explained.break_reasons


# ----------------------------------------------------------------------------------------- first hour (#27)
def test_convert_names_what_it_expected():
    with pytest.raises(TypeError, match=r"convert expects an nn.Module \(a model or a layer whose norms to "
                                        r"replace\), got int: 42"):
        nl.convert(42)


def test_fold_batchnorm_returns_the_model_and_the_report_on_request():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    folded = nl.fold_batchnorm(net)
    assert isinstance(folded, nn.Module) and isinstance(folded[1], nn.Identity)
    folded, report = nl.fold_batchnorm(net, report=True)
    assert [e.folded for e in report] == [True]


# ------------------------------------------------------------------------------------------------- timm
def _timm_norm_module():
    """timm.layers.norm: imported normally, or -- where timm is installed but its package import fails (it
    needs torchvision, whose PyPI wheel does not load against a CPU-only torch) -- loaded alone under its
    own name (it imports only timm.layers.fast_norm)."""
    import importlib.util
    import sys
    import types

    try:
        return importlib.import_module("timm.layers.norm")
    except ModuleNotFoundError as e:
        if e.name == "timm":
            pytest.skip("timm is not installed")
    except Exception:
        pass
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("timm is not installed")
    root = list(spec.submodule_search_locations)[0]
    saved = {k: sys.modules.get(k) for k in ("timm", "timm.layers")}
    try:
        for name, path in (("timm", root), ("timm.layers", os.path.join(root, "layers"))):
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
        for sub in ("fast_norm", "norm"):
            full = f"timm.layers.{sub}"
            s = importlib.util.spec_from_file_location(full, os.path.join(root, "layers", f"{sub}.py"))
            mod = importlib.util.module_from_spec(s)
            sys.modules[full] = mod
            s.loader.exec_module(mod)
        return sys.modules["timm.layers.norm"]
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("cls, shape", [("LayerNorm", (2, 5, 24)), ("LayerNorm2d", (2, 24, 3, 4)),
                                        ("RmsNorm", (2, 5, 24)), ("GroupNorm1", (2, 24, 3, 4))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_timm_norms_match_the_original(cls, shape, dtype):
    norm = _timm_norm_module()
    gen = torch.Generator().manual_seed(4)
    orig = _nontrivial(getattr(norm, cls)(24), 1.0, gen).to(dtype)
    conv, rep = nl.convert(copy.deepcopy(orig), report=True)
    assert rep.counts() == {"class": 1, "behaviour": 0, "left": 0}, str(rep)
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(dtype).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    a, b = orig(x), conv(x2)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=1e-2)
    torch.testing.assert_close(b, a, **tol)
    dy = torch.randn(shape, generator=gen).to(dtype)
    a.backward(dy)
    b.backward(dy)
    assert _rel(x2.grad, x.grad) <= (1e-5 if dtype == torch.float32 else 2e-2)
    back = nl.to_torch(conv)
    assert type(back) is type(orig) and list(back.state_dict()) == list(orig.state_dict())

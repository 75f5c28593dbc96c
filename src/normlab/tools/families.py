r"""The normalization classes of transformers and timm that :func:`normlab.convert` knows by class.

Each table lists exact class names whose ``forward`` computes one formula with one casting order (the
lists were read off transformers 5.24's sources: grouped by identical ``forward`` code, then each class's
whole source, its helpers such as ``_norm`` included, compared with its family's reference -- Qwen4Exp's
RMSNorm shares Gemma's ``forward`` but normalizes in groups, and is left to the probe); a module
matches only if its class has that name *and* is defined in the library's own package, so a user's
class of the same name is probed instead (:mod:`normlab.tools.probe`).  Everything else that looks
like a norm is probed by behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..layers import GroupNorm, LayerNorm, Norm
from ..layers._swap import tensor_kwargs
from .twins import CastRMSNorm, ChannelsFirstLayerNorm

__all__ = ["hf_builder", "timm_builder", "HF_FAMILIES", "TIMM_NORMS", "eps_of"]

#: RMSNorm, ``weight * (x / rms(x)).to(input_dtype)`` (Llama and its copies)
LLAMA = frozenset({
    "AXK1RMSNorm", "AXK2RMSNorm", "Aimv2RMSNorm", "Apertus1p5TextRMSNorm", "ApertusRMSNorm", "ArceeRMSNorm",
    "AriaTextRMSNorm", "BailingHybridRMSNorm", "BambaRMSNorm", "BitNetRMSNorm", "BltRMSNorm", "ChameleonRMSNorm",
    "ClvpRMSNorm", "Cohere2MoeRMSNorm", "Cosmos3EdgeTextRMSNorm", "CsmRMSNorm", "CwmRMSNorm",
    "DeepseekOcr2TextRMSNorm", "DeepseekOcr2VisionRMSNorm", "DeepseekV2RMSNorm", "DeepseekV32RMSNorm",
    "DeepseekV3RMSNorm", "Deimv2RMSNorm", "DiaRMSNorm", "DiffLlamaRMSNorm", "DogeRMSNorm", "Dots1RMSNorm",
    "Dots3NoteRMSNorm", "Emu3RMSNorm", "Ernie4_5RMSNorm", "Ernie4_5_MoeRMSNorm", "Ernie4_5_VLMoeRMSNorm",
    "EuroBertRMSNorm", "EvollaRMSNorm", "Exaone4RMSNorm", "Exaone4_5_RMSNorm", "ExaoneMoeRMSNorm", "FalconH1RMSNorm",
    "FalconMambaRMSNorm", "Glm4MoeLiteRMSNorm", "Glm4MoeRMSNorm", "Glm4RMSNorm", "Glm4vMoeRMSNorm",
    "Glm4vMoeTextRMSNorm", "Glm4vRMSNorm", "Glm5NextRMSNorm", "Glm5NextTextRMSNorm", "GlmImageRMSNorm",
    "GlmMoeDsaRMSNorm", "GlmOcrRMSNorm", "GlmRMSNorm", "Granite4VisionTextRMSNorm", "GraniteDoclingTextRMSNorm",
    "GraniteMoeHybridRMSNorm", "GraniteMoeRMSNorm", "GraniteMoeSWARMSNorm", "GraniteMoeSharedRMSNorm",
    "GraniteRMSNorm", "GraniteSWARMSNorm", "HYV3RMSNorm", "HYV4RMSNorm", "HYV4VLRMSNorm", "HiggsAudioV2RMSNorm",
    "HunYuanDenseV1RMSNorm", "HunYuanMoEV1RMSNorm", "HunYuanVLRMSNorm", "HyperCLOVAXRMSNorm", "Idefics2RMSNorm",
    "Idefics3RMSNorm", "InklingRMSNorm", "InternVLVisionRMSNorm", "JambaRMSNorm", "JetMoeRMSNorm",
    "KimiLinearRMSNorm", "Kolibri1RMSNorm", "LagunaRMSNorm", "Lfm2MoeRMSNorm", "Lfm2RMSNorm", "Lfm3RMSNorm",
    "Lfm3VlVisionRMSNorm", "LightOnOcrRMSNorm", "Llama4TextRMSNorm", "LlamaRMSNorm", "LongcatFlashRMSNorm",
    "MellumRMSNorm", "MiMoV2FlashRMSNorm", "MiniCPM3RMSNorm", "MiniMaxM2RMSNorm", "MiniMaxRMSNorm",
    "Ministral3RMSNorm", "MinistralRMSNorm", "Mistral3RMSNorm", "Mistral4RMSNorm", "MistralLarge4RMSNorm",
    "MistralRMSNorm", "MixtralRMSNorm", "MllamaTextRMSNorm", "Molmo2RMSNorm", "MuseGlimmerAssistantRMSNorm",
    "NeuCodecRMSNorm", "OlmoeRMSNorm", "Ovis2RMSNorm", "PaddleOCRRMSNorm", "PeAudioEncoderRMSNorm",
    "PeAudioVideoEncoderRMSNorm", "PeVideoEncoderRMSNorm", "Phi3RMSNorm", "Phi4MultimodalRMSNorm", "PixtralRMSNorm",
    "QianfanOCRVisionRMSNorm", "Qwen2MoeRMSNorm", "Qwen2RMSNorm", "Qwen2VLRMSNorm", "Qwen2_5OmniRMSNorm",
    "Qwen2_5_VLRMSNorm", "Qwen3MoeRMSNorm", "Qwen3OmniMoeCode2WavRMSNorm", "Qwen3OmniMoeRMSNorm",
    "Qwen3OmniMoeTextRMSNorm", "Qwen3OmniMoeThinkerTextRMSNorm", "Qwen3RMSNorm", "Qwen3VLMoeTextRMSNorm",
    "Qwen3VLTextRMSNorm", "Sapiens2RMSNorm", "SeedOssRMSNorm", "SmolLM3RMSNorm", "SolarOpenRMSNorm",
    "TimesFm2_5RMSNorm", "TimesFmRMSNorm", "UltraVBertRMSNorm", "UltrabertRMSNorm", "UnlimitedOcrTextRMSNorm",
    "VibeVoiceAcousticTokenizerRMSNorm", "VibeVoiceAsrRMSNorm", "VibeVoiceRMSNorm", "VoxtralRealtimeRMSNorm",
    "Xcodec2RMSNorm", "YoutuRMSNorm", "Zamba2RMSNorm", "ZambaRMSNorm", "ZayaRMSNorm",
})
#: RMSNorm, ``x / rms(x)`` in float32 rounded to the weight's dtype if half, then ``weight *`` (T5)
T5 = frozenset({
    "IdeficsRMSNorm", "Kosmos2_5LayerNorm", "LongT5LayerNorm", "MT5LayerNorm", "Pix2StructLayerNorm",
    "Pop2PianoLayerNorm", "SwitchTransformersLayerNorm", "T5LayerNorm", "UMT5LayerNorm", "UdopLayerNorm",
})
#: RMSNorm, ``(x / rms(x) * (1 + weight.float())).type_as(x)``: a zero-centered gamma, one rounding (Gemma)
GEMMA = frozenset({
    "Gemma2RMSNorm", "Gemma3RMSNorm", "GemmaRMSNorm", "MiniMaxM3VLRMSNorm", "MuseGlimmerTextCenteredRMSNorm",
    "Qwen3NextRMSNorm", "Qwen3_5MoeRMSNorm", "Qwen3_5RMSNorm", "RecurrentGemmaRMSNorm",
    "Step3p7RMSNorm", "T5Gemma2RMSNorm", "T5GemmaRMSNorm", "VaultGemmaRMSNorm",
})
#: RMSNorm in float32 with a plain weight (or none), one rounding (OLMo-2, Gemma-3n, Moshi, Helium, GPT-OSS)
SCALED = frozenset({
    "AfmoeRMSNorm", "BeamRMSNorm", "DiffusionGemmaRMSNorm", "EmbeddingGemma2RMSNorm", "FlexOlmoRMSNorm",
    "FlintRMSNorm", "Gemma3nRMSNorm", "Gemma4RMSNorm", "Gemma4UnifiedRMSNorm", "GptOssRMSNorm", "HeliumRMSNorm",
    "Inkling2LoopRMSNorm", "Inkling2RMSNorm", "KyutaiSpeechToTextRMSNorm", "LaraMiniRMSNorm", "MoshiRMSNorm",
    "MuseGlimmerRMSNorm", "MuseSparkRMSNorm", "NeoMMERMSNorm", "Olmo2RMSNorm", "Olmo3RMSNorm", "OlmoHybridRMSNorm",
    "OpenAIPrivacyFilterRMSNorm",
})
#: LayerNorm without bias in float32, one rounding; the weight may be (heads, head_dim) for QK-norm (Cohere)
COHERE = frozenset({
    "Cohere2LayerNorm", "Cohere2MoeLayerNorm", "CohereCompassLayerNorm", "CohereLayerNorm",
})
#: ``nn.LayerNorm`` with ``data_format``: channels_last is a LayerNorm, channels_first a LayerNorm2d (ConvNeXt)
CONVNEXT = frozenset({
    "ConvNextLayerNorm", "ConvNextV2LayerNorm", "DINOv3ConvNextLayerNorm", "DeepseekOcr2SamLayerNorm",
    "DeepseekVLHybridLayerNorm", "EdgeTamLayerNorm", "EdgeTamVideoLayerNorm", "GotOcr2LayerNorm", "LwDetrLayerNorm",
    "PPFormulaNetLayerNorm", "RfDetrLayerNorm", "SLANeXtLayerNorm", "Sam2LayerNorm", "Sam2VideoLayerNorm",
    "Sam3TrackerLayerNorm", "Sam3TrackerVideoLayerNorm", "SamHQLayerNorm", "SamLayerNorm", "SegGptLayerNorm",
    "UnlimitedOcrSamLayerNorm",
})
#: LayerNorm without parameters in float32, eps 1e-5 (OLMo)
OLMO = frozenset({"OlmoLayerNorm"})

HF_FAMILIES: dict[str, frozenset[str]] = {"llama": LLAMA, "t5": T5, "gemma": GEMMA, "scaled": SCALED,
                                          "cohere": COHERE, "convnext": CONVNEXT, "olmo": OLMO}

#: the attributes an eps is read from, in this order
EPS_NAMES = ("eps", "variance_epsilon", "epsilon")

Builder = Callable[[nn.Module], "nn.Module | str"]


def eps_of(m: nn.Module, default: float | None = None) -> float | str:
    """``m``'s eps, whatever the attribute's name (:data:`EPS_NAMES`); a reason string if there is none or it
    is a tensor (a learned or buffered eps has no fixed value to build a twin with)."""
    for name in EPS_NAMES:
        v = m.__dict__.get(name, m._parameters.get(name, m._buffers.get(name)))
        if isinstance(v, torch.Tensor):
            return f"its eps ({name!r}) is a tensor{' (learned)' if isinstance(v, nn.Parameter) else ''}, not a number"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    if default is not None:
        return default
    return f"it has no eps attribute ({', '.join(EPS_NAMES)})"


def unexpected_state(m: nn.Module, params: tuple[str, ...] = ("weight", "bias")) -> str:
    """'' if ``m`` holds no parameter but ``params``, no buffer, no child with state and no hook; else why not
    (a twin would drop what the extra state does)."""
    extra = [n for n, p in m._parameters.items() if p is not None and n not in params]
    if extra:
        return f"it has parameters other than {'/'.join(params)} ({', '.join(extra)})"
    bufs = [n for n, b in m._buffers.items() if b is not None]
    if bufs:
        return f"it has buffers ({', '.join(bufs)})"
    kids = [n for n, c in m.named_children() if any(True for _ in c.parameters()) or any(True for _ in c.buffers())]
    if kids:
        return f"it has submodules with state ({', '.join(kids)})"
    if m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None):
        return "it has hooks (the twin would not run them)"
    return ""


def _weight_1d(m: nn.Module) -> tuple[torch.Tensor | None, str]:
    w = m._parameters.get("weight")
    if w is not None and w.ndim != 1:
        return None, f"its weight has shape {tuple(w.shape)}, not (D,)"
    return w, ""


def _rms(cast: str, zero_centered: bool = False) -> Builder:
    def build(m: nn.Module) -> nn.Module | str:
        eps = eps_of(m)
        w, why = _weight_1d(m)
        why = why or unexpected_state(m, ("weight",))
        if isinstance(eps, str) or why:
            return eps if isinstance(eps, str) else why
        if w is None:  # Gemma-3n's with_scale=False: no weight, no stored size
            return Norm(None, dims=-1, center=False, affine=False, eps=eps)
        return CastRMSNorm(w.shape[0], eps, True, zero_centered_gamma=zero_centered, cast=cast, **tensor_kwargs(m))
    return build


def _cohere(m: nn.Module) -> nn.Module | str:
    eps = eps_of(m)
    why = unexpected_state(m, ("weight",))
    w = m._parameters.get("weight")
    if isinstance(eps, str) or why or w is None:
        return eps if isinstance(eps, str) else (why or "it has no weight")
    if w.ndim == 1:
        return LayerNorm(w.shape[0], eps, bias=False, **tensor_kwargs(m))
    # QK-norm: the last dim normalized, a weight per (head, feature)
    return Norm(tuple(w.shape), dims=-1, param_dims=tuple(range(-w.ndim, 0)), eps=eps, bias=False,
                **tensor_kwargs(m))


def _olmo(m: nn.Module) -> nn.Module | str:
    why = unexpected_state(m, ())
    shape = getattr(m, "normalized_shape", None)
    if why or not shape:
        return why or "it has no normalized_shape"
    return LayerNorm(tuple(shape), 1e-5, elementwise_affine=False)


def _layernorm_like(m: nn.Module, channels_first: bool) -> nn.Module | str:
    """An ``nn.LayerNorm`` subclass computing F.layer_norm over its trailing dims, or over dim 1 if channels_first."""
    why = unexpected_state(m)
    if why:
        return why
    shape, kw = tuple(m.normalized_shape), tensor_kwargs(m)
    affine, bias = m.weight is not None, m.bias is not None
    if not channels_first:
        return LayerNorm(shape, m.eps, affine, bias, **kw)
    if len(shape) != 1:
        return f"channels-first over {len(shape)} dims (normlab's LayerNorm2d normalizes one)"
    return ChannelsFirstLayerNorm(shape[0], m.eps, affine, **kw, bias=bias)


def _convnext(m: nn.Module) -> nn.Module | str:
    fmt = getattr(m, "data_format", None)
    if fmt not in ("channels_last", "channels_first"):
        return f"data_format={fmt!r} (known: channels_last, channels_first)"
    return _layernorm_like(m, fmt == "channels_first")


_HF_BUILDERS: dict[str, Builder] = {
    "llama": _rms("input"), "t5": _rms("weight"), "gemma": _rms("output", zero_centered=True),
    "scaled": _rms("output"), "cohere": _cohere, "convnext": _convnext, "olmo": _olmo,
}


def hf_builder(t: type) -> tuple[str, Builder] | None:
    """``(family, builder)`` for a class defined in transformers under a name of :data:`HF_FAMILIES`, else None."""
    if not (getattr(t, "__module__", "") or "").startswith("transformers."):
        return None
    for family, names in HF_FAMILIES.items():
        if t.__name__ in names:
            return family, _HF_BUILDERS[family]
    return None


# ----------------------------------------------------------------------------------------------- timm
def _timm_fast(m: nn.Module) -> str:
    return ("timm's fast-norm path is on (set_fast_norm): it computes in the autocast dtype"
            if getattr(m, "_fast_norm", False) else "")


def _timm_layernorm(channels_first: bool) -> Builder:
    return lambda m: _timm_fast(m) or _layernorm_like(m, channels_first)


def _timm_rmsnorm(m: nn.Module) -> nn.Module | str:
    why = _timm_fast(m) or unexpected_state(m, ("weight",))
    if why:
        return why
    shape = tuple(m.normalized_shape)
    if len(shape) != 1:
        return f"RmsNorm over {len(shape)} dims"
    return CastRMSNorm(shape[0], m.eps, m.weight is not None, cast="output", **tensor_kwargs(m))


def _timm_groupnorm1(m: nn.Module) -> nn.Module | str:
    why = _timm_fast(m) or unexpected_state(m)
    if why:
        return why
    return GroupNorm(1, m.num_channels, m.eps, m.affine, **tensor_kwargs(m), bias=m.bias is not None)


#: timm's norm layers (timm.layers.norm) by class name
TIMM_NORMS: dict[str, Builder] = {
    "LayerNorm": _timm_layernorm(False), "LayerNorm2d": _timm_layernorm(True), "RmsNorm": _timm_rmsnorm,
    "GroupNorm1": _timm_groupnorm1,
}


def timm_builder(t: type) -> Builder | None:
    """The builder for a norm class defined in timm (by its exact name), else None."""
    if (getattr(t, "__module__", "") or "").split(".")[0] != "timm":
        return None
    return TIMM_NORMS.get(t.__name__)

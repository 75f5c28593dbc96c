"""Hugging Face architectures for the doctor's real-model sweep: tiny configs, random weights, no download.

``MODELS`` maps a name to a builder ``build(tf) -> (model, inputs, kwargs)``; ``FAST`` names those the default test
run covers (the rest are marked slow).  ``EXPECTED`` lists, per model, the warnings the doctor gives on the clean
model with why each is true; every other warning, and any error, is a false alarm.  The sizes are chosen where the
issue found false alarms: a ConvNeXt stage whose channel count equals its map size, a Whisper encoder whose
d_model equals its positions, BEiT with mean pooling, EfficientNet's N(0, 0.02) BatchNorm gamma.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

Built = tuple[torch.nn.Module, tuple, dict]


def transformers_or_skip():
    """The transformers module, quiet; the test is skipped where it is not installed."""
    import pytest

    tf = pytest.importorskip("transformers", reason="Hugging Face transformers is not installed (a test-only "
                                                    "dependency in requirements.lock)")
    tf.logging.set_verbosity_error()
    return tf


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(b: int = 2, t: int = 12, vocab: int = 100) -> torch.Tensor:
    return torch.randint(3, vocab, (b, t), generator=_g())


def _mask(b: int = 2, t: int = 12) -> torch.Tensor:
    m = torch.ones(b, t, dtype=torch.long)
    m[1, t - 3:] = 0
    return m


def _images(b: int = 2, c: int = 3, s: int = 32) -> torch.Tensor:
    return torch.randn(b, c, s, s, generator=_g())


TEXT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
DEC = dict(TEXT, num_key_value_heads=2, max_position_embeddings=64)


def _lm(cls: str, cfg: str, **kw) -> Callable[[Any], Built]:
    def build(tf) -> Built:
        model = getattr(tf, cls)(getattr(tf, cfg)(**kw))
        return model, (_ids(),), {"attention_mask": _mask()}
    return build


def t5(tf) -> Built:
    cfg = tf.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, pad_token_id=0)
    ids = _ids()
    return tf.T5ForConditionalGeneration(cfg), (ids,), {"attention_mask": _mask(), "decoder_input_ids": ids[:, :6]}


def falcon(tf) -> Built:
    cfg = tf.FalconConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          new_decoder_architecture=False)
    return tf.FalconForCausalLM(cfg), (_ids(),), {"attention_mask": _mask()}


def bloom(tf) -> Built:
    return tf.BloomForCausalLM(tf.BloomConfig(vocab_size=100, hidden_size=32, n_layer=2, n_head=4)), (_ids(),), \
        {"attention_mask": _mask()}


def gpt_neox(tf) -> Built:
    cfg = tf.GPTNeoXConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64)
    return tf.GPTNeoXForCausalLM(cfg), (_ids(),), {"attention_mask": _mask()}


def opt(tf) -> Built:
    cfg = tf.OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
                       word_embed_proj_dim=32, max_position_embeddings=64)
    return tf.OPTForCausalLM(cfg), (_ids(),), {"attention_mask": _mask()}


def mobilebert(tf) -> Built:
    cfg = tf.MobileBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, embedding_size=16, intra_bottleneck_size=16,
                              num_feedforward_networks=2)
    return tf.MobileBertModel(cfg), (_ids(),), {"attention_mask": _mask()}


VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)


def swin(tf) -> Built:
    cfg = tf.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)
    return tf.SwinModel(cfg), (_images(),), {}


def deit(tf) -> Built:
    return tf.DeiTModel(tf.DeiTConfig(**VISION)), (_images(),), {}


def beit(tf) -> Built:  # mean pooling: the final LayerNorm sits in the pooler, after the mean
    return tf.BeitModel(tf.BeitConfig(**VISION, use_mean_pooling=True)), (_images(),), {}


def convnext(tf) -> Built:  # stage 1: 16 channels on a 16 x 16 map (ConvNeXt-T stage 1 at 384 px: 96 on 96)
    cfg = tf.ConvNextConfig(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1])
    return tf.ConvNextModel(cfg), (_images(s=64),), {}


def convnextv2(tf) -> Built:
    cfg = tf.ConvNextV2Config(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[16, 32], depths=[1, 1])
    return tf.ConvNextV2Model(cfg), (_images(s=64),), {}


def resnet(tf) -> Built:
    cfg = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    return tf.ResNetModel(cfg), (_images(b=16),), {}


def regnet(tf) -> Built:
    cfg = tf.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8)
    return tf.RegNetModel(cfg), (_images(b=16),), {}


def mobilenet_v2(tf) -> Built:
    cfg = tf.MobileNetV2Config(image_size=32, depth_multiplier=0.35)
    return tf.MobileNetV2Model(cfg), (_images(b=16),), {}


def efficientnet(tf) -> Built:
    cfg = tf.EfficientNetConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320)
    return tf.EfficientNetModel(cfg), (_images(b=16),), {}


def detr(tf) -> Built:
    backbone = tf.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1],
                               layer_type="basic", out_features=["stage4"])
    cfg = tf.DetrConfig(use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
                        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=5)
    return tf.DetrModel(cfg), (_images(s=64),), {}


def wav2vec2(tf) -> Built:  # layer-norm feature encoder (the "large" flavour): 32 channels over 32 frames
    cfg = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                            conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), feat_extract_norm="layer",
                            do_stable_layer_norm=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    return tf.Wav2Vec2Model(cfg), (torch.randn(2, 335, generator=_g()),), {}


def whisper(tf) -> Built:  # the encoder's d_model equals its number of positions (32)
    cfg = tf.WhisperConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16,
                           max_source_positions=32, max_target_positions=32, pad_token_id=0,
                           decoder_start_token_id=1)
    feats = torch.randn(2, 16, 64, generator=_g())
    return tf.WhisperModel(cfg), (feats,), {"decoder_input_ids": _ids(t=6)}


def clip(tf) -> Built:
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=32)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
                  patch_size=8)
    cfg = tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return tf.CLIPModel(cfg), (), {"input_ids": _ids(), "pixel_values": _images(), "attention_mask": _mask()}


def segformer(tf) -> Built:
    cfg = tf.SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                             patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=32)
    return tf.SegformerModel(cfg), (_images(),), {}


MODELS: dict[str, Callable[[Any], Built]] = {
    "t5": t5,
    "llama": _lm("LlamaForCausalLM", "LlamaConfig", **DEC),
    "mistral": _lm("MistralForCausalLM", "MistralConfig", **DEC),
    "qwen2": _lm("Qwen2ForCausalLM", "Qwen2Config", **DEC),
    "falcon": falcon,
    "bloom": bloom,
    "gpt_neox": gpt_neox,
    "opt": opt,
    "bert": _lm("BertModel", "BertConfig", **TEXT),
    "roberta": _lm("RobertaModel", "RobertaConfig", **TEXT, pad_token_id=1),
    "distilbert": _lm("DistilBertModel", "DistilBertConfig", vocab_size=100, dim=32, n_layers=2, n_heads=4,
                      hidden_dim=64),
    "albert": _lm("AlbertModel", "AlbertConfig", **TEXT, embedding_size=16),
    "electra": _lm("ElectraModel", "ElectraConfig", **TEXT, embedding_size=16),
    "mobilebert": mobilebert,
    "swin": swin,
    "deit": deit,
    "beit": beit,
    "convnext": convnext,
    "convnextv2": convnextv2,
    "resnet": resnet,
    "regnet": regnet,
    "mobilenet_v2": mobilenet_v2,
    "efficientnet": efficientnet,
    "detr": detr,
    "wav2vec2": wav2vec2,
    "whisper": whisper,
    "clip": clip,
    "segformer": segformer,
}

_KERAS = ("Hugging Face builds these BatchNorm2d with momentum={m} (modeling_{f}.py), the TensorFlow value of the "
          "decay of the running average; torch's momentum weighs the new batch, so the running statistics are "
          "{p} the last batch: a true warning (ported from Keras's convention), not an error: eval still works")

#: the findings a clean model truly deserves: model -> {(check, module or "*"): why it is true}
EXPECTED: dict[str, dict[tuple[str, str], str]] = {
    "mobilenet_v2": {("bn-momentum-convention", "*"): _KERAS.format(m=0.997, f="mobilenet_v2", p="99.7%")},
    "efficientnet": {("bn-momentum-convention", "*"): _KERAS.format(m=0.99, f="efficientnet", p="99%") +
                     " (config.batch_norm_momentum; the expansion BatchNorm keeps torch's 0.1)"},
}

#: models with no normalizer to find: MobileBERT's default NoNorm is an elementwise affine (x * gamma + beta)
NO_NORMS = ("mobilebert",)

#: in the default test run (each under a few seconds here); the rest are marked slow
FAST = ("llama", "bert", "beit", "convnext", "efficientnet", "whisper", "wav2vec2")

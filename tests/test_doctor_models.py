"""normlab.doctor on real architectures: clean ones raise no error (and here no warning), planted bugs are found.

torchvision's ResNet-18 and ConvNeXt-Tiny are rebuilt from their published architecture in doctor_zoo (torchvision
cannot be imported next to this CPU torch build); Hugging Face's BERT, GPT-2, Llama and ViT are built from small
configs with random weights (no download), a test-only dependency pinned in requirements.lock.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import doctor_zoo as zoo
from doctor_hf import transformers_or_skip
import normlab as nl


def _clean(d: nl.Diagnosis) -> None:
    failed = {k: v for k, v in d.checks.items() if v.startswith("failed")}
    assert not failed, failed
    assert not d.errors and not d.warnings, [(f.check, f.module, f.severity) for f in d.findings]


def test_resnet18_is_clean_in_train_and_eval():
    _clean(nl.doctor(zoo.resnet18(), torch.randn(16, 3, 32, 32), train_step=True))
    _clean(nl.doctor(zoo.resnet18().eval(), torch.randn(2, 3, 32, 32)))


def test_resnet18_with_planted_bugs():
    model = zoo.resnet18()
    model.layer2[0].bn1.momentum = 0.99
    nn.init.zeros_(model.bn1.weight)  # the stem's BatchNorm, on the only path: an error
    model.layer3[1].bn2.weight.requires_grad_(False)
    model.layer3[1].bn2.bias.requires_grad_(False)
    d = nl.doctor(model, torch.randn(16, 3, 32, 32), optimizer=torch.optim.SGD(model.parameters(), lr=0.1,
                                                                                weight_decay=1e-4))
    got = {(f.check, f.module, f.severity) for f in d.findings}
    assert ("bn-momentum-convention", "layer2.0.bn1", "warning") in got
    assert ("frozen-bn-updates", "layer3.1.bn2", "warning") in got
    assert ("norm-weight-decay", "bn1", "warning") in got
    assert [(f.check, f.module) for f in d.errors] == [("zero-gamma", "bn1")]


def test_convnext_tiny_is_clean():
    model = zoo.convnext_tiny()
    d = nl.doctor(model, torch.randn(2, 3, 32, 32))
    _clean(d)
    kinds = {n["module"]: n["kind"] for n in d.norms}
    assert kinds["features.0.1"] == "layer (channels-first)"  # torchvision's LayerNorm2d: found by probing
    assert kinds["features.1.0.block.2"] == "layer"  # the channels-last LayerNorm after the permute
    assert len(kinds) == 18 + 3 + 2  # blocks, downsampling layers, stem and head


def test_convnext_with_a_last_dim_layernorm():
    model = zoo.convnext_tiny(stages=((16, 32, 1), (32, None, 1)))
    model.features[2][0] = nn.LayerNorm(16, eps=1e-6)  # channels-first input: normalizes the width (16)
    d = nl.doctor(model, torch.randn(2, 3, 64, 64))
    assert [(f.check, f.module) for f in d.errors] == [("last-dim-trap", "features.2.0")]


# ------------------------------------------------------------------------------------------ Hugging Face
@pytest.fixture(scope="module")
def hf():
    return transformers_or_skip()


SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)


def _ids_mask():
    ids = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(4, 16, dtype=torch.long)
    mask[1, 10:] = 0
    mask[3, 5:] = 0
    return ids, mask


def _bert(tf, **kw):
    return tf.BertModel(tf.BertConfig(vocab_size=100, **SMALL, **kw))


def _gpt2(tf):
    return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=3, n_head=4, n_positions=32))


def _llama(tf):
    return tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=100, num_key_value_heads=2, **SMALL))


def _vit(tf):
    return tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, **SMALL))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_is_clean(hf, attn):
    ids, mask = _ids_mask()
    model = _bert(hf, attn_implementation=attn)
    d = nl.doctor(model, ids, {"attention_mask": mask}, train_step=True)
    _clean(d)
    assert len(d.norms) == 1 + 2 * SMALL["num_hidden_layers"]


def test_gpt2_is_clean_and_finds_a_missing_final_norm(hf):
    ids, mask = _ids_mask()
    model = _gpt2(hf)
    _clean(nl.doctor(model, ids, {"attention_mask": mask}, causal=True, train_step=True,
                     optimizer=torch.optim.AdamW(nl.param_groups(model, 0.1))))
    model.transformer.ln_f = nn.Identity()
    d = nl.doctor(model, ids)
    assert [(f.check, f.module, f.severity) for f in d.findings] == [("missing-final-norm", "lm_head", "warning")]


def test_llama_is_clean_in_float32_and_bf16(hf):
    ids, mask = _ids_mask()
    model = _llama(hf)
    d = nl.doctor(model, ids, {"attention_mask": mask}, causal=True, train_step=True)
    _clean(d)
    assert {n["class"] for n in d.norms} == {"LlamaRMSNorm"} and all(n["how"] == "probe" for n in d.norms)
    _clean(nl.doctor(model.to(torch.bfloat16), ids, {"attention_mask": mask}))  # its statistics are float32


def test_llama_with_planted_bugs(hf):
    ids, _ = _ids_mask()
    model = _llama(hf)
    model.model.layers[1].post_attention_layernorm.variance_epsilon = 0.0
    with torch.no_grad():
        model.model.norm.weight.zero_()  # the final norm: every path to the logits goes through it
    d = nl.doctor(model, ids, optimizer=torch.optim.AdamW(model.parameters(), weight_decay=0.1))
    errors = {(f.check, f.module) for f in d.errors}
    assert errors == {("eps-too-small", "model.layers.1.post_attention_layernorm"), ("zero-gamma", "model.norm")}
    assert ("norm-weight-decay", "model.layers.0.input_layernorm") in {(f.check, f.module) for f in d.warnings}


def test_vit_is_clean(hf):
    _clean(nl.doctor(_vit(hf), torch.randn(4, 3, 32, 32), train_step=True))


def test_bert_post_norm_mixed_with_a_pre_norm_block(hf):
    ids, _ = _ids_mask()
    model = _bert(hf)
    layer = model.encoder.layer[1]

    class PreNormLayer(nn.Module):  # a block rewritten as pre-norm in a post-norm encoder
        def __init__(self, d: int = 32):
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))

        def forward(self, hidden_states, *args, **kwargs):
            return hidden_states + self.ff(self.ln(hidden_states))
    model.encoder.layer[1] = PreNormLayer()
    assert layer is not model.encoder.layer[1]
    d = nl.doctor(model, ids)
    assert not [f for f in d.findings if f.check == "mixed-placement"]  # different classes: not one stack

"""The doctor on Hugging Face architectures built from tiny configs (random weights, no download).

On a clean model the doctor raises no error, and every warning it gives is listed in
``doctor_hf.EXPECTED`` with why it is true.  The models are sized where round 1 gave false alarms (a ConvNeXt stage
whose channels equal its map size, Whisper's d_model equal to its positions, wav2vec2's 32 channels over 32
frames, BEiT's mean pooling, EfficientNet's N(0, 0.02) BatchNorm gamma).  Each is checked in training mode with one
train step and in eval mode.
"""

from __future__ import annotations

import pytest
import torch

import doctor_hf as H
import normlab as nl


@pytest.fixture(scope="module")
def tf():
    return H.transformers_or_skip()


def _params(name: str):
    return pytest.param(name, marks=() if name in H.FAST else pytest.mark.slow)


def unexpected(name: str, d: nl.Diagnosis) -> list[tuple[str, str, str]]:
    """The errors and warnings of ``d`` that ``EXPECTED`` does not list for ``name``."""
    ok = H.EXPECTED.get(name, {})
    return [(f.check, f.module, f.severity) for f in d.findings if f.severity != "info"
            and (f.check, f.module) not in ok and (f.check, "*") not in ok]


@pytest.mark.parametrize("name", [_params(n) for n in H.MODELS])
def test_clean_hf_model_has_no_false_alarm(tf, name):
    torch.manual_seed(0)
    model, args, kwargs = H.MODELS[name](tf)
    for d in (nl.doctor(model, args, kwargs, train_step=True), nl.doctor(model.eval(), args, kwargs)):
        failed = {k: v for k, v in d.checks.items() if v.startswith("failed")}
        assert not failed, failed
        assert not d.errors, [(f.check, f.module, f.message) for f in d.errors]  # a CI gate on errors passes
        assert not unexpected(name, d), [(f.check, f.module, f.message) for f in d.findings]
        assert bool(d.norms) != (name in H.NO_NORMS), [n["module"] for n in d.norms]

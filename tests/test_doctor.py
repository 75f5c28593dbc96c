"""normlab.doctor: each planted bug found with the right id on the right module, the fixed model clean, the
model left exactly as it was, norms found by what they compute, nl.param_groups, the report and the CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doctor_zoo as zoo
import normlab as nl
from normlab.cli import main
from normlab.doctor import CHECKS, Diagnosis, DoctorInputError, Finding


def _triples(d: Diagnosis, severity: str | None = None) -> list[tuple[str, str, str]]:
    return [(f.check, f.module, f.severity) for f in d.findings if severity is None or f.severity == severity]


def _no_failed_checks(d: Diagnosis) -> None:
    failed = {k: v for k, v in d.checks.items() if v.startswith("failed")}
    assert not failed, failed


# ------------------------------------------------------------------------------------------ the zoo
@pytest.mark.parametrize("name", list(zoo.BUGS))
def test_planted_bug_is_found_on_its_module_and_nothing_else_is_an_error(name):
    case = zoo.BUGS[name](fixed=False)
    d = case.run()
    _no_failed_checks(d)
    assert case.expect in _triples(d), f"{case.expect} not in {_triples(d)}"
    other_errors = [t for t in _triples(d, "error") if t[0] != case.expect[0]]
    assert not other_errors, other_errors
    f = next(f for f in d.findings if (f.check, f.module, f.severity) == case.expect)
    assert f.claim == CHECKS[f.check].claim or f.claim is None
    assert any(ch.isdigit() for ch in f.message) and f.fix


@pytest.mark.parametrize("name", list(zoo.BUGS))
def test_the_same_model_fixed_raises_no_warning_or_error(name):
    d = zoo.BUGS[name](fixed=True).run()
    _no_failed_checks(d)
    assert not d.errors and not d.warnings, _triples(d)


def test_every_check_id_has_a_zoo_case_or_its_own_test():
    covered = {zoo.BUGS[n](fixed=False).expect[0] for n in zoo.BUGS} | {"ddp-without-syncbn", "norm-unused",
                                                                       "nonfinite-input"}
    assert set(CHECKS) <= covered, set(CHECKS) - covered


def test_claims_named_by_the_issue():
    want = {"dropout-before-bn": "C14", "bn-small-batch": "C09", "bn-padding": "C11", "bn-eval-batch-stats": "C10",
            "stale-running-stats": "C15", "lowprec-stats": "C28", "eps-too-small": "C29", "zero-gamma": "C30",
            "outlier-feature": "C20", "missing-final-norm": "C23", "mixed-placement": "C27",
            "attn-logit-growth": "C26", "ddp-without-syncbn": "C16", "bn-future-leak": "C12"}
    assert {k: CHECKS[k].claim for k in want} == want


# ------------------------------------------------------------------------------------------ static checks
def test_static_checks_without_inputs():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, momentum=0.9), nn.Dropout(0.3),
                          nn.BatchNorm2d(8, track_running_stats=False), nn.Conv2d(8, 16, 3, bias=False),
                          nn.LayerNorm(16, eps=0.0), nn.BatchNorm2d(16))
    model[6].requires_grad_(False)
    nn.init.zeros_(model[3].weight)
    d = nl.doctor(model)
    _no_failed_checks(d)
    got = set(_triples(d))
    assert ("bn-momentum-convention", "1", "warning") in got
    assert ("bias-before-norm", "0", "warning") in got
    assert ("dropout-before-bn", "2", "warning") in got
    assert ("bn-eval-batch-stats", "3", "warning") in got
    assert ("eps-too-small", "5", "error") in got
    assert ("last-dim-trap", "5", "warning") in got
    assert ("frozen-bn-updates", "6", "warning") in got
    assert ("zero-gamma", "3", "warning") in got  # without inputs the doctor cannot tell the trunk from a branch
    assert d.checks["bn-small-batch"] == "skipped: needs example inputs"
    assert d.checks["norm-weight-decay"] == "skipped: needs the optimizer"
    assert any("static checks only" in n for n in d.notes)


def test_momentum_zero_warns_and_cumulative_average_is_fine():
    d = nl.doctor(nn.Sequential(nn.BatchNorm1d(4, momentum=0.0), nn.BatchNorm1d(4, momentum=None)))
    assert _triples(d) == [("bn-momentum-convention", "0", "warning")]


def test_eps_none_means_the_dtype_epsilon_and_is_fine():
    model = nn.Sequential(nn.Linear(8, 16), nl.RMSNorm(16), nn.RMSNorm(16))
    assert not nl.doctor(model, torch.randn(4, 8)).findings


def test_fp16_statistics_with_an_eps_that_rounds_to_zero():
    class Half(zoo.LowPrecRMSNorm):  # statistics in fp16 with eps 1e-12 (0 in fp16)
        pass

    model = zoo.RMSModel(Half(64, eps=1e-12)).half()
    d = nl.doctor(model, torch.randn(8, 16).half())
    assert ("eps-too-small", "norm", "error") in _triples(d)
    assert ("lowprec-stats", "norm", "error") in _triples(d)
    assert "0 in float16" in d.by_check("eps-too-small")[0].message


# ------------------------------------------------------------------------------------------ probing
class ChannelsFirstLN(nn.Module):
    """ConvNeXt's hand-written channels-first LayerNorm (not a class normlab knows)."""

    def __init__(self, c: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * (x - u) / torch.sqrt(s + self.eps) + self.bias[:, None, None]


class T5Norm(nn.Module):
    """T5's LayerNorm: RMS over the last dim, statistics in float32."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.variance_epsilon = nn.Parameter(torch.ones(d)), eps

    def forward(self, h):
        var = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(var + self.variance_epsilon)).to(h.dtype)


class GemmaNorm(T5Norm):
    """Gemma's RMSNorm: gamma stored as an offset from 1 (weight starts at 0, the scale is 1 + weight)."""

    def __init__(self, d: int):
        super().__init__(d)
        nn.init.zeros_(self.weight)

    def forward(self, h):
        var = h.float().pow(2).mean(-1, keepdim=True)
        return (h.float() * torch.rsqrt(var + 1e-6) * (1.0 + self.weight.float())).to(h.dtype)


class Net(nn.Module):
    def __init__(self, img_norm: nn.Module, seq_norm: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.img_norm, self.seq_norm = img_norm, seq_norm
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        h = self.img_norm(self.conv(x))  # (N, 8, H, W)
        return self.seq_norm(self.proj(h.flatten(2).transpose(1, 2)))  # (N, H*W, 8)


def test_norms_it_does_not_know_are_found_by_what_they_compute():
    d = nl.doctor(Net(ChannelsFirstLN(8), T5Norm(8)), torch.randn(4, 3, 5, 5))
    norms = {n["module"]: n for n in d.norms}
    assert norms["img_norm"]["kind"] == "layer (channels-first)" and norms["img_norm"]["how"] == "probe"
    assert norms["seq_norm"]["kind"] == "rms" and "no re-centering" in norms["seq_norm"]["pooled"]
    assert not d.findings


def test_zero_centered_gamma_is_not_a_zero_gamma():
    d = nl.doctor(Net(nl.LayerNorm2d(8), GemmaNorm(8)), torch.randn(4, 3, 5, 5))
    assert not d.findings, _triples(d)
    assert any(n["module"] == "seq_norm" for n in d.norms)
    ln = nl.LayerNorm(8, zero_centered_gamma=True)
    assert not nl.doctor(nn.Sequential(nn.Linear(4, 8), ln, nn.Linear(8, 2)), torch.randn(4, 4)).findings


@pytest.mark.parametrize("layer,shape,pooled", [
    (nn.BatchNorm2d(6), (4, 6, 3, 3), (0, 2, 3)),
    (nn.LayerNorm((6, 3, 3)), (4, 6, 3, 3), (1, 2, 3)),
    (nl.LayerNorm2d(6), (4, 6, 3, 3), (1,)),
    (nn.InstanceNorm2d(6, affine=True), (4, 6, 3, 3), (2, 3)),
    (nn.GroupNorm(3, 6), (4, 6, 3, 3), (2, 3)),
    (nn.LayerNorm(8), (3, 5, 8), (2,)),
    (nn.RMSNorm(8), (3, 5, 8), (2,)),
])
def test_probe_reads_the_pooled_axes_as_claim_c04(layer, shape, pooled):
    from normlab.doctor.probe import probe_module

    p = probe_module(layer, shape, torch.float32)
    assert p.normalizer and p.pooled == pooled
    assert p.grouped == ({1: 2} if isinstance(layer, nn.GroupNorm) else {})
    assert p.center == (not isinstance(layer, nn.RMSNorm))


@pytest.mark.parametrize("layer", [nn.Softmax(-1), nn.GELU(), nl.DyT(8), nn.Linear(8, 8), nn.LocalResponseNorm(2)])
def test_probe_rejects_what_is_not_a_normalizer(layer):
    from normlab.doctor.probe import probe_module

    assert not probe_module(layer, (3, 5, 8), torch.float32).normalizer


# ------------------------------------------------------------------------------------------ both sides of the rules
class Trans(nn.Module):
    """A transformer LayerNorm on (B, T, D) where T happens to equal D."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.emb = nn.Linear(4, d)
        self.ln = nn.LayerNorm(d)

    def forward(self, x):
        return self.ln(self.emb(x))


def test_last_dim_trap_does_not_fire_on_sequences_heads_or_instance_norm():
    assert not nl.doctor(Trans(16), torch.randn(16, 16, 4)).findings  # (B, T, D) = (16, 16, 16)
    gpt, ids = zoo.clean_gpt("layernorm", "pre", "layernorm", n_head=4, d_model=16)  # q, k: (B, 4, T, 4)
    assert not nl.doctor(gpt, ids).findings

    class Conv1dIN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv1d(3, 16, 3, padding=1, bias=False), nn.InstanceNorm1d(16, affine=True)

        def forward(self, x):
            return self.norm(self.conv(x))
    assert not nl.doctor(Conv1dIN(), torch.randn(4, 3, 16)).findings  # (N, C, L) with C == L


def test_last_dim_trap_fires_through_functional_ops():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.LayerNorm(16)

        def forward(self, x):
            return self.norm(F.relu(self.conv(x)))
    d = nl.doctor(M(), torch.randn(2, 3, 16, 16))
    assert _triples(d) == [("last-dim-trap", "norm", "error")]
    assert "(2, 16, 16, 16)" in d.errors[0].message


@pytest.mark.parametrize("norm,severity", [(nn.BatchNorm2d(16), "warning"),
                                           (nn.InstanceNorm2d(16, affine=True), "warning"),
                                           (nn.GroupNorm(16, 16), "warning"), (nn.GroupNorm(4, 16), "info"),
                                           (nl.GroupNorm(4, 16), "info"), (nl.LayerNorm2d(16), None)])
def test_bias_before_norm_only_where_the_norm_removes_the_bias(norm, severity):
    """A per-channel bias is removed by BatchNorm and InstanceNorm (one statistic per channel); GroupNorm with
    several channels per group removes each group's mean of it (a note); a channels-first LayerNorm only its mean
    over all channels (nothing)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 16, 3, padding=1), norm

        def forward(self, x):
            return self.norm(self.conv(x))
    d = nl.doctor(M(), torch.randn(16, 3, 6, 6))
    assert [t[2] for t in _triples(d) if t[:2] == ("bias-before-norm", "conv")] == ([severity] if severity else [])
    static = nl.doctor(nn.Sequential(nn.Conv2d(3, 16, 3), norm))  # no inputs: by class and Sequential position
    assert [t[2] for t in _triples(static) if t[:2] == ("bias-before-norm", "0")] == ([severity] if severity else [])


def test_bias_before_a_transformer_layernorm_is_kept():
    assert not nl.doctor(Trans(16), torch.randn(4, 7, 4)).findings


def test_zero_init_residual_is_a_note_and_a_zero_gamma_stem_blocks_the_signal():
    d = nl.doctor(zoo.resnet18(zero_init_residual=True), torch.randn(16, 3, 32, 32))
    assert d.findings and not d.errors and not d.warnings
    assert {f.module for f in d.infos} == {f"layer{i}.{j}.bn2" for i in range(1, 5) for j in range(2)}

    net = nl.models.ConvNet(nl.models.ConvNetConfig(dim=2, input_size=8, widths=(8, 16), gamma_init=0.0))
    d = nl.doctor(net, torch.randn(16, 1, 8, 8), train_step=True)  # claim C30's setting: every gamma 0
    assert _triples(d, "error") == [("zero-gamma", "stem.norm", "error")]
    assert "gradient exactly 0" in d.errors[0].message and "gradient is 0" in d.errors[0].message


def test_dropout_after_the_norm_with_a_conv_between_is_a_note():
    net, x = zoo.clean_convnet("batchnorm", dropout_place="after_norm")
    d = nl.doctor(net, x)
    assert d.findings and not d.errors and not d.warnings
    assert {f.check for f in d.findings} == {"dropout-before-bn"}
    net, x = zoo.clean_convnet("batchnorm", dropout_place="before_norm")
    d = nl.doctor(net, x)
    assert ("dropout-before-bn", "stem.drop_before", "warning") in _triples(d)


def test_padding_found_without_a_mask_from_trailing_pad_tokens():
    case = zoo.bn_padding(fixed=False)
    d = nl.doctor(case.model, case.inputs)  # no attention_mask: the pad token is guessed, so a warning
    assert ("bn-padding", "norm", "warning") in _triples(d)
    assert "trailing runs of token 0" in d.by_check("bn-padding")[0].message


def test_future_leak_needs_causal_and_a_batch_of_one_in_training():
    case = zoo.bn_future_leak(fixed=False)
    d = nl.doctor(case.model, case.inputs)
    assert d.checks["bn-future-leak"].startswith("skipped") and not d.by_check("bn-future-leak")
    bn = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    d = nl.doctor(bn, torch.randn(1, 4))
    assert ("bn-small-batch", "1", "error") in _triples(d)
    assert any("eval mode" in n for n in d.notes)


def test_norm_never_called_is_a_note():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.ln_f = nn.Linear(4, 4), nn.LayerNorm(4)

        def forward(self, x):
            return self.lin(x)  # forgot self.ln_f
    assert _triples(nl.doctor(M(), torch.randn(2, 4))) == [("norm-unused", "ln_f", "info")]


def test_ddp_without_syncbn(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        d = nl.doctor(nn.parallel.DistributedDataParallel(zoo.DDPNet(sync=False)), torch.randn(4, 3, 6, 6))
        assert _triples(d) == [("ddp-without-syncbn", "module.bn", "warning")]
        assert "1 processes" in d.findings[0].message and "4 samples" in d.findings[0].message
        static = nl.doctor(nn.parallel.DistributedDataParallel(zoo.DDPNet(sync=False)))
        assert _triples(static) == [("ddp-without-syncbn", "module.bn", "info")]
        assert not nl.doctor(nn.parallel.DistributedDataParallel(zoo.DDPNet(sync=True)), torch.randn(4, 3, 6, 6)) \
            .findings
        model = nn.parallel.DistributedDataParallel(zoo.DDPNet(sync=False))  # the fix, applied under the wrapper
        x = torch.randn(4, 3, 6, 6)
        with torch.no_grad():
            before = model(x)
        assert nl.doctor(model, x).apply(model).checks == {"ddp-without-syncbn"}
        assert isinstance(model.module.bn, nl.SyncBatchNorm) and not nl.doctor(model, x).findings
        with torch.no_grad():
            torch.testing.assert_close(model(x), before)
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ the user's model
def _hooked_bn_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8, momentum=None), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(4, 3, 8, 8)).sum().backward()  # running statistics moved, grads present
    model[5].eval()
    model[4].requires_grad_(False)
    calls = []
    model[1].register_forward_hook(lambda m, a, o: calls.append(1))
    model.register_forward_pre_hook(lambda m, a: None)
    return model


@pytest.mark.parametrize("make", [
    lambda: (_hooked_bn_model(), torch.randn(16, 3, 8, 8), {}),
    lambda: (zoo.clean_gpt("batchnorm", "pre")[0], zoo._ids(16), {"causal": True}),
    lambda: (zoo.BUGS["zero-gamma"](False).model, torch.randn(32, 8), {}),
    lambda: (zoo.BUGS["lowprec-stats"](False).model, zoo.BUGS["lowprec-stats"](False).inputs[0], {}),
])
def test_model_and_state_are_left_exactly_as_they_were(make):
    model, x, kw = make()
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    before = zoo.state_of(model)
    rng = torch.random.get_rng_state()
    d = nl.doctor(model, x, optimizer=opt, train_step=True, **kw)
    assert d.findings is not None
    zoo.assert_same_state(before, zoo.state_of(model))
    assert torch.equal(rng, torch.random.get_rng_state())
    assert all(not s for s in opt.state.values())  # no optimizer step


def test_model_that_cannot_be_copied_is_restored_in_place():
    class Uncopyable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8)

        def forward(self, x):
            return self.bn(self.conv(x))

        def __deepcopy__(self, memo):
            raise TypeError("no copies")
    model = Uncopyable()
    before = zoo.state_of(model)
    d = nl.doctor(model, torch.randn(4, 3, 6, 6), train_step=True)
    zoo.assert_same_state(before, zoo.state_of(model))
    assert ("bn-small-batch", "bn", "warning") in _triples(d)
    assert any("could not be deep-copied" in n for n in d.notes)


def test_forward_failure_is_an_input_error():
    with pytest.raises(DoctorInputError, match="forward failed on the example inputs"):
        nl.doctor(nn.Linear(4, 2), torch.randn(3, 5))
    with pytest.raises(ValueError, match="unknown check id"):
        nl.doctor(nn.Linear(4, 2), checks=["nope"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        nl.doctor("model")  # type: ignore[arg-type]


def test_checks_subset_and_skip():
    case = zoo.momentum(fixed=False)
    d = nl.doctor(case.model, case.inputs, checks=["bn-momentum-convention", "bn-small-batch"])
    assert set(d.checks) == {"bn-momentum-convention", "bn-small-batch"}
    assert [(f.check, f.severity) for f in d.findings] == [("bn-momentum-convention", "warning")]
    d = nl.doctor(case.model, case.inputs, skip=["bn-momentum-convention"])
    assert "bn-momentum-convention" not in d.checks and not d.findings


# ------------------------------------------------------------------------------------------ normlab's own models
@pytest.mark.parametrize("norm,placement", list(itertools.product(zoo.GPT_NORMS, zoo.GPT_PLACEMENTS)))
def test_normlab_gpt_settings_raise_no_error(norm, placement):
    model, ids = zoo.clean_gpt(norm, placement)
    d = nl.doctor(model, ids)
    _no_failed_checks(d)
    assert not d.errors, _triples(d)
    # the one warning that stands: BatchNorm right after a biased c_proj (sandwich) removes that bias
    assert {f.check for f in d.warnings} <= ({"bias-before-norm"} if (norm, placement) == ("batchnorm", "sandwich")
                                              else set()), _triples(d)


@pytest.mark.parametrize("qk", zoo.GPT_QK)
def test_normlab_gpt_qk_norms_raise_nothing(qk):
    model, ids = zoo.clean_gpt("rmsnorm", "pre", qk)
    assert not nl.doctor(model, ids).findings


@pytest.mark.parametrize("norm,arch,dim", list(itertools.product(zoo.CONV_NORMS, ("resnet", "plain", "vgg"), (1, 2))))
def test_normlab_convnet_settings_raise_nothing(norm, arch, dim):
    model, x = zoo.clean_convnet(norm, arch, dim)
    d = nl.doctor(model, x)
    _no_failed_checks(d)
    assert not d.findings, _triples(d)


# ------------------------------------------------------------------------------------------ param_groups
def test_param_groups_leave_norms_and_biases_out_of_decay():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nl.RMSNorm(8), nn.Conv1d(8, 8, 1), nn.BatchNorm1d(8),
                          nl.LayerNorm((8, 3)), nn.Linear(3, 3, bias=False))
    model[3].requires_grad_(False)
    groups = nl.param_groups(model, weight_decay=0.05, lr=1e-3)
    by = {g["name"]: {id(p) for p in g["params"]} for g in groups}
    assert by["decay"] == {id(model[0].weight), id(model[6].weight)}
    assert id(model[5].weight) in by["no_decay"]  # a 2-D gamma is still a norm parameter
    assert id(model[0].bias) in by["no_decay"] and id(model[3].weight) not in by["no_decay"] | by["decay"]
    assert all(g["lr"] == 1e-3 for g in groups)
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]
    torch.optim.AdamW(groups)
    tied = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight
    assert sum(len(g["params"]) for g in nl.param_groups(tied, 0.1)) == 1
    with pytest.raises(ValueError, match="weight_decay must be a number >= 0"):
        nl.param_groups(model, -1)


def test_norm_weight_decay_fix_names_param_groups():
    d = zoo.norm_weight_decay(fixed=False).run()
    f = d.by_check("norm-weight-decay")[0]
    assert "nl.param_groups(model, weight_decay=0.1)" in f.fix and "gamma and beta" in f.message


# ------------------------------------------------------------------------------------------ the report
def test_finding_and_diagnosis_api():
    with pytest.raises(ValueError, match="severity"):
        Finding("x", "fatal", "m", "msg", "fix")
    case = zoo.last_dim_trap(fixed=False)
    d = case.run()
    assert d.errors == [f for f in d.findings if f.severity == "error"] and not d.ok
    plain = d.render(color=False)
    assert "ERROR" in plain and "last-dim-trap" in plain and "fix:" in plain and "\x1b[" not in plain
    assert "\x1b[" in d.render(color=True, width=120)
    data = json.loads(d.to_json())
    assert data["counts"]["error"] == 1 and data["findings"][0]["check"] == "last-dim-trap"
    assert set(data["findings"][0]) == {"check", "severity", "module", "message", "fix", "claim", "autofix"}
    assert data["checks"]["last-dim-trap"] == "ran" and data["norms"][0]["module"] == "norm"
    assert "1 error" in repr(d) and str(d) == d.render()
    assert len(d) == len(d.findings) and list(d) == d.findings


# ------------------------------------------------------------------------------------------ the CLI
MODEL_FILE = '''
import torch
from torch import nn

def buggy():
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16, eps=0.0))

def clean():
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())

def with_inputs():
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16, eps=0.0))
    return {"model": model, "inputs": (torch.randn(4, 8),),
            "optimizer": torch.optim.AdamW(model.parameters(), weight_decay=0.1)}

def broken():
    raise RuntimeError("cannot build")
'''


def test_cli_doctor_exit_codes_and_json(tmp_path, capsys):
    path = tmp_path / "mymodels.py"
    path.write_text(MODEL_FILE)
    assert main(["doctor", f"{path}:buggy", "--input-shape", "4,8", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [(f["check"], f["module"], f["severity"]) for f in data["findings"]] == \
        [("eps-too-small", "1", "error")]
    assert data["checks"]["stale-running-stats"] == "ran"
    assert main(["doctor", f"{path}:clean", "--input-shape", "16,3,8,8"]) == 0
    out = capsys.readouterr().out
    assert "0 errors" in out and "no findings" in out
    assert main(["doctor", f"{path}:buggy"]) == 1  # static checks only
    assert "static checks only" in capsys.readouterr().out
    assert main(["doctor", f"{path}:with_inputs", "--json", "--train-step"]) == 1
    got = {(f["check"], f["module"]) for f in json.loads(capsys.readouterr().out)["findings"]}
    assert {("eps-too-small", "1"), ("norm-weight-decay", "1")} <= got
    torch.save((torch.randn(16, 3, 8, 8),), tmp_path / "x.pt")
    assert main(["doctor", f"{path}:clean", "--inputs", str(tmp_path / "x.pt")]) == 0
    capsys.readouterr()


def test_cli_doctor_module_path(tmp_path, capsys, monkeypatch):
    (tmp_path / "pkgmodels.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    assert main(["doctor", "pkgmodels:buggy", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["counts"]["error"] == 1


@pytest.mark.parametrize("argv,err", [
    (["{p}:nope"], "has no attribute 'nope'"),
    (["{p}"], "expected MODULE:CALLABLE"),
    (["{d}/missing.py:build"], "no such file"),
    (["{p}:broken"], "broken() failed: RuntimeError: cannot build"),
    (["{p}:clean", "--input-shape", "8,x"], "comma-separated positive integers"),
    (["{p}:clean", "--input-shape", "8,4,8,8"], "forward failed on the example inputs"),
    (["{p}:clean", "--input-shape", "8,3,8,8", "--inputs", "x.pt"], "not both"),
    (["{p}:clean", "--inputs", "{d}/none.pt"], "no such file"),
])
def test_cli_doctor_bad_arguments_exit_2(tmp_path, capsys, argv, err):
    path = tmp_path / "m.py"
    path.write_text(MODEL_FILE)
    argv = [a.format(p=path, d=tmp_path) for a in argv]
    assert main(["doctor", *argv]) == 2
    assert err in capsys.readouterr().err


def test_torch_transformer_encoder_placement_and_attention_logits():
    def encoder(norm_first: bool, final: bool = False) -> nn.Module:
        layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=norm_first)
        return nn.TransformerEncoder(layer, 3, norm=nn.LayerNorm(32) if final else None, enable_nested_tensor=False)

    x = torch.randn(4, 10, 32)
    assert not nl.doctor(encoder(False), x).findings  # post-norm: each layer ends with its norm
    assert not nl.doctor(encoder(True, final=True), x).findings
    d = nl.doctor(encoder(True), x)  # pre-norm, no final norm: the stream leaves the model unnormalized
    assert _triples(d) == [("missing-final-norm", "layers.2", "warning")]
    enc = encoder(False)
    with torch.no_grad():
        enc.layers[1].self_attn.in_proj_weight.mul_(300.0)
    d = nl.doctor(enc, x)
    assert _triples(d) == [("attn-logit-growth", "layers.1.self_attn", "warning")]
    assert "largest attention logit" in d.findings[0].message


class BN1dSeq(nn.Module):
    """BatchNorm1d over (B, D, T) token embeddings: the usual way a BatchNorm meets padded sequences."""

    def __init__(self):
        super().__init__()
        self.emb, self.bn, self.out = nn.Embedding(50, 16, padding_idx=0), nn.BatchNorm1d(16), nn.Linear(16, 50)

    def forward(self, ids, mask=None):
        return self.out(self.bn(self.emb(ids).transpose(1, 2)).transpose(1, 2))


def test_padding_through_a_positional_mask_and_a_transposed_batchnorm1d():
    case = zoo.bn_padding(fixed=False)
    ids, mask = case.inputs[0], case.kwargs["attention_mask"].bool()
    assert ("bn-padding", "bn", "error") in _triples(nl.doctor(BN1dSeq(), (ids, mask)))
    assert ("bn-padding", "bn", "error") in _triples(nl.doctor(BN1dSeq(), ids, {"mask": mask}))
    x = torch.randn(8, 12, 8)  # float sequences, zero-padded at the end, no mask
    for b, n in ((1, 6), (3, 9), (5, 4)):
        x[b, n:] = 0

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.bn = nn.Linear(8, 16, bias=False), nl.BatchNorm(16, channel_dim=-1)

        def forward(self, x):
            return self.bn(self.inp(x))
    assert ("bn-padding", "bn", "warning") in _triples(nl.doctor(Seq(), x))


def test_dataparallel_on_cpu_is_looked_through():
    d = nl.doctor(nn.DataParallel(zoo.DDPNet(sync=False)), torch.randn(4, 3, 6, 6))
    assert _triples(d) == [("ddp-without-syncbn", "module.bn", "warning")]
    assert "DataParallel" in d.findings[0].message


def test_fp16_statistics_that_overflow_to_zero():
    class F16RMS(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))

        def forward(self, x):  # x ** 2 overflows fp16 above 256: rsqrt(inf) = 0, the output silently 0
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    model = zoo.RMSModel(F16RMS(64)).half()
    with torch.no_grad():
        model.inp.weight.mul_(30)
    d = nl.doctor(model, torch.randn(8, 16).half() * 4)
    assert {("lowprec-overflow", "norm", "error"), ("lowprec-stats", "norm", "error")} <= set(_triples(d))
    assert "pow on float16" in d.by_check("lowprec-overflow")[0].message


def test_zero_gamma_on_the_trunk_of_real_models():
    resnet = zoo.resnet18()
    with torch.no_grad():
        resnet.bn1.weight.zero_()  # followed by ReLU(inplace=True): the doctor's taps must survive it
    assert _triples(nl.doctor(resnet, torch.randn(16, 3, 32, 32)), "error") == [("zero-gamma", "bn1", "error")]
    gpt = zoo._gpt()
    with torch.no_grad():
        gpt.blocks[1].norms["ln_1"].weight.zero_()  # a branch: the skip carries the signal
    assert _triples(nl.doctor(gpt, zoo._ids())) == [("zero-gamma", "blocks.1.norms.ln_1", "info")]
    with torch.no_grad():
        gpt.ln_f.weight.zero_()  # the trunk: nothing reaches the logits
    assert ("zero-gamma", "ln_f", "error") in _triples(nl.doctor(gpt, zoo._ids()))


def test_the_first_norm_where_float32_activations_stop_being_finite():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.LayerNorm(8))
    x = torch.randn(3, 4)
    x[0, 1] = float("nan")
    d = nl.doctor(model, x)
    assert _triples(d) == [("nonfinite-input", "1", "error")]  # the first one only, not every norm after it
    assert "input holds 8 inf/NaN" in d.errors[0].message

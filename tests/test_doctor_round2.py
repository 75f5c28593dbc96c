"""normlab.doctor, round 2: no false alarm on clean models, no crash, one finding per cause, the new checks, fixes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import doctor_zoo as zoo
import normlab as nl
from normlab.cli import main
from normlab.doctor import DoctorInputError


def _triples(d: nl.Diagnosis, severity: str | None = None) -> list[tuple[str, str, str]]:
    return [(f.check, f.module, f.severity) for f in d.findings if severity is None or f.severity == severity]


# ------------------------------------------------------------------------------------------ false alarms
class ConvThenLN(nn.Module):
    """Conv1d -> (B, C, T); a LayerNorm over C after a functional transpose (correct), or over T (the trap)."""

    def __init__(self, c: int, transpose: bool):
        super().__init__()
        self.transpose = transpose
        self.conv = nn.Conv1d(3, c, 3, padding=1, bias=False)
        self.norm = nn.LayerNorm(c)
        self.head = nn.Linear(c, 2)

    def forward(self, x):  # (B, 3, T)
        h = F.gelu(self.conv(x))  # (B, C, T)
        if self.transpose:
            return self.head(self.norm(h.transpose(1, 2)))  # (B, T, C): normalized over C
        return self.head(self.norm(h).transpose(1, 2))


def test_last_dim_trap_silent_on_a_transposed_layernorm_with_equal_sizes():
    d = nl.doctor(ConvThenLN(16, transpose=True), torch.randn(2, 3, 16))  # C == T == 16
    assert not [f for f in d.findings if f.check == "last-dim-trap"]


def test_last_dim_trap_error_when_equal_sizes_hide_it():
    d = nl.doctor(ConvThenLN(16, transpose=False), torch.randn(2, 3, 16))
    assert ("last-dim-trap", "norm", "error") in _triples(d)


def test_last_dim_trap_layernorm_over_time_with_different_sizes():
    d = zoo.BUGS["last-dim-trap (time axis)"](fixed=False).run()  # LayerNorm(20) on a (4, 8, 20) conv output
    assert _triples(d, "warning") == [("last-dim-trap", "norm", "warning")]
    assert "dim 2" in d.warnings[0].message and "8 channels" in d.warnings[0].message


def test_stale_running_stats_silent_on_a_fresh_model_with_random_gamma():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, bias=False),
                      nn.BatchNorm2d(8))
    with torch.no_grad():  # as Hugging Face initializes EfficientNet's BatchNorm gamma: N(0, 0.02)
        for bn in (m[1], m[4]):
            bn.weight.normal_(0, 0.02)
    x = torch.randn(16, 3, 8, 8)
    assert not nl.doctor(m.eval(), x).by_check("stale-running-stats")
    m.train()
    with torch.no_grad():
        m[:2](x)  # the first BatchNorm trained, the second never: its buffers were lost
    d = nl.doctor(m.eval(), x)
    assert [f.module for f in d.by_check("stale-running-stats")] == ["4"]


def test_norm_weight_decay_names_only_what_is_decayed():
    m = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16))
    opt = torch.optim.AdamW([{"params": [m[0].weight, m[1].weight], "weight_decay": 0.1},
                             {"params": [m[0].bias, m[1].bias], "weight_decay": 0.0}])
    (f,) = nl.doctor(m, optimizer=opt).by_check("norm-weight-decay")
    assert "gamma" in f.message and "beta" not in f.message


# ------------------------------------------------------------------------------------------ crashes
def test_train_step_with_a_batch_of_one_gives_a_finding_not_a_traceback():
    m = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    d = nl.doctor(m, torch.randn(1, 8), train_step=True)
    assert ("bn-small-batch", "1", "error") in _triples(d)
    assert not {k: v for k, v in d.checks.items() if v.startswith("failed")}
    assert any("eval mode" in n for n in d.notes)


def test_lazy_module_gives_a_clear_message():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LazyBatchNorm2d())
    with pytest.raises(DoctorInputError,
                       match=r"lazy module.*'1' \(LazyBatchNorm2d\).*call the model once"):
        nl.doctor(m, torch.randn(4, 3, 8, 8))
    m(torch.randn(4, 3, 8, 8))  # initialized: the doctor runs
    assert nl.doctor(m, torch.randn(16, 3, 8, 8)).checks["bn-momentum-convention"] == "ran"


_CLI_MODELS = '''
import torch
from torch import nn

class TokenModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.ln = nn.LayerNorm(16)
        self.head = nn.Linear(16, 50)

    def forward(self, ids):
        return self.head(self.ln(self.emb(ids)))

def tokens():
    return TokenModel()

def one():
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())

def lazy():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.LazyBatchNorm2d())
'''


def test_cli_token_ids_batch_of_one_and_lazy(tmp_path, capsys):
    path = tmp_path / "models.py"
    path.write_text(_CLI_MODELS)
    assert main(["doctor", f"{path}:tokens", "--input-shape", "4,12"]) == 0
    assert "random ids in [0, 50)" in capsys.readouterr().err
    assert main(["doctor", f"{path}:one", "--input-shape", "1,8", "--train-step"]) == 1  # bn-small-batch: an error
    assert "Traceback" not in capsys.readouterr().err
    assert main(["doctor", f"{path}:lazy", "--input-shape", "4,3,8,8"]) == 2
    assert "lazy module" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ one finding per cause
def _keras_net() -> nn.Sequential:
    """Keras momentum on 3 BatchNorms (warnings), conv biases before them (warnings), eps=0 on 3 LayerNorms (errors)."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8, momentum=0.99), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, bias=True), nn.BatchNorm2d(16, momentum=0.99), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, bias=True), nn.BatchNorm2d(16, momentum=0.99), nn.Flatten(),
                         nn.Linear(576, 16), nn.LayerNorm(16, eps=0.0), nn.Linear(16, 16), nn.LayerNorm(16, eps=0.0),
                         nn.Linear(16, 16), nn.LayerNorm(16, eps=0.0))


def test_findings_of_one_cause_are_one_entry_with_the_modules_counted():
    m = _keras_net()
    d = nl.doctor(m, torch.randn(16, 3, 12, 12), optimizer=torch.optim.AdamW(m.parameters(), weight_decay=0.1))
    causes = {(c.check, c.severity): c for c in d.causes}
    assert causes[("eps-too-small", "error")].modules == ("10", "12", "14")
    assert causes[("bn-momentum-convention", "warning")].modules == ("1", "4", "7")
    assert causes[("bias-before-norm", "warning")].modules == ("0", "3", "6")  # BatchNorm2d(8) and (16): one fix
    assert causes[("norm-weight-decay", "warning")].modules == ("1", "4", "7", "10", "12", "14")
    assert len(d.errors) == 3 and d.cause_counts()["error"] == 1  # per-module detail kept
    assert "1 error in 3 modules" in d.summary()
    text = d.render(color=False)
    assert text.count("bn-momentum-convention") == 1 and text.count("eps-too-small") == 1
    assert "modules: 1, 4, 7" in text and "modules: 10, 12, 14" in text
    data = json.loads(d.to_json())
    assert [(c["check"], c["count"]) for c in data["causes"] if c["severity"] == "error"] == \
        [("eps-too-small", 3)]
    assert len(data["findings"]) == len(d.findings) and data["cause_counts"]["error"] == 1


def test_eps_message_names_the_dtype_where_it_failed_and_what_it_needs():
    d = zoo.BUGS["eps-too-small (float16)"](fixed=False).run()
    (f,) = d.by_check("eps-too-small")
    assert "float16" in f.message and "float64" not in f.message and "eps=1e-08 is 0 in float16" in f.message
    assert f.fix.startswith("eps=0.0006")  # 10x float16's smallest normal number, 6.1e-05


# ------------------------------------------------------------------------------------------ fixes it applies
class Fixable(nn.Module):
    """Keras momentum, conv biases before BatchNorm, eps=0 on a LayerNorm, a frozen-affine BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8, momentum=0.99)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=True), nn.BatchNorm2d(8)
        self.bn2.requires_grad_(False)
        self.head = nn.Linear(8, 16)
        self.ln = nn.LayerNorm(16, eps=0.0)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.ln(self.head(h.mean((2, 3))))


def _trained_stats(m: nn.Module, x: torch.Tensor) -> nn.Module:
    with torch.no_grad():
        m.train()
        for _ in range(3):
            m(x + torch.randn_like(x))
    return m


FIXED = {"bn-momentum-convention", "bias-before-norm", "eps-too-small", "frozen-bn-updates", "norm-weight-decay"}


def test_apply_fixes_and_the_doctor_runs_clean_for_them():
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    m = _trained_stats(Fixable(), x).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    d = nl.doctor(m, x, optimizer=opt)
    assert {f.check for f in d.fixable()} == FIXED
    assert {c["check"] for c in json.loads(d.to_json())["causes"] if c["autofix"]} == FIXED
    with torch.no_grad():
        before_eval = m.eval()(x)
    m.train()
    applied = d.apply(m, optimizer=opt)
    assert applied.checks == FIXED and not applied.skipped
    assert m.conv1.bias is None and m.conv2.bias is None and m.bn1.momentum == pytest.approx(0.01)
    assert m.ln.eps == 1e-5
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if any(p is m.ln.weight for p in g["params"]))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(m.parameters()))  # the dropped biases left
    after = nl.doctor(m, x, optimizer=opt)
    assert not {f.check for f in after.findings} & FIXED, [(f.check, f.module) for f in after.findings]
    with torch.no_grad():  # eval: dropped biases are folded into the running means; only eps moved
        torch.testing.assert_close(m.eval()(x), before_eval, rtol=1e-4, atol=1e-4)


def test_exact_fixes_keep_the_outputs_in_training_and_eval():
    x = torch.randn(16, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    m = _trained_stats(Fixable(), x)
    m.ln.eps = 1e-5  # the only inexact fix
    m.bn2.requires_grad_(True)  # freezing changes the training-mode output, by design
    ref = {mode: None for mode in (False, True)}  # eval first: a training forward moves the running statistics
    probe = {mode: __import__("copy").deepcopy(m) for mode in ref}
    for mode in ref:
        with torch.no_grad():
            ref[mode] = probe[mode].train(mode)(x)
    d = nl.doctor(m, x)
    applied = d.apply(m)
    assert applied.checks == {"bn-momentum-convention", "bias-before-norm"}
    for mode in ref:
        with torch.no_grad():
            torch.testing.assert_close(m.train(mode)(x), ref[mode], rtol=1e-5, atol=1e-5)


def test_apply_without_an_optimizer_returns_the_groups_and_leaves_a_bias_on_a_residual():
    class Residual(nn.Module):  # the conv output also feeds a skip connection: its bias is not removable
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            h = self.conv(x)
            return self.bn(h) + h
    m = Residual()
    x = torch.randn(16, 4, 6, 6)
    d = nl.doctor(m, x, optimizer=torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=1e-4))
    assert d.by_check("bias-before-norm") and not [f for f in d.by_check("bias-before-norm") if f.autofix]
    applied = d.apply(m)
    assert m.conv.bias is not None
    groups = applied.param_groups
    assert groups is not None and {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]} == \
        {id(m.conv.bias), id(m.bn.weight), id(m.bn.bias)}


def test_cli_fix_writes_only_when_asked(tmp_path, capsys):
    path = tmp_path / "keras.py"  # Keras momentum (a warning), eps=0 (an error)
    path.write_text("import torch\nfrom torch import nn\n\ndef build():\n"
                    "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, momentum=0.99), nn.ReLU(),\n"
                    "                         nn.Flatten(), nn.Linear(288, 16), nn.LayerNorm(16, eps=0.0))\n")
    assert main(["doctor", f"{path}:build", "--input-shape", "16,3,8,8"]) == 1
    out = capsys.readouterr().out
    assert "auto-fix" in out and not list(tmp_path.glob("*.pt"))
    target = tmp_path / "fixed.pt"
    assert main(["doctor", f"{path}:build", "--input-shape", "16,3,8,8", "--fix", str(target)]) == 0
    fixed = torch.load(target, weights_only=False)
    assert fixed[1].momentum == pytest.approx(0.01) and fixed[5].eps == 1e-5 and fixed[0].bias is None
    assert "after the fixes: 0 errors" in capsys.readouterr().err


def test_cli_exit_code_1_only_for_errors_found(tmp_path, monkeypatch, capsys):
    import sys

    path = tmp_path / "m.py"
    path.write_text("from torch import nn\n\ndef build():\n    return nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))\n")

    def boom(*a, **k):
        raise RuntimeError("a bug in a check")
    monkeypatch.setattr(sys.modules["normlab.doctor"], "doctor", boom)
    assert main(["doctor", f"{path}:build", "--input-shape", "2,4"]) == 3
    err = capsys.readouterr().err
    assert "the doctor itself failed: RuntimeError: a bug in a check" in err and "Traceback" not in err


def test_partial_eval_silent_on_monte_carlo_dropout():
    m = zoo.BackboneHead().eval()
    m.head[3].train()  # dropout on at inference, on purpose; every BatchNorm in eval mode
    assert not nl.doctor(m, torch.randn(16, 3, 8, 8)).by_check("partial-eval")
    d = zoo.BUGS["partial-eval"](fixed=False).run()
    assert [f.module for f in d.by_check("partial-eval")] == ["head.1", "head.3"]  # the head's BatchNorm and dropout


# ------------------------------------------------------------------------------------------ post-LN warm-up
ONLY = ["postln-no-warmup"]  # the whole doctor on these 12-block models runs in the zoo's case


def test_postln_warmup_read_from_the_optimizer_when_no_scheduler_is_given():
    ids = zoo._ids(2, 8)
    m = zoo._gpt(n_layer=12, placement="post")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)  # constant lr: no scheduler built on it
    (f,) = nl.doctor(m, ids, optimizer=opt, train_step=True, checks=ONLY).by_check("postln-no-warmup")
    assert (f.severity, f.module) == ("warning", "blocks")
    assert "lr is 0.001 with no lr scheduler attached" in f.message and "cannot see a warm-up" in f.message
    pre = zoo._gpt(n_layer=12, placement="pre")  # the same depth in pre-norm trains without warm-up
    assert not nl.doctor(pre, ids, optimizer=torch.optim.AdamW(pre.parameters(), lr=1e-3), train_step=True,
                         checks=ONLY).findings
    # the fixed twin: a linear warm-up, given to the doctor
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    assert not nl.doctor(m, ids, optimizer=opt, scheduler=sched, train_step=True, checks=ONLY).findings
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5) and sched.last_epoch == 0  # the scheduler restored
    # the same scheduler attached but not given: the doctor cannot tell, and says what it needs
    (f,) = nl.doctor(m, ids, optimizer=opt, train_step=True, checks=ONLY).findings
    assert f.severity == "info" and "initial_lr" in f.message and "scheduler=" in f.fix
    flat = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)  # a scheduler with no warm-up is still found
    (f,) = nl.doctor(m, ids, optimizer=opt, scheduler=flat, checks=ONLY).findings
    assert f.severity == "warning" and "no warm-up" in f.message

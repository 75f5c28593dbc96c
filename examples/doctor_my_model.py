"""Run normlab's doctor on your own model: from Python, and from the command line.

    python examples/doctor_my_model.py
    normlab doctor examples/doctor_my_model.py:build --input-shape 16,3,32,32

``build`` is an ordinary model with four kinds of normalization bug that users keep reporting: a conv bias
that the next BatchNorm removes, Keras's BatchNorm momentum (0.99) ported to torch (where it
means the opposite), dropout feeding a BatchNorm, and ``nn.LayerNorm(32)`` on a (N, 32, 32, 32)
conv map, which normalizes the width instead of the channels.  ``build_fixed`` is the same model
with the fixes the doctor names; it comes back clean.
"""

from __future__ import annotations

import torch
from torch import nn

import normlab as nl


class Net(nn.Module):
    def __init__(self, fixed: bool = False):
        super().__init__()
        self.fixed = fixed
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1, bias=fixed is False)
        self.bn1 = nn.BatchNorm2d(32, momentum=0.01 if fixed else 0.99)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1, bias=False)
        self.drop = nn.Dropout(0.0 if fixed else 0.5)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.norm3 = nl.LayerNorm2d(32) if fixed else nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.drop(self.conv2(x))))
        x = torch.relu(self.norm3(self.conv3(x)))
        return self.head(x.mean((2, 3)))


def build() -> nn.Module:
    return Net()


def build_fixed() -> nn.Module:
    return Net(fixed=True)


def main() -> dict:
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    report = {}
    for name, model in (("as written", build()), ("fixed", build_fixed())):
        diagnosis = nl.doctor(model, example_inputs=(x,))  # works on a copy: the model is left as it was
        print(f"--- {name}")
        print(diagnosis)
        report[name] = sorted({f.check for f in diagnosis.findings if f.severity in ("error", "warning")})
    return report


if __name__ == "__main__":
    main()

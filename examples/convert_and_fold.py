"""Convert a torch.nn CNN to normlab's layers, train it, and fold its BatchNorms for inference.

    python examples/convert_and_fold.py [--steps 60]

1. A small ResNet-style CNN written with ``torch.nn`` (Conv2d -> BatchNorm2d -> ReLU).
2. ``nl.convert`` swaps every norm for normlab's layer with the same tensors: same outputs,
   same state-dict keys, and normlab's fused CPU kernels and precision from then on.
3. A short training run on scikit-learn's 8x8 digits (``normlab[suite]``; shipped offline).
4. ``model.eval()`` and ``nl.fold_batchnorm``: each BatchNorm right after a conv or linear layer
   is folded into that layer's weight and bias (exact to float rounding); the rest is listed.
5. ``nl.to_torch`` turns what remains back into ``torch.nn`` layers, so the model ships without
   normlab.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import normlab as nl
from normlab.data import digits


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))  # the residual add: bn2 still folds into conv2


def small_cnn(width: int = 16, classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        Block(width), Block(width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes),
    )


def batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.modules.batchnorm._BatchNorm, nl.BatchNorm)) for m in model.modules())


def main(steps: int = 60) -> dict:
    torch.manual_seed(0)
    data = digits()                                   # (N, 1, 8, 8), standardized on the training split
    model = small_cnn()
    x = data.x_test[:256]
    with torch.no_grad():
        before = model.eval()(x)
    model = nl.convert(model)                         # normlab layers, the same tensors
    with torch.no_grad():
        after = model(x)
    print(f"convert: {batchnorms(model)} BatchNorms now normlab's; "
          f"max |output difference| {(before - after).abs().max().item():.2e}")

    model.train()
    opt = torch.optim.AdamW(nl.param_groups(model, weight_decay=1e-4), lr=3e-3)  # no decay on norms/biases
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(len(data.y_train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(data.x_test)
    accuracy = (logits.argmax(1) == data.y_test).float().mean().item()
    print(f"trained {steps} steps: final loss {loss.item():.3f}, test accuracy {accuracy:.3f}")

    folded, entries = nl.fold_batchnorm(model, report=True)   # eval-mode BatchNorms after a conv/linear, folded
    with torch.no_grad():
        folded_logits = folded(data.x_test)
    total, left = batchnorms(model), batchnorms(folded)
    difference = (folded_logits - logits).abs().max().item()
    print(f"fold_batchnorm: {total - left} of {total} BatchNorms folded into their convs, {left} left; "
          f"max |logit difference| {difference:.2e}")
    for entry in entries:
        print(f"  {entry}")
    shipped = nl.to_torch(folded, inference=True)     # whatever normlab layer is left, back to torch.nn
    kept = [type(m).__name__ for m in shipped.modules() if type(m).__module__.startswith("normlab")]
    print(f"to_torch: normlab modules left: {kept or 'none'}")
    return {"convert_difference": (before - after).abs().max().item(), "accuracy": accuracy,
            "folded": total - left, "left": left, "folded_difference": difference, "kept": kept}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="training steps (default: 60)")
    main(parser.parse_args().steps)

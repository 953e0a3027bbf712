"""A model for the deployment tests: small, with BatchNorm statistics that make folding matter."""

from __future__ import annotations

import torch

from mobilenet.model import MobileNetV1


def trained_looking_model(**settings) -> MobileNetV1:
    """A small model whose BatchNorms hold non-trivial statistics, as after training (fresh ones
    are the identity up to eps, which would let a broken fold pass)."""
    torch.manual_seed(0)
    model = MobileNetV1(**({"alpha": 0.25, "resolution": 128} | settings)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.1, 0.3)
    return model

"""A model for the deployment tests: small, with BatchNorm statistics that make folding matter and
logits that depend on the input (so that verification compares real signal)."""

from __future__ import annotations

import torch

from mobilenet.model import MobileNetV1


def trained_looking_model(**settings) -> MobileNetV1:
    """A small model whose BatchNorms hold non-trivial statistics, as after training (fresh ones
    are the identity up to eps, which would let a broken fold pass). The running statistics are
    measured on images (random ones would drown the input: every image would get the same
    logits to 1e-7, and any export of a constant would pass), then the affine parameters spread."""
    from mobilenet.deploy.verify import measure_batchnorm_statistics, photo_batch

    torch.manual_seed(0)
    model = MobileNetV1(**({"alpha": 0.25, "resolution": 128} | settings))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.weight.data.uniform_(0.5, 1.5)
        m.bias.data.uniform_(-0.2, 0.2)
    measure_batchnorm_statistics(model, photo_batch(model))
    for m in norms:
        # A channel the photos never switch on has a variance near zero, and 1/sqrt(var + eps)
        # would amplify any rounding in it 30-fold: trained networks have few such channels.
        m.running_var.clamp_(min=0.02)
    return model.eval()

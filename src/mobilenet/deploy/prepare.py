"""Turning a trained MobileNetV1 into the fastest PyTorch module for inference.

Three steps, each optional but folding:

1. **Fold BatchNorm** into the conv weights and biases (``model.fold_batchnorm()``): BatchNorm left
   as a separate op costs 10-21% of eager time on this CPU, and it blocks conv+activation fusion.
2. **channels_last** (NHWC) memory format: oneDNN's convolutions are NHWC-native, so this saves the
   reorders around every conv; it only pays off once BatchNorm is folded.
3. **Graph mode**: ``"jit"`` traces, freezes (weights become constants) and runs
   ``torch.jit.optimize_for_inference``, which rewrites each conv into a oneDNN primitive with the
   ReLU6 (a clamp) fused in. ``"compile"`` is ``torch.compile``: about 16 s cold and a recompile per
   new batch size, and measured no faster than ``"jit"`` here, so it is not the default.

The model given is never modified: preparation works on a deep copy.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
from torch import nn

from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1

GraphMode = Literal["eager", "jit", "compile"]
GRAPH_MODES: tuple[str, ...] = ("eager", "jit", "compile")


def folded_copy(model: MobileNetV1) -> MobileNetV1:
    """A copy of ``model`` in eval mode with every BatchNorm folded into its conv."""
    folded = copy.deepcopy(model).eval()
    return folded.fold_batchnorm()


def prepare_for_inference(
    model: MobileNetV1,
    *,
    graph: GraphMode = "jit",
    channels_last: bool = True,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The model, folded and optimised for inference on CPU; outputs match ``model.eval()`` within
    float tolerance (bf16 excepted, which rounds every activation to 8 bits of mantissa).

    Inputs are NCHW tensors as for the original model; with ``channels_last`` the returned module
    converts them itself, so callers need not care. With ``graph="jit"`` the spatial input size is
    fixed to the model's configured resolution (the TF 'SAME' pads are frozen as constants); the
    batch size stays free.
    """
    if graph not in GRAPH_MODES:
        raise InputError(f"graph must be one of {GRAPH_MODES}, got {graph!r}")
    module: nn.Module = folded_copy(model).to(dtype=dtype)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    module = _InferenceWrapper(module, channels_last=channels_last, dtype=dtype)
    if graph == "jit":
        example = torch.zeros(1, model.cfg.in_channels, *model.cfg.resolution)
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns that the TF 'SAME' pad sizes become constants: intended, see above.
            # torch 2.9+ also flags TorchScript as deprecated; it is still the fastest CPU path here.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(module, example)
            module = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    elif graph == "compile":
        module = torch.compile(module, dynamic=False)
    return module


class _InferenceWrapper(nn.Module):
    """Converts the NCHW float32 input to the layout and dtype the prepared model runs in, and the
    logits back to float32."""

    def __init__(self, model: nn.Module, *, channels_last: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

"""What the mobile writers (.tflite, .pte, .mlpackage) share: the input layout a phone hands the
model, the example input that fixes the traced shape, and the description each file carries of
the model inside it (architecture, preprocessing, labels), so a user can run the file alone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1

LAYOUTS = ("nhwc", "nchw")
# Every mobile file is traced at batch 1: a phone classifies one frame at a time, and a larger
# batch runs as that many invocations (the runtimes' predictors loop).
BATCH = 1


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"{option('layout')} must be one of {LAYOUTS}, got {layout!r}")


class InputLayout(nn.Module):
    """Takes the input in ``layout`` (NHWC: camera frames as phones hold them) and hands the model
    NCHW. The converters fold the permute into the first convolution's filter layout.
    ``contiguous``: make the permuted input a contiguous copy, which ExecuTorch's XNNPACK
    partitioner takes (a bare permute is lowered to an ``as_strided_copy`` kernel outside XNNPACK,
    splitting the program into two delegate calls)."""

    def __init__(self, model: nn.Module, layout: str, *, contiguous: bool = False) -> None:
        super().__init__()
        check_layout(layout)
        self.model = model
        self.nhwc = layout == "nhwc"
        self.contiguous = contiguous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
            if self.contiguous:
                x = x.contiguous()
        return self.model(x)


def example_input(model: MobileNetV1, layout: str, batch: int = BATCH) -> torch.Tensor:
    """A zero batch of the model's configured size in ``layout``: the shape the file is traced at."""
    h, w = model.arch_cfg.resolution
    c = model.arch_cfg.in_channels
    return torch.zeros(batch, h, w, c) if layout == "nhwc" else torch.zeros(batch, c, h, w)


def model_description(model: MobileNetV1, precision: str, layout: str) -> dict[str, Any]:
    """The part of every mobile file's metadata that describes the model: its name, architecture,
    precision, input layout, preprocessing and one label per output (class indices if unnamed)."""
    from mobilenet.preprocess import preprocess_for  # noqa: PLC0415

    pretrained = getattr(model, "pretrained_cfg", None)
    labels = list(pretrained.label_names) if pretrained is not None else []
    if len(labels) != model.arch_cfg.num_classes:
        labels = [str(i) for i in range(model.arch_cfg.num_classes)]
    preprocess = preprocess_for(model)
    return {
        "name": getattr(pretrained, "name", model.arch_cfg.name),
        "arch": model.arch_cfg.to_dict(),
        "precision": precision,
        "layout": layout,
        "preprocess": preprocess.to_dict(),
        "labels": labels,
    }

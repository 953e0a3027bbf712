"""Read timm ``mobilenetv1_*`` state dicts (``.pth`` / ``.bin`` via ``torch.load(weights_only=True)``,
or ``.safetensors``).

timm's keys: ``conv_stem``, ``bn1``, ``blocks.{stage}.{block}.conv_dw`` / ``bn1`` / ``conv_pw`` /
``bn2``, ``classifier``. timm pads symmetrically (PyTorch ``padding=1``), uses BatchNorm eps 1e-5
and rounds channels under α to multiples of 8; its classifier has 1000 classes. The layouts are
already PyTorch's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

TIMM_BN_EPS = 1e-5
# timm's MobileNet v1 at width 1.0: the peer that `bench`, `bench --train` and `bench --device cuda` time.
TIMM_MOBILENET_V1 = "mobilenetv1_100"
_BLOCK = re.compile(r"blocks\.(\d+)\.(\d+)\.conv_dw\.weight")


def is_timm_state_dict(state: Mapping[str, object]) -> bool:
    return "conv_stem.weight" in state and any(_BLOCK.fullmatch(k) for k in state)


def read_timm(state: Mapping[str, torch.Tensor]) -> SourceWeights:
    if not is_timm_state_dict(state):
        raise WeightFormatError("not a timm MobileNet v1 state dict (no conv_stem.weight / blocks.*.*.conv_dw)")

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise WeightFormatError(f"timm state dict lacks {key!r}")
        return state[key].detach().to(torch.float32).cpu().numpy()

    def bn(prefix: str) -> tuple[np.ndarray, ...]:
        return tuple(get(f"{prefix}.{p}") for p in ("weight", "bias", "running_mean", "running_var"))

    convs = [ConvParams("conv_stem.weight", "conv", get("conv_stem.weight"), bn=bn("bn1"))]
    blocks = sorted((int(m[1]), int(m[2])) for k in state if (m := _BLOCK.fullmatch(k)))
    for stage, block in blocks:
        prefix = f"blocks.{stage}.{block}"
        convs.append(ConvParams(f"{prefix}.conv_dw.weight", "depthwise", get(f"{prefix}.conv_dw.weight"),
                                bn=bn(f"{prefix}.bn1")))
        convs.append(ConvParams(f"{prefix}.conv_pw.weight", "conv", get(f"{prefix}.conv_pw.weight"),
                                bn=bn(f"{prefix}.bn2")))
    if "conv_head.weight" in state:
        raise WeightFormatError("this timm model has a conv_head (e.g. mobilenetv1_100h): not MobileNet v1 "
                                "as published")
    return SourceWeights(
        format="timm",
        convs=convs,
        classifier_weight=get("classifier.weight"),
        classifier_bias=get("classifier.bias") if "classifier.bias" in state else None,
        classifier_name="classifier.weight",
        folded=False,
        bn_eps=TIMM_BN_EPS,
        arch_hints={"padding": "symmetric", "rounding": "timm"},
    )

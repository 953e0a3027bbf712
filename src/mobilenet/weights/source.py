"""What every converter produces, and how it becomes a ``MobileNetV1``.

A converter reads a foreign file into ``SourceWeights``: the convolutions in network order (stem,
then depthwise / pointwise pairs) in PyTorch layout, each with either a bias (BatchNorm folded, as
in TFLite) or its BatchNorm statistics, plus the classifier. ``infer_config`` reads the
architecture settings off the shapes and ``to_state`` checks every tensor against the model that
``mobilenet.arch`` describes for those settings (the first tensor that does not fit is named in the
error, in the source's own naming) and returns the state dict of that model. No model is built
here: the factory (``mobilenet.factory``) builds it once, when every setting is settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mobilenet.arch import BLOCKS, ArchConfig, block_settings, layers
from mobilenet.errors import InputError, option
from mobilenet.model import state_shapes


class WeightFormatError(InputError):
    """A weight file of the wrong kind, truncated, or with tensors that do not fit the model."""


@dataclass
class ConvParams:
    """One conv layer in PyTorch layout (out, in/groups, kh, kw). ``bn`` is (gamma, beta, mean, var)."""

    name: str
    kind: str  # "conv" or "depthwise", as the source declares it
    weight: np.ndarray
    bias: np.ndarray | None = None
    bn: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    stride: int | None = None


@dataclass
class SourceWeights:
    format: str
    convs: list[ConvParams]
    classifier_weight: np.ndarray  # (classes, features)
    classifier_bias: np.ndarray | None
    classifier_name: str
    folded: bool
    bn_eps: float | None  # as stored in the source (TF graphs carry it); None when unknown
    resolution: tuple[int, int] | None = None  # the input size the source was built for, if it says
    input_quantization: tuple[float, int] | None = None  # (scale, zero point) of a uint8 input
    arch_hints: dict[str, Any] = field(default_factory=dict)  # settings the format implies (padding...)
    labels: tuple[str, ...] | None = None  # class names the source lists (transformers' id2label), one per output


def infer_config(src: SourceWeights, **settings: Any) -> ArchConfig:
    """Architecture settings read off the tensors; ``settings`` (e.g. resolution) take precedence.

    α comes from the classifier's input width (1024·α), the depth multiplier from the first
    depthwise conv, the class count from the classifier, the variant from the number of convs.
    """
    features = int(src.classifier_weight.shape[1])
    values: dict[str, Any] = {
        "alpha": features / BLOCKS[-1][0],
        "num_classes": int(src.classifier_weight.shape[0]),
    }
    if len(src.convs) >= 2 and src.convs[1].kind == "depthwise":
        dw = src.convs[1].weight
        values["depth_multiplier"] = max(1, dw.shape[0] // max(1, src.convs[0].weight.shape[0]))
    n_blocks = len(src.convs) - 1
    if src.convs and all(c.kind == "conv" for c in src.convs) and n_blocks == len(BLOCKS):
        values["variant"] = "conv"
    elif n_blocks == 2 * len(block_settings("shallow")):
        values["variant"] = "shallow"
    if src.resolution:
        values["resolution"] = src.resolution
    if src.bn_eps is not None:
        values["bn_eps"] = float(src.bn_eps)
    values.update(src.arch_hints)
    values.update({k: v for k, v in settings.items() if v is not None})
    return ArchConfig(**values)


def _check_shape(name: str, got: tuple[int, ...], target: str, want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise WeightFormatError(
            f"{name}: shape {tuple(got)} does not fit {target}, which expects {tuple(want)} (PyTorch layout); "
            f"check {option('alpha')} / {option('num_classes')} / {option('depth_multiplier')} or the file"
        )


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def to_state(src: SourceWeights, cfg: ArchConfig) -> dict[str, torch.Tensor]:
    """The state dict of ``MobileNetV1(cfg)`` (folded structure if the source is folded) holding
    the source's values; every shape is checked against ``mobilenet.arch`` first."""
    convs = [layer for layer in layers(cfg) if layer.kind not in ("pool", "fc")]
    if len(src.convs) > len(convs):
        raise WeightFormatError(
            f"{src.format} file has {len(src.convs)} convolutions before the classifier; {cfg.name} ({cfg.variant}) "
            f"has {len(convs)} (first extra: {src.convs[len(convs)].name})"
        )
    if len(src.convs) < len(convs):
        raise WeightFormatError(
            f"{src.format} file has {len(src.convs)} convolutions before the classifier; {cfg.name} ({cfg.variant}) "
            f"has {len(convs)}: is the model split in several files (give them all, in order) or truncated?"
        )
    shapes = state_shapes(cfg, folded=src.folded)
    state: dict[str, torch.Tensor] = {}
    for layer, conv in zip(convs, src.convs):
        prefix = layer.name
        _check_shape(conv.name, conv.weight.shape, prefix, shapes[f"{prefix}.conv.weight"])
        state[f"{prefix}.conv.weight"] = _tensor(conv.weight)
        channels = (layer.out_channels,)
        if src.folded:
            bias = conv.bias if conv.bias is not None else np.zeros(channels, np.float32)
            _check_shape(conv.name + " (bias)", bias.shape, prefix + ".conv.bias", channels)
            state[f"{prefix}.conv.bias"] = _tensor(bias)
            continue
        if conv.bn is None:
            raise WeightFormatError(f"{conv.name}: no BatchNorm parameters found for this convolution")
        for part, key in zip(conv.bn, ("weight", "bias", "running_mean", "running_var")):
            _check_shape(conv.name + " (BatchNorm)", part.shape, prefix + ".bn", channels)
            state[f"{prefix}.bn.{key}"] = _tensor(part)
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0)
    _check_shape(src.classifier_name, src.classifier_weight.shape, "classifier", shapes["classifier.weight"])
    state["classifier.weight"] = _tensor(src.classifier_weight)
    bias = src.classifier_bias if src.classifier_bias is not None else np.zeros(shapes["classifier.bias"], np.float32)
    _check_shape(src.classifier_name + " (bias)", bias.shape, "classifier.bias", shapes["classifier.bias"])
    state["classifier.bias"] = _tensor(bias)
    missing = set(shapes) - set(state)
    if missing:  # a module tree the converter does not know: a bug here, not in the file
        raise RuntimeError(f"converter left tensors unset: {sorted(missing)[:3]}")
    return state

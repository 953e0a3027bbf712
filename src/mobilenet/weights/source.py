"""What every converter produces, and how it becomes a ``MobileNetV1``.

A converter reads a foreign file into ``SourceWeights``: the convolutions in network order (stem,
then depthwise / pointwise pairs) in PyTorch layout, each with either a bias (BatchNorm folded, as
in TFLite) or its BatchNorm statistics, plus the classifier. ``infer_config`` reads the
architecture settings off the shapes and ``build_model`` checks every tensor against the model
that ``mobilenet.arch`` describes for those settings: the first tensor that does not fit is named
in the error, in the source's own naming.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mobilenet.arch import BLOCKS, ArchConfig, block_settings
from mobilenet.errors import InputError
from mobilenet.model import ConvBNAct, MobileNetV1


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
            "check --alpha / --classes / --depth-multiplier or the file"
        )


def build_model(src: SourceWeights, cfg: ArchConfig) -> MobileNetV1:
    """A ``MobileNetV1(cfg)`` holding the source's values, every shape checked first."""
    model = MobileNetV1(cfg)
    layers = list(model.conv_layers())
    if len(src.convs) > len(layers):
        raise WeightFormatError(
            f"{src.format} file has {len(src.convs)} convolutions before the classifier; {cfg.name} ({cfg.variant}) "
            f"has {len(layers)} (first extra: {src.convs[len(layers)].name})"
        )
    if len(src.convs) < len(layers):
        raise WeightFormatError(
            f"{src.format} file has {len(src.convs)} convolutions before the classifier; {cfg.name} ({cfg.variant}) "
            f"has {len(layers)}: is the model split in several files (give them all, in order) or truncated?"
        )
    for (name, module), conv in zip(layers, src.convs):
        _check_shape(conv.name, conv.weight.shape, name, tuple(module.conv.weight.shape))
        if conv.bias is not None:
            _check_shape(conv.name + " (bias)", conv.bias.shape, name + ".conv.bias", (module.conv.out_channels,))
        if conv.bn is not None:
            for part in conv.bn:
                _check_shape(conv.name + " (BatchNorm)", part.shape, name + ".bn", (module.conv.out_channels,))
    _check_shape(src.classifier_name, src.classifier_weight.shape, "classifier", tuple(model.classifier.weight.shape))
    with torch.no_grad():
        for (_, module), conv in zip(layers, src.convs):
            _load_conv(module, conv, src.folded)
        model.classifier.weight.copy_(torch.from_numpy(np.ascontiguousarray(src.classifier_weight)))
        if src.classifier_bias is not None:
            model.classifier.bias.copy_(torch.from_numpy(np.ascontiguousarray(src.classifier_bias)))
        else:
            model.classifier.bias.zero_()
    return model.eval()


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _load_conv(module: ConvBNAct, conv: ConvParams, folded: bool) -> None:
    if folded:
        module.unfold_structure()
        module.conv.weight.copy_(_tensor(conv.weight))
        if conv.bias is not None:
            module.conv.bias.copy_(_tensor(conv.bias))
        return
    module.conv.weight.copy_(_tensor(conv.weight))
    if conv.bn is None:
        raise WeightFormatError(f"{conv.name}: no BatchNorm parameters found for this convolution")
    gamma, beta, mean, var = conv.bn
    bn = module.bn
    bn.weight.copy_(_tensor(gamma))
    bn.bias.copy_(_tensor(beta))
    bn.running_mean.copy_(_tensor(mean))
    bn.running_var.copy_(_tensor(var))

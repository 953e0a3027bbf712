"""Read Hugging Face transformers MobileNet v1 checkpoints (``MobileNetV1ForImageClassification``).

A checkpoint is a directory (a hub snapshot, or what ``save_pretrained`` writes) with
``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``, or the weights file alone.
Keys::

    mobilenet_v1.conv_stem.convolution.weight, .normalization.{weight,bias,running_mean,running_var}
    mobilenet_v1.layer.{j}.convolution.weight ...   j = 0..25: depthwise, pointwise, depthwise, ...
    classifier.weight, classifier.bias              (num_labels, 1024·α)

Layouts are PyTorch's. From ``config.json``: ``tf_padding`` (True: TF 'SAME', computed from the
input at run time as ours; False: symmetric ``padding=1``), ``layer_norm_eps`` (BatchNorm eps,
1e-3), ``hidden_act`` (relu6), ``image_size``, and ``id2label`` (Google's checkpoints have 1001
labels, index 0 "background", like TF's; a fine-tuned checkpoint's own class names, which become
its labels). Without ``config.json`` the file alone is refused unless the padding is given
(``read_config``). transformers' ``depth_multiplier`` is the width multiplier α, with TF's
``min_depth`` 8 rounding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.errors import option
from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

PREFIX = "mobilenet_v1."
STEM = PREFIX + "conv_stem"
_LAYER = re.compile(re.escape(PREFIX) + r"layer\.(\d+)\.convolution\.weight")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
ACTIVATIONS = {"relu6": "relu6", "relu": "relu"}


def is_hf_state_dict(state: Mapping[str, object]) -> bool:
    return f"{STEM}.convolution.weight" in state


def is_hf_directory(path: Path) -> bool:
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    try:
        return json.loads((path / "config.json").read_text()).get("model_type") == "mobilenet_v1"
    except (OSError, ValueError):
        return False


def read_config(path: Path, *, padding_given: bool) -> dict[str, Any]:
    """The ``config.json`` of the checkpoint at ``path``: a directory, or a weights file with its
    config.json beside it. Without one, the padding, activation, eps and labels are unknown:
    refused unless the caller gives the padding (then transformers' defaults hold for the rest)."""
    folder = path if path.is_dir() else path.parent
    if is_hf_directory(folder):
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if padding_given:
        return {}
    raise WeightFormatError(
        f"{path.name}: a transformers weights file without its config.json, which says its padding, activation, "
        "BatchNorm eps and labels: give the checkpoint's folder (or put config.json beside the file), or give "
        f"the padding ({option('padding', 'tf')} or symmetric) to take transformers' defaults for the rest"
    )


def labels_of(config: dict[str, Any], classes: int) -> tuple[str, ...] | None:
    """The class names ``id2label`` lists, in index order; None when it names none (absent, or
    transformers' placeholders ``LABEL_0``, ``LABEL_1``, ...)."""
    id2label = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
    if not id2label or all(re.fullmatch(r"LABEL_\d+", v) for v in id2label.values()):
        return None
    if sorted(id2label) != list(range(classes)):
        raise WeightFormatError(f"transformers config: id2label names {len(id2label)} classes, the classifier "
                                f"has {classes}")
    return tuple(id2label[i] for i in range(classes))


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise WeightFormatError(f"{directory}: no {' or '.join(WEIGHT_FILES)} beside config.json")


def read_hf(state: Mapping[str, torch.Tensor], config: dict[str, Any] | None = None) -> SourceWeights:
    if not is_hf_state_dict(state):
        raise WeightFormatError(f"not a transformers MobileNet v1 checkpoint (no {STEM}.convolution.weight)")
    config = config or {}

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise WeightFormatError(f"transformers checkpoint lacks {key!r}")
        return state[key].detach().to(torch.float32).cpu().numpy()

    def bn(prefix: str) -> tuple[np.ndarray, ...]:
        return tuple(get(f"{prefix}.normalization.{p}") for p in ("weight", "bias", "running_mean", "running_var"))

    convs = [ConvParams(f"{STEM}.convolution.weight", "conv", get(f"{STEM}.convolution.weight"), bn=bn(STEM))]
    layers = sorted(int(m[1]) for k in state if (m := _LAYER.fullmatch(k)))
    if layers != list(range(len(layers))):
        raise WeightFormatError(f"transformers checkpoint: layers {layers[:4]}... are not numbered 0, 1, 2, ...")
    for j in layers:
        prefix = f"{PREFIX}layer.{j}"
        weight = get(f"{prefix}.convolution.weight")
        kind = "depthwise" if weight.shape[1] == 1 and weight.shape[2:] == (3, 3) else "conv"
        convs.append(ConvParams(f"{prefix}.convolution.weight", kind, weight, bn=bn(prefix)))
    if "classifier.weight" not in state:
        raise WeightFormatError("transformers checkpoint has no classifier (a MobileNetV1Model, not "
                                "MobileNetV1ForImageClassification)")
    activation = config.get("hidden_act", "relu6")
    if activation not in ACTIVATIONS:
        raise WeightFormatError(f"transformers config hidden_act={activation!r}: only relu6 and relu are MobileNet v1")
    hints: dict[str, Any] = {"padding": "tf" if config.get("tf_padding", True) else "symmetric",
                             "activation": ACTIVATIONS[activation]}
    size = config.get("image_size")
    resolution = (int(size), int(size)) if isinstance(size, int) else None
    return SourceWeights(
        format="transformers",
        convs=convs,
        classifier_weight=get("classifier.weight"),
        classifier_bias=get("classifier.bias") if "classifier.bias" in state else None,
        classifier_name="classifier.weight",
        folded=False,
        bn_eps=float(config.get("layer_norm_eps", 1e-3)),
        resolution=resolution,
        arch_hints=hints,
        labels=labels_of(config, int(state["classifier.weight"].shape[0])),
    )

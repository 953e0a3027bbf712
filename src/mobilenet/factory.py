"""``mobilenet_v1()``: the one entry point that builds a MobileNet v1, with or without published
weights, and ``load_model(weights, **settings)``, the same for commands and library calls that
hold their settings as a dict. It stands above both ``mobilenet.model`` (which knows nothing of
weights) and ``mobilenet.weights`` (which reads and checks tensors but builds nothing until asked):
the weights' architecture and the user's settings are settled first, then the model is built once.
"""

from __future__ import annotations

import os
from typing import Any

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1, check_arch_settings
from mobilenet.weights import LoadedWeights, find_pretrained, load_weights, model_from_weights, settle


def mobilenet_v1(
    alpha: float | None = None,
    resolution: int | tuple[int, int] | None = None,
    variant: arch.Variant | None = None,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    source: str | None = None,
    **kwargs: Any,
) -> MobileNetV1:
    """Build MobileNet v1 (defaults: alpha 1.0, 224x224, the separable network of Table 1).
    Further keyword arguments are the fields of ``ArchConfig`` (any other is an ``InputError``
    listing them: timm's ``in_chans`` is ``in_channels`` here).

    ``pretrained=True`` picks the published ImageNet model for ``alpha`` and ``resolution``
    (TF-slim's float models by default; ``source`` chooses the publisher: ``tf``, ``tf-quant``,
    ``keras``, ``timm`` or ``hf``), as Keras' ``MobileNet(alpha=0.5, input_shape=(160, 160, 3),
    weights="imagenet")`` does; at a size nobody published, the α's 224 weights are used at the size
    asked for. ``weights=`` names a registry entry (``mobilenet pretrained``) or a file or directory
    (ours, TFLite, TF GraphDef, Keras, timm, transformers, or a training checkpoint).

    Pretrained weights fix the architecture; settings given here must agree with them
    (``WeightsMismatch``, an ``InputError``, otherwise), except ``num_classes`` (ImageNet weights
    give 1,000 classes, TF's background logit dropped; 1001 keeps it; any other count is a new
    classifier for fine-tuning), ``resolution`` (the weights work at any size), ``dropout`` and
    ``bn_momentum``. Keras weights come with Keras' own padding (``padding="keras"``), so they give
    Keras' outputs at every input size.
    """
    given = {"alpha": alpha, "resolution": resolution, "variant": variant}
    settings = {k: v for k, v in given.items() if v is not None} | kwargs
    if source is not None and not pretrained and weights is None:
        raise InputError("source= chooses between published weights: give pretrained=True with it")
    if pretrained and weights is None:
        size = ArchConfig(resolution=resolution).resolution if resolution is not None else None
        if size is not None and size[0] != size[1]:
            size = None  # nobody published non-square weights: take the α's 224 model
        weights = find_pretrained(alpha, size[0] if size else None, source).name
    elif source is not None:
        raise InputError("give either weights= or source=, not both")
    return _build(weights, settings)


def load_model(
    weights: str | os.PathLike[str] | LoadedWeights | None = None, **settings: Any
) -> MobileNetV1:
    """The model for ``weights`` (a registry name, a file or directory, ``LoadedWeights`` already
    read, or None for a freshly initialised network) with ``settings`` (``ArchConfig`` fields;
    None values are "not given") merged and checked as ``mobilenet_v1`` does: a setting that
    contradicts the weights raises ``WeightsMismatch``, naming it. Built once, in eval mode."""
    return _build(weights, {k: v for k, v in settings.items() if v is not None}).eval()


def _build(weights: str | os.PathLike[str] | LoadedWeights | None, settings: dict[str, Any]) -> MobileNetV1:
    check_arch_settings(settings)  # before any weights are read (or fetched), and with or without them
    if isinstance(weights, LoadedWeights):
        loaded = settle(weights, settings)
    else:
        loaded = load_weights(weights, **settings) if weights is not None else None
    arch_cfg = loaded.arch_cfg if loaded is not None else ArchConfig(**settings)
    check_memory(arch_cfg, mode="build")  # refuse, from the cost model, what cannot fit before allocating
    return model_from_weights(loaded) if loaded is not None else MobileNetV1(arch_cfg)

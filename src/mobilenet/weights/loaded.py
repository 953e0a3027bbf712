"""What the weights layer hands the factory: the architecture, the tensors and their config.

``LoadedWeights`` is the one result of every reader (registry entry, converted foreign file, our
safetensors, a training checkpoint), and what the writer and the checksum take. ``settle`` merges
what the user asked for into it and refuses what contradicts the weights, before any model exists;
``mobilenet.factory`` then builds the model once from the settled result (``model_from_weights``).
``weights_of(model)`` turns a built model back into data, to save it.

Every set of tensors is checked on load (``check_tensors``): finite values, and magnitudes within
what any trained MobileNet v1 has. Measured on TensorFlow's published files (7 TFLite models, float
and uint8, BatchNorm folded, and the frozen float 1.0-224 graph): folded conv weights reach |68|,
folded biases |34|, BatchNorm running means |52| and variances 418, classifier weights |1.2| and
biases |2.4|. The bounds below leave a margin of 100x or more, so a fine-tuned model passes and a
corrupted file (4 KB of flipped bytes in a .tflite gave classifier weights of 2.4e24) does not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1, check_arch_settings
from mobilenet.preprocess import Preprocess
from mobilenet.weights.labels import IMAGENET_1000, label_set_for
from mobilenet.weights.registry import PretrainedCfg
from mobilenet.weights.source import WeightFormatError

# Largest |value| accepted per kind of tensor (see the module docstring for the measured ranges).
MAX_ABS_CLASSIFIER = 100.0
MAX_ABS_OTHER = 1e5
# Settings no weight depends on: the weights may be used with other values.
FREE_SETTINGS = frozenset({"resolution", "dropout", "bn_momentum"})


class WeightsMismatch(InputError):
    """A setting that contradicts the weights (``alpha=0.5`` with 0.25-wide weights)."""

    def __init__(self, weights: str, key: str, have: Any, want: Any) -> None:
        self.weights, self.key, self.have, self.want = weights, key, have, want
        super().__init__(f"{option(key, want)} contradicts {option('weights', weights)}, which is {key}={have!r} "
                         f"(leave {option(key)} out, or drop {option('weights')} for a fresh model)")


@dataclass(frozen=True)
class LoadedWeights:
    """Tensors named as in ``MobileNetV1(arch_cfg).state_dict()`` (the folded structure if
    ``folded``), and the config that travels with them (which owns the architecture)."""

    state: dict[str, torch.Tensor]
    folded: bool
    pretrained_cfg: PretrainedCfg

    @property
    def arch_cfg(self) -> ArchConfig:
        return self.pretrained_cfg.arch_cfg


def check_tensors(state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse tensors no trained MobileNet has: NaN or infinity, absurd magnitudes, a negative
    BatchNorm variance. Names the first offending tensor."""
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        x = value.detach().float()
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise WeightFormatError(f"{where}: tensor {key!r} has {bad} NaN or infinite values: the file is corrupt")
        if not x.numel():
            continue
        biggest = float(x.abs().max())
        limit = MAX_ABS_CLASSIFIER if key.startswith("classifier.") else MAX_ABS_OTHER
        if biggest > limit:
            raise WeightFormatError(
                f"{where}: tensor {key!r} reaches |{biggest:.3g}|, far outside any trained MobileNet "
                f"(limit {limit:g}): the file is corrupt or not MobileNet weights"
            )
        if key.endswith("running_var") and float(x.min()) < 0:
            raise WeightFormatError(f"{where}: tensor {key!r} has negative variances: the file is corrupt")


def loaded(state: dict[str, torch.Tensor], folded: bool, cfg: PretrainedCfg) -> LoadedWeights:
    """Check the tensors and package them (every reader ends here)."""
    check_tensors(state, cfg.name)
    return LoadedWeights(state=state, folded=folded, pretrained_cfg=cfg)


def settle(weights: LoadedWeights, settings: dict[str, Any]) -> LoadedWeights:
    """Merge user settings (``ArchConfig`` fields) into loaded weights, refusing contradictions.

    ``resolution``, ``dropout`` and ``bn_momentum`` may differ (no tensor depends on them). For
    ``num_classes``: TF's 1001-class ImageNet weights become 1000 classes by default (the background
    logit dropped, as timm's ``label_offset`` does), ``num_classes=1001`` keeps it, any other count
    is a fresh classifier (fine-tuning). Every other setting must equal the weights'.
    """
    settings = {k: v for k, v in settings.items() if v is not None}
    check_arch_settings(settings)
    arch, cfg = weights.arch_cfg, weights.pretrained_cfg
    # Compare as ArchConfigs, so that resolution=224 equals (224, 224) and alpha=1 equals 1.0.
    wanted = arch.replace(**{k: v for k, v in settings.items() if k != "num_classes"})
    have, want = arch.to_dict(), wanted.to_dict()
    for key in want:
        if want[key] != have[key] and key not in FREE_SETTINGS:
            raise WeightsMismatch(cfg.name, key, have[key], want[key])
    state = weights.state
    classes = settings.get("num_classes")
    if classes is None and cfg.has_background_class:
        classes = 1000
    if classes is not None and classes != arch.num_classes:
        wanted = wanted.replace(num_classes=int(classes))
        state = dict(state)
        if cfg.has_background_class and classes == 1000:
            state["classifier.weight"] = state["classifier.weight"][1:].clone()
            state["classifier.bias"] = state["classifier.bias"][1:].clone()
            cfg = replace(cfg, label_set=IMAGENET_1000)
        else:
            # A fresh classifier: the factory initialises the tensors it does not receive.
            del state["classifier.weight"], state["classifier.bias"]
            cfg = cfg.with_fresh_classifier(wanted)
    preprocess = cfg.preprocess.replace(resolution=wanted.resolution)
    cfg = replace(cfg, arch_cfg=wanted, preprocess=preprocess)
    return LoadedWeights(state=state, folded=weights.folded, pretrained_cfg=cfg)


def model_from_weights(weights: LoadedWeights) -> MobileNetV1:
    """The one place a model is built from weights: ``MobileNetV1(arch_cfg)`` (folded structure if
    the tensors are folded), every tensor loaded exactly; a fresh classifier keeps its
    initialisation. The model carries ``pretrained_cfg`` and is in eval mode."""
    model = MobileNetV1(weights.arch_cfg)
    if weights.folded:
        for _, module in model.conv_layers():
            module.unfold_structure()
    expected = model.state_dict()
    fresh = {"classifier.weight", "classifier.bias"} - set(weights.state)
    missing = [k for k in expected if k not in weights.state and k not in fresh]
    if missing:
        raise WeightFormatError(
            f"{weights.pretrained_cfg.name}: tensor {missing[0]!r} is missing (architecture {weights.arch_cfg.name})"
        )
    model.load_state_dict(weights.state, strict=not fresh)
    model.pretrained_cfg = weights.pretrained_cfg
    return model.eval()


def is_folded(model: MobileNetV1) -> bool:
    """Whether every BatchNorm of ``model`` is folded into its conv (none: False; some: an error)."""
    flags = {module.folded for _, module in model.conv_layers()}
    if len(flags) > 1:
        raise InputError("some BatchNorms are folded and some are not; fold all or none before saving")
    return flags == {True}


def pretrained_cfg_of(model: MobileNetV1) -> PretrainedCfg:
    """``model.pretrained_cfg``; for a model built without published weights, the defaults:
    ``Preprocess.default`` at its resolution and the label set its class count suggests."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is not None:
        return cfg
    arch = model.arch_cfg
    return PretrainedCfg(name=arch.name, arch_cfg=arch, preprocess=Preprocess.default(arch.resolution),
                         label_set=label_set_for(arch.num_classes), description="built without published weights")


def weights_of(model: MobileNetV1, pretrained_cfg: PretrainedCfg | None = None) -> LoadedWeights:
    """A built model's tensors as data again, to save (``io.save_safetensors``) or hash them.
    ``pretrained_cfg``: what travels with them (default: ``pretrained_cfg_of(model)``); its
    architecture becomes the model's."""
    cfg = pretrained_cfg if pretrained_cfg is not None else pretrained_cfg_of(model)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return LoadedWeights(state=state, folded=is_folded(model), pretrained_cfg=replace(cfg, arch_cfg=model.arch_cfg))

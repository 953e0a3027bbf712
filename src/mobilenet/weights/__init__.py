"""Published MobileNet v1 weights: registry, fetching, converters, our safetensors format.

    from mobilenet.weights import load_pretrained
    model = load_pretrained()                          # TF-slim float 1.0-224, 1001 classes
    model = load_pretrained("tflite_mobilenet_v1_0.25_224")
    model = load_pretrained("converted.safetensors")   # written by `mobilenet convert`
    model = load_pretrained("runs/x/last.pt")          # a `mobilenet train` checkpoint
    model = load_pretrained(num_classes=10)            # fresh 10-class classifier, for fine-tuning
    model.pretrained_cfg.preprocess, model.pretrained_cfg.label_names

``convert(file)`` reads TFLite, TF GraphDef, Keras .h5 and timm files (see ``convert``);
``save_safetensors`` / ``load_safetensors`` write and read our format (see ``io``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights.convert import FORMATS, convert, detect_format, load_torch_file
from mobilenet.weights.fetch import FetchError, cache_dir, fetch_file, sha256_file
from mobilenet.weights.io import build_from_state, load_safetensors, save_safetensors, tensors_sha256
from mobilenet.weights.labels import IMAGENET_1000, IMAGENET_1001, imagenet_names
from mobilenet.weights.registry import DEFAULT, REGISTRY, PretrainedCfg, WeightFile, get_pretrained_cfg, list_pretrained
from mobilenet.weights.source import WeightFormatError

__all__ = [
    "DEFAULT", "FORMATS", "REGISTRY", "FetchError", "PretrainedCfg", "WeightFile", "WeightFormatError",
    "cache_dir", "convert", "detect_format", "fetch_file", "fetch_pretrained", "get_pretrained_cfg",
    "imagenet_names", "list_pretrained", "load_checkpoint", "load_pretrained", "load_safetensors",
    "save_safetensors", "sha256_file",
]

# Settings that do not change any weight's shape or meaning: the weights may be used with others.
FREE_SETTINGS = frozenset({"resolution", "dropout", "bn_momentum"})


def fetch_pretrained(name: str, *, quiet: bool = False) -> Path:
    """The converted ``.safetensors`` of a registry entry, fetching and converting on first use."""
    entry = get_pretrained_cfg(name)
    target = cache_dir() / "converted" / f"{entry.name}.safetensors"
    if target.is_file():
        return target
    pinned_by_tensors = entry.tensors_sha256 is not None
    files = [fetch_file(f.filename, f.sha256, f.sources, quiet=quiet, allow_unpinned=pinned_by_tensors)
             for f in entry.files]
    model, _ = convert(files, entry.format, resolution=tuple(entry.arch["resolution"]))
    expected = entry.arch_config
    if model.cfg != expected:
        raise WeightFormatError(f"{name}: the converted weights are {model.cfg}, the registry says {expected}")
    if pinned_by_tensors and tensors_sha256(model) != entry.tensors_sha256:
        for path in files:
            if path.name.startswith("unverified-"):
                path.unlink(missing_ok=True)
        raise FetchError(f"{name}: the downloaded weights differ from the pinned ones (tensor checksum mismatch)")
    source = f"{entry.description}; " + ", ".join(f"{f.filename} sha256 {f.sha256}" for f in entry.files)
    save_safetensors(model, target, entry, source=source)
    if not quiet:
        print(f"converted {name} -> {target}", file=sys.stderr)
    return target


def load_checkpoint(path: str | os.PathLike[str], *, ema: bool = False) -> tuple[MobileNetV1, PretrainedCfg]:
    """A ``mobilenet train`` checkpoint: {"model", "arch", "preprocess"?, "ema"?, ...}, read with
    ``torch.load(weights_only=True)``. ``ema=True`` takes the EMA weights when present."""
    path = Path(path)
    ckpt = load_torch_file(path)
    if not (isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("arch"), dict)):
        raise WeightFormatError(f"{path.name}: not a mobilenet training checkpoint (needs 'model' and 'arch')")
    arch = ArchConfig.from_dict(ckpt["arch"])
    state = ckpt["ema"] if ema and isinstance(ckpt.get("ema"), dict) else ckpt["model"]
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP without unwrapping
    folded = any(k.endswith("conv.bias") for k in state) and not any(k.endswith("bn.weight") for k in state)
    model = build_from_state(state, arch, folded, path.name)
    preprocess = Preprocess.from_dict(ckpt["preprocess"]) if isinstance(ckpt.get("preprocess"), dict) \
        else Preprocess(resolution=arch.resolution)
    labels = ckpt.get("classes") or ckpt.get("labels")
    label_set = {1001: IMAGENET_1001, 1000: IMAGENET_1000}.get(arch.num_classes, "custom") if not labels else "custom"
    cfg = PretrainedCfg(
        name=path.stem, arch=arch.to_dict(), preprocess=preprocess, label_set=label_set, format="checkpoint",
        description=f"training checkpoint {path.name}", labels=tuple(map(str, labels)) if labels else None,
    )
    return model, cfg


def _load_any(weights: str | os.PathLike[str], settings: dict[str, Any]) -> tuple[MobileNetV1, PretrainedCfg]:
    if isinstance(weights, str) and weights in REGISTRY:
        model, _ = load_safetensors(fetch_pretrained(weights))
        return model, replace(REGISTRY[weights], arch=model.cfg.to_dict())
    path = Path(weights)
    if not path.exists():
        raise InputError(
            f"{weights!r} is neither a known weights name nor an existing file; known: {', '.join(list_pretrained())}"
        )
    fmt = detect_format(path)
    if fmt == "mobilenet":
        return load_safetensors(path)
    if fmt == "checkpoint":
        return load_checkpoint(path)
    # A foreign file, converted on the fly; the settings help read it (Keras files lack the resolution).
    return convert(path, fmt, **{k: v for k, v in settings.items() if k != "num_classes"})


def load_pretrained(weights: str | os.PathLike[str] | None = None, **arch_settings: Any) -> MobileNetV1:
    """A ``MobileNetV1`` holding published or saved weights, in eval mode.

    ``weights``: None (the default entry, TF-slim float 1.0-224), a registry name
    (``list_pretrained()``), or a file: our ``.safetensors``, a ``mobilenet train`` checkpoint, or a
    foreign file any converter reads. ``arch_settings`` (``ArchConfig`` fields) must agree with the
    weights, except: ``num_classes`` replaces the classifier (1001 -> 1000 drops TF's background
    logit and keeps the ImageNet classes exact; any other number is a fresh classifier for
    fine-tuning), and ``resolution``, ``dropout``, ``bn_momentum`` may differ (no weight depends
    on them). The result carries ``model.pretrained_cfg`` (a ``PretrainedCfg``).
    """
    settings = {k: v for k, v in arch_settings.items() if v is not None}
    unknown = set(settings) - set(ArchConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown architecture settings {sorted(unknown)}")
    model, cfg = _load_any(DEFAULT if weights is None else weights, settings)
    # Compare as ArchConfigs, so that resolution=224 equals (224, 224) and alpha=1 equals 1.0.
    wanted = model.cfg.replace(**{k: v for k, v in settings.items() if k != "num_classes"})
    have, want = model.cfg.to_dict(), wanted.to_dict()
    for key in want:
        if want[key] != have[key] and key not in FREE_SETTINGS:
            raise InputError(
                f"the weights {cfg.name!r} are {key}={have[key]!r}; {key}={want[key]!r} does not fit them "
                f"(build MobileNetV1({key}={want[key]!r}) without pretrained weights instead)"
            )
    if wanted != model.cfg:  # only settings no weight depends on differ
        model.cfg = wanted
        model.dropout.p = wanted.dropout
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = wanted.bn_momentum
        cfg = replace(cfg, arch=wanted.to_dict(), preprocess=cfg.preprocess.replace(resolution=wanted.resolution))
    classes = settings.get("num_classes")
    if classes is not None and classes != model.cfg.num_classes:
        cfg = _replace_classifier(model, cfg, int(classes))
    model.pretrained_cfg = cfg
    return model.eval()


def _replace_classifier(model: MobileNetV1, cfg: PretrainedCfg, classes: int) -> PretrainedCfg:
    if cfg.has_background_class and classes == 1000:
        with torch.no_grad():
            old = model.classifier
            new = torch.nn.Linear(old.in_features, 1000).to(old.weight.device)
            new.weight.copy_(old.weight[1:])
            new.bias.copy_(old.bias[1:])
        model.classifier = new
        model.cfg = model.cfg.replace(num_classes=1000)
        return replace(cfg, arch=model.cfg.to_dict(), label_set=IMAGENET_1000)
    model.reset_classifier(classes)
    return replace(cfg, arch=model.cfg.to_dict(), label_set="custom", labels=None, published={})

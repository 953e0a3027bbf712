"""Published MobileNet v1 weights: registry, fetching, converters, our safetensors format.

The weights layer reads and checks; it does not patch models. Every reader returns
``LoadedWeights`` (architecture, tensors, pretrained config); ``load_weights`` merges the user's
settings into it and refuses contradictions (``loaded.settle``) before any model exists; the
model is then built once (``build_model``; ``mobilenet.factory.mobilenet_v1`` is the public
entry point above both)::

    from mobilenet.weights import load_pretrained, load_weights
    model = load_pretrained()                          # TF-slim float 1.0-224, 1,000 classes
    model = load_pretrained("keras_mobilenet_v1_0.5_160")
    model = load_pretrained("tflite_mobilenet_v1_0.25_224", num_classes=1001)  # keep TF's background
    model = load_pretrained("converted.safetensors")   # written by `mobilenet convert`
    model = load_pretrained("runs/x/last.pt")          # a `mobilenet train` checkpoint
    model = load_pretrained(num_classes=10)            # fresh 10-class classifier, for fine-tuning
    model.pretrained_cfg.preprocess, model.pretrained_cfg.label_names
    weights = load_weights("hub-snapshot-dir/", resolution=192)  # LoadedWeights, nothing built

``convert(file)`` / ``read_weights(file)`` read TFLite, TF GraphDef, Keras (.h5, .weights.h5,
.keras), timm and transformers files (see ``convert``); ``save_safetensors`` /
``load_safetensors`` write and read our format (see ``io``); ``decode_predictions`` turns logits
into labels and scores (see ``labels``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights.convert import FORMATS, convert, detect_format, load_torch_file, read_weights
from mobilenet.weights.fetch import FetchError, cache_dir, fetch_file, sha256_file
from mobilenet.weights.io import check_state, load_safetensors, read_safetensors, save_safetensors, tensors_sha256
from mobilenet.weights.labels import IMAGENET_1000, IMAGENET_1001, decode_predictions, imagenet_names
from mobilenet.weights.loaded import (
    FREE_SETTINGS,
    LoadedWeights,
    WeightsMismatch,
    build_model,
    check_tensors,
    loaded,
    settle,
)
from mobilenet.weights.registry import (
    DEFAULT,
    FAMILIES,
    REGISTRY,
    PretrainedCfg,
    WeightFile,
    find_pretrained,
    get_pretrained_cfg,
    list_pretrained,
)
from mobilenet.weights.source import WeightFormatError

__all__ = [
    "DEFAULT", "FAMILIES", "FORMATS", "FREE_SETTINGS", "REGISTRY", "FetchError", "LoadedWeights", "PretrainedCfg",
    "WeightFile", "WeightFormatError", "WeightsMismatch", "build_model", "cache_dir", "check_tensors", "convert",
    "decode_predictions", "detect_format", "fetch_file", "fetch_pretrained", "find_pretrained", "get_pretrained_cfg",
    "imagenet_names", "list_pretrained", "load_checkpoint", "load_pretrained", "load_safetensors", "load_weights",
    "read_checkpoint", "read_safetensors", "read_weights", "save_safetensors", "sha256_file",
]


def fetch_pretrained(name: str, *, quiet: bool = False) -> Path:
    """The converted ``.safetensors`` of a registry entry, fetching and converting on first use.

    Stored as the publisher's file holds it (TF's 1001 classes included); ``load_weights`` applies
    the user-facing defaults."""
    entry = get_pretrained_cfg(name)
    target = cache_dir() / "converted" / f"{entry.name}.safetensors"
    if target.is_file():
        return target
    settings = {"resolution": tuple(entry.arch["resolution"]), **entry.convert_settings}

    def same_tensors(path: Path) -> bool:  # for `unpinned:` sources: the converted tensors must match
        model, _ = convert([path], entry.format, **settings)
        return tensors_sha256(model) == entry.tensors_sha256

    verify = same_tensors if entry.tensors_sha256 is not None else None
    files = [fetch_file(f.filename, f.sha256, f.sources, quiet=quiet, verify=verify) for f in entry.files]
    model, _ = convert(files, entry.format, **settings)
    expected = entry.arch_config
    if model.arch_cfg != expected:
        raise WeightFormatError(f"{name}: the converted weights are {model.arch_cfg}, the registry says {expected}")
    if entry.tensors_sha256 is not None and tensors_sha256(model) != entry.tensors_sha256:
        raise FetchError(f"{name}: the fetched weights differ from the pinned ones (tensor checksum mismatch)")
    checksums = ", ".join(f"{f.filename} sha256 {f.sha256 or sha256_file(p) + ' (not pinned)'}"
                          for f, p in zip(entry.files, files))
    save_safetensors(model, target, entry, source=f"{entry.description}; {checksums}")
    if not quiet:
        print(f"converted {name} -> {target}", file=sys.stderr)
    return target


def read_checkpoint(path: str | os.PathLike[str], *, ema: bool = False) -> LoadedWeights:
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
    check_state(state, arch, folded, path.name)
    preprocess = Preprocess.from_dict(ckpt["preprocess"]) if isinstance(ckpt.get("preprocess"), dict) \
        else Preprocess(resolution=arch.resolution)
    labels = ckpt.get("classes") or ckpt.get("labels")
    label_set = {1001: IMAGENET_1001, 1000: IMAGENET_1000}.get(arch.num_classes, "custom") if not labels else "custom"
    cfg = PretrainedCfg(
        name=path.stem, arch=arch.to_dict(), preprocess=preprocess, label_set=label_set, format="checkpoint",
        description=f"training checkpoint {path.name}", labels=tuple(map(str, labels)) if labels else None,
    )
    return loaded(arch, state, folded, cfg)


def load_checkpoint(path: str | os.PathLike[str], *, ema: bool = False) -> tuple[MobileNetV1, PretrainedCfg]:
    weights = read_checkpoint(path, ema=ema)
    return build_model(weights), weights.pretrained_cfg


def _read_any(weights: str | os.PathLike[str], settings: dict[str, Any]) -> LoadedWeights:
    if isinstance(weights, str) and weights in REGISTRY:
        found = read_safetensors(fetch_pretrained(weights))
        entry = REGISTRY[weights]
        return replace(found, pretrained_cfg=replace(entry, arch=found.arch_cfg.to_dict()))
    path = Path(weights)
    if not path.exists():
        raise InputError(
            f"{weights!r} is neither a known weights name nor an existing file or directory; "
            f"known names: `mobilenet pretrained` ({len(REGISTRY)} entries, e.g. {DEFAULT})"
        )
    fmt = detect_format(path)
    if fmt == "mobilenet":
        return read_safetensors(path)
    if fmt == "checkpoint":
        return read_checkpoint(path)
    # A foreign file, converted on the fly; the settings help read it (Keras .h5 lacks the resolution).
    return read_weights(path, fmt, **{k: v for k, v in settings.items() if k != "num_classes"})


def load_weights(weights: str | os.PathLike[str] | None = None, **arch_settings: Any) -> LoadedWeights:
    """Published or saved weights with the user's settings merged and checked; nothing built.

    ``weights``: None (the default entry, TF-slim float 1.0-224), a registry name
    (``list_pretrained()``), or a file or directory: our ``.safetensors``, a ``mobilenet train``
    checkpoint, or anything a converter reads. ``arch_settings`` (``ArchConfig`` fields) must agree
    with the weights (``WeightsMismatch`` otherwise), except ``num_classes``, ``resolution``,
    ``dropout`` and ``bn_momentum`` (see ``loaded.settle``). ImageNet weights with TF's background
    class come with 1,000 classes unless ``num_classes=1001`` is asked for.
    """
    settings = {k: v for k, v in arch_settings.items() if v is not None}
    unknown = set(settings) - set(ArchConfig.__dataclass_fields__)
    if unknown:
        raise InputError(f"unknown architecture settings {sorted(unknown)}")
    return settle(_read_any(DEFAULT if weights is None else weights, settings), settings)


def load_pretrained(weights: str | os.PathLike[str] | None = None, **arch_settings: Any) -> MobileNetV1:
    """A ``MobileNetV1`` holding published or saved weights, in eval mode, built once from
    ``load_weights(weights, **arch_settings)``. It carries ``model.pretrained_cfg``."""
    return build_model(load_weights(weights, **arch_settings))

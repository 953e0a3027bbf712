"""Weights by name or file, as data: ``load_weights`` reads and settles, ``load_pretrained`` builds.

A registry name is fetched and converted into the cache on first use (``read_pretrained``): the
publisher's file is read once into ``LoadedWeights``, checked against the registry (architecture,
and the tensor checksum where one is pinned) and written as our safetensors with its tensors'
checksum; no model is built on the way. Every later use checks the cached file again (name,
architecture, tensor checksum) and converts it anew, saying so, when it fails. Any other file is
read by what its bytes say it is (``convert.detect_format``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, to_run
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights.convert import detect_format, load_torch_file, read_weights
from mobilenet.weights.fetch import FetchError, cache_dir, fetch_file, sha256_file
from mobilenet.weights.io import (
    CHECKSUM_KEY,
    DamagedFile,
    check_state,
    read_safetensors,
    read_safetensors_metadata,
    save_safetensors,
    tensors_sha256,
)
from mobilenet.weights.labels import CUSTOM, label_set_for
from mobilenet.weights.loaded import LoadedWeights, loaded, model_from_weights, settle
from mobilenet.weights.registry import DEFAULT, REGISTRY, PretrainedCfg, get_pretrained_cfg
from mobilenet.weights.source import WeightFormatError


def converted_path(name: str) -> Path:
    """Where the cache keeps a registry entry once converted to our safetensors."""
    return cache_dir() / "converted" / f"{name}.safetensors"


def fetch_pretrained(name: str, *, quiet: bool = False) -> Path:
    """The converted ``.safetensors`` of a registry entry, checked, fetching and converting it on
    first use or when the cached copy cannot be trusted (``read_pretrained``)."""
    read_pretrained(name, quiet=quiet)
    return converted_path(name)


def read_pretrained(name: str, *, quiet: bool = False) -> LoadedWeights:
    """A registry entry's weights as the publisher's file holds them (TF's 1001 classes included;
    ``load_weights`` applies the user-facing defaults), from the cache.

    A cached conversion is used only when it is this entry's (the name and architecture it
    records) and its tensors match the checksum the registry pins, or else the one recorded when
    it was written. Anything else (bytes damaged on disk, another model's file under this name, a
    copy from a version that recorded no checksum) is said on stderr, naming the cache path, and
    converted again: a cached file is never loaded unchecked."""
    entry = get_pretrained_cfg(name)
    target = converted_path(entry.name)
    if target.exists():
        try:
            return _read_cached(entry, target)
        except WeightFormatError as err:
            reason = err.reason if isinstance(err, DamagedFile) else str(err).removeprefix(f"{target.name}: ")
            print(f"warning: cached conversion {target} cannot be trusted ({reason}); converting {name} again",
                  file=sys.stderr)
    return _convert_into_cache(entry, target, quiet=quiet)


def _read_cached(entry: PretrainedCfg, target: Path) -> LoadedWeights:
    """The cached conversion of ``entry``, or a ``WeightFormatError`` saying why it is not."""
    meta = read_safetensors_metadata(target)
    if meta.get("name") != entry.name:
        raise WeightFormatError(f"it holds {meta.get('name') or 'weights without a recorded name'}, not {entry.name}")
    recorded = meta.get(CHECKSUM_KEY)
    if recorded is None:
        raise WeightFormatError("it records no tensor checksum to verify it by (written by an older version)")
    if entry.tensors_sha256 is not None and recorded != entry.tensors_sha256:
        raise WeightFormatError("its tensors are not the ones the registry pins")
    weights = read_safetensors(target)  # verifies the tensors against the recorded checksum
    if weights.arch_cfg != entry.arch_cfg:
        raise WeightFormatError(f"it holds a {weights.arch_cfg.name} network, the registry says {entry.arch_cfg.name}")
    # The registry owns an entry's preprocessing, labels and published accuracy: a copy recorded by
    # an older version (before a publisher's recipe was corrected) must not outlive the correction.
    return replace(weights, pretrained_cfg=entry)


def _convert_into_cache(entry: PretrainedCfg, target: Path, *, quiet: bool) -> LoadedWeights:
    """Fetch ``entry``'s files, convert them, check them against the registry and write the cache."""
    name = entry.name
    settings = {"resolution": entry.arch_cfg.resolution, **entry.convert_settings}
    verified: list[LoadedWeights] = []

    def same_tensors(path: Path) -> bool:  # for `unpinned:` sources: the converted tensors must match
        weights = read_weights(path, entry.format, **settings)
        if tensors_sha256(weights.state) != entry.tensors_sha256:
            return False
        verified.append(weights)  # fetch_file keeps this very file: it need not be read again
        return True

    verify = same_tensors if entry.tensors_sha256 is not None else None
    files = [fetch_file(f.filename, f.sha256, f.sources, quiet=quiet, verify=verify) for f in entry.files]
    weights = verified[-1] if verified and len(files) == 1 else read_weights(list(files), entry.format, **settings)
    if weights.arch_cfg != entry.arch_cfg:
        raise WeightFormatError(f"{name}: the converted weights are {weights.arch_cfg}, the registry says "
                                f"{entry.arch_cfg}")
    if entry.tensors_sha256 is not None and tensors_sha256(weights.state) != entry.tensors_sha256:
        raise FetchError(f"{name}: the fetched weights differ from the pinned ones (tensor checksum mismatch)")
    checksums = ", ".join(_checksum_note(f.filename, f.sha256, p) for f, p in zip(entry.files, files))
    # The registry's config (preprocessing, labels, published accuracy) travels with the tensors,
    # and the file records the tensors' checksum, which every later use verifies (_read_cached).
    weights = replace(weights, pretrained_cfg=entry)
    save_safetensors(weights, target, source=f"{entry.description}; {checksums}")
    if not quiet:
        print(f"converted {name} -> {target}", file=sys.stderr)
    return weights


def _checksum_note(filename: str, pinned: str | None, path: Path) -> str:
    """The SHA-256 of the file converted, as the cached conversion records its source: the pinned
    file, a file with no pin, or another file (an ``unpinned:`` source) accepted by its tensors."""
    digest = sha256_file(path)
    if pinned is None:
        return f"{filename} sha256 {digest} (not pinned)"
    if digest == pinned:
        return f"{filename} sha256 {digest}"
    return f"{filename} from an unpinned source: sha256 {digest}, accepted by its tensor checksum"


def describe_pretrained(family: str | None = None) -> list[dict[str, Any]]:
    """``mobilenet pretrained``: every registry entry (of ``family``, if given) as a row: name,
    whether it is the default, family, description, alpha, resolution, classes, padding,
    publisher, format, files, checksum status, preprocessing, published accuracy, and whether it
    is already converted in the cache."""
    rows = []
    for name, entry in sorted(REGISTRY.items()):
        if family is not None and entry.family != family:
            continue
        arch = entry.arch_cfg
        rows.append({
            "name": name, "default": name == DEFAULT, "family": entry.family, "description": entry.description,
            "alpha": arch.alpha, "resolution": arch.resolution[0], "classes": arch.num_classes,
            "padding": arch.padding, "publisher": entry.publisher, "format": entry.format,
            "files": [{"filename": f.filename, "sha256": f.sha256, "sources": list(f.sources)} for f in entry.files],
            "verified": entry.verified, "preprocess": entry.preprocess.to_dict(), "published": entry.published,
            "cached": converted_path(name).is_file(),
        })
    return rows


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
        else Preprocess.default(arch.resolution)
    labels = ckpt.get("classes") or ckpt.get("labels")
    cfg = PretrainedCfg(
        name=path.stem, arch_cfg=arch, preprocess=preprocess,
        label_set=CUSTOM if labels else label_set_for(arch.num_classes),
        labels=tuple(map(str, labels)) if labels else None,
        format="checkpoint", description=f"training checkpoint {path.name}",
    )
    return loaded(state, folded, cfg)


def load_checkpoint(path: str | os.PathLike[str], *, ema: bool = False) -> tuple[MobileNetV1, PretrainedCfg]:
    weights = read_checkpoint(path, ema=ema)
    return model_from_weights(weights), weights.pretrained_cfg


def _read_any(weights: str | os.PathLike[str], settings: dict[str, Any]) -> LoadedWeights:
    if isinstance(weights, str) and weights in REGISTRY:
        return read_pretrained(weights)
    path = Path(weights)
    if not path.exists():
        raise InputError(
            f"{weights!r} is neither a known weights name nor an existing file or directory; "
            f"known names: {to_run('mobilenet pretrained', 'mobilenet.weights.list_pretrained()')} "
            f"({len(REGISTRY)} entries, e.g. {DEFAULT})"
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
    return model_from_weights(load_weights(weights, **arch_settings))

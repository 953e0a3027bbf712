"""Our weight file: safetensors, with everything needed to rebuild the model in its metadata.

Tensors are the model's ``state_dict()``. Metadata (all strings, as safetensors requires)::

    format        "mobilenet"
    arch          JSON of ArchConfig.to_dict()
    bn_folded     "true" when every BatchNorm is folded into its conv (TFLite weights, or
                  after fold_batchnorm()); the model is then built with the folded structure
    preprocess    JSON of Preprocess.to_dict()
    label_set     "imagenet-1001", "imagenet-1000" or "custom"
    labels        JSON list of class names (only for label_set "custom")
    source        where the weights came from (free text: file name, format, checksum)

Saving writes a temporary file beside the target and renames it into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights.fetch import publish
from mobilenet.weights.registry import PretrainedCfg
from mobilenet.weights.source import WeightFormatError

FORMAT = "mobilenet"


def is_folded(model: MobileNetV1) -> bool:
    flags = {module.folded for _, module in model.conv_layers()}
    if len(flags) > 1:
        raise InputError("some BatchNorms are folded and some are not; fold all or none before saving")
    return flags == {True}


def save_safetensors(
    model: MobileNetV1, path: str | os.PathLike[str], cfg: PretrainedCfg, *, source: str = ""
) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    labels = cfg.label_names if cfg.labels is not None else None
    metadata = {
        "format": FORMAT,
        "arch": json.dumps(model.cfg.to_dict()),
        "bn_folded": "true" if is_folded(model) else "false",
        "preprocess": json.dumps(cfg.preprocess.to_dict()),
        "label_set": cfg.label_set,
        "source": source or cfg.description,
    }
    if labels is not None:
        metadata["labels"] = json.dumps(labels)
    if cfg.published:
        metadata["published"] = json.dumps(cfg.published)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def tensors_sha256(model: MobileNetV1) -> str:
    """SHA-256 over the state dict (names, dtypes, shapes, bytes, in sorted order): the same
    weights give the same digest whichever file they were read from."""
    import hashlib

    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().contiguous().cpu()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError for bad headers
        raise WeightFormatError(f"{Path(path).name}: not a readable safetensors file ({err})") from None


def build_from_state(
    state: dict[str, torch.Tensor], arch: ArchConfig, folded: bool, where: str
) -> MobileNetV1:
    """A model of ``arch`` holding ``state`` exactly; a missing, extra or misshapen tensor is an
    error naming the first one."""
    model = MobileNetV1(arch)
    if folded:
        for _, module in model.conv_layers():
            module.unfold_structure()
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise WeightFormatError(f"{where}: tensor {key!r} is missing (architecture {arch.name})")
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightFormatError(
                f"{where}: tensor {key!r} has shape {tuple(state[key].shape)}, the model expects {tuple(value.shape)}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightFormatError(f"{where}: unexpected tensor {extra[0]!r} (is BatchNorm folded in this file?)")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_safetensors(path: str | os.PathLike[str]) -> tuple[MobileNetV1, PretrainedCfg]:
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_safetensors_metadata(path)
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise WeightFormatError(
            f"{path.name}: a safetensors file without this project's metadata; convert it first "
            "(mobilenet convert SOURCE OUT.safetensors)"
        )
    arch = ArchConfig.from_dict(json.loads(meta["arch"]))
    try:
        state = load_file(str(path))
    except Exception as err:
        raise WeightFormatError(f"{path.name}: cannot read tensors ({err})") from None
    model = build_from_state(state, arch, meta.get("bn_folded") == "true", path.name)
    labels = tuple(json.loads(meta["labels"])) if "labels" in meta else None
    cfg = PretrainedCfg(
        name=path.stem,
        arch=arch.to_dict(),
        preprocess=Preprocess.from_dict(json.loads(meta["preprocess"])) if "preprocess" in meta
        else Preprocess(resolution=arch.resolution),
        label_set=meta.get("label_set", "custom"),
        format="safetensors",
        published=json.loads(meta["published"]) if "published" in meta else {},
        description=meta.get("source", ""),
        labels=labels,
    )
    return model, cfg


def metadata_json(meta: dict[str, str]) -> dict[str, Any]:
    """Metadata with its JSON fields decoded (for display)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value) if key in ("arch", "preprocess", "labels", "published") else value
        except json.JSONDecodeError:
            out[key] = value
    return out

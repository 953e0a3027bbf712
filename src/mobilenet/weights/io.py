"""Our weight file: safetensors, with everything needed to rebuild the model in its metadata.

Tensors are the model's ``state_dict()``, written from ``LoadedWeights`` (what every reader returns;
``loaded.weights_of(model)`` for a built model), so no model is built to save or hash weights.
Metadata (all strings, as safetensors requires)::

    format        "mobilenet"
    arch          JSON of ArchConfig.to_dict()
    bn_folded     "true" when every BatchNorm is folded into its conv (TFLite weights, or
                  after fold_batchnorm()); the model is then built with the folded structure
    preprocess    JSON of Preprocess.to_dict()
    label_set     "imagenet-1001", "imagenet-1000" or "custom"
    labels        JSON list of class names (only for label_set "custom")
    source        where the weights came from (free text: file name, format, checksum)
    name          the weights' name when written (for a cached conversion: its registry entry)
    tensors_sha256  ``tensors_sha256`` of the tensors as written: ``read_safetensors`` refuses a
                  file whose tensors no longer match it (a damaged copy, bytes zeroed on disk)

Saving goes through ``mobilenet.files.atomic_write`` (a temporary file beside the target, renamed
into place); ``inputs`` names files the target must not be (``convert X X``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mobilenet.arch import ArchConfig
from mobilenet.errors import to_run
from mobilenet.files import atomic_write
from mobilenet.model import MobileNetV1, state_shapes
from mobilenet.preprocess import Preprocess
from mobilenet.weights.labels import CUSTOM
from mobilenet.weights.loaded import LoadedWeights, loaded, model_from_weights
from mobilenet.weights.registry import PretrainedCfg
from mobilenet.weights.source import WeightFormatError

FORMAT = "mobilenet"
CHECKSUM_KEY = "tensors_sha256"


class DamagedFile(WeightFormatError):
    """Our file, whose tensors changed since it was written (``reason`` says how)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"{path}: damaged: {reason}; convert or copy it again")


def save_safetensors(
    weights: LoadedWeights, path: str | os.PathLike[str], *, source: str = "",
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``weights`` (tensors, architecture and config) to ``path`` atomically. ``source``:
    where they came from (default: the config's description)."""
    from safetensors.torch import save_file

    path = Path(path)
    cfg = weights.pretrained_cfg
    labels = cfg.label_names if cfg.labels is not None else None
    metadata = {
        "format": FORMAT,
        "arch": json.dumps(weights.arch_cfg.to_dict()),
        "bn_folded": "true" if weights.folded else "false",
        "preprocess": json.dumps(cfg.preprocess.to_dict()),
        "label_set": cfg.label_set,
        "source": source or cfg.description,
        "name": cfg.name,
        CHECKSUM_KEY: tensors_sha256(weights.state),
    }
    if labels is not None:
        metadata["labels"] = json.dumps(labels)
    if cfg.published:
        metadata["published"] = json.dumps(cfg.published)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.state.items()}
    with atomic_write(path, inputs=inputs) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict (names, dtypes, shapes, bytes, in sorted order): the same
    weights give the same digest whichever file they were read from."""
    digest = hashlib.sha256()
    for key, value in sorted(state.items()):
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


def check_state(state: dict[str, torch.Tensor], arch: ArchConfig, folded: bool, where: str) -> None:
    """``state`` must be exactly the state dict of ``MobileNetV1(arch)``: a missing, extra or
    misshapen tensor is an error naming the first one."""
    expected = state_shapes(arch, folded)
    for key, shape in expected.items():
        if key not in state:
            raise WeightFormatError(f"{where}: tensor {key!r} is missing (architecture {arch.name})")
        if tuple(state[key].shape) != shape:
            raise WeightFormatError(
                f"{where}: tensor {key!r} has shape {tuple(state[key].shape)}, the model expects {shape}"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise WeightFormatError(f"{where}: unexpected tensor {extra[0]!r} (is BatchNorm folded in this file?)")


def read_safetensors(path: str | os.PathLike[str]) -> LoadedWeights:
    """Our file: architecture, tensors and config, checked (shapes, values, and the tensor checksum
    recorded when it was written, where it records one); no model is built."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_safetensors_metadata(path)
    if meta.get("format") != FORMAT or "arch" not in meta:
        raise WeightFormatError(
            f"{path.name}: a safetensors file without this project's metadata; convert it first "
            f"({to_run('mobilenet convert SOURCE OUT.safetensors', 'mobilenet.weights.convert_file(SOURCE, OUT)')})"
        )
    arch = _arch_of(meta, path)
    try:
        state = load_file(str(path))
    except Exception as err:
        raise WeightFormatError(f"{path.name}: cannot read tensors ({err})") from None
    folded = meta.get("bn_folded") == "true"
    check_state(state, arch, folded, path.name)
    cfg = _pretrained_cfg_of(meta, path, arch)
    weights = loaded(state, folded, cfg)
    recorded = meta.get(CHECKSUM_KEY)
    if recorded is not None and tensors_sha256(state) != recorded:
        raise DamagedFile(path, "its tensors do not match the checksum recorded when it was written")
    return weights


def _metadata_field(meta: Mapping[str, str], key: str, path: Path, kind: type) -> Any:
    """The JSON value of metadata ``key``, which must decode to a ``kind``."""
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as err:
        raise WeightFormatError(f"{path.name}: its metadata {key!r} is not valid JSON ({err}); "
                                "convert or copy it again") from None
    if not isinstance(value, kind):
        raise WeightFormatError(f"{path.name}: its metadata {key!r} is a {type(value).__name__}, not a "
                                f"{kind.__name__}; convert or copy it again")
    return value


def _arch_of(meta: Mapping[str, str], path: Path) -> ArchConfig:
    try:
        return ArchConfig.from_dict(_metadata_field(meta, "arch", path, dict))
    except (TypeError, ValueError) as err:  # an unknown or invalid setting (InputError is a ValueError)
        if isinstance(err, WeightFormatError):
            raise
        raise WeightFormatError(f"{path.name}: its metadata 'arch' is not a valid architecture ({err}); "
                                "convert or copy it again") from None


def _pretrained_cfg_of(meta: Mapping[str, str], path: Path, arch: ArchConfig) -> PretrainedCfg:
    """The config the metadata records. Every field is checked here, as written by
    ``save_safetensors``: damaged metadata is a ``WeightFormatError`` (which a cached conversion
    answers by converting again), never an error from deep inside a later use."""
    if "preprocess" in meta:
        try:
            preprocess = Preprocess.from_dict(_metadata_field(meta, "preprocess", path, dict))
        except (TypeError, ValueError) as err:
            if isinstance(err, WeightFormatError):
                raise
            raise WeightFormatError(f"{path.name}: its metadata 'preprocess' is not valid ({err}); "
                                    "convert or copy it again") from None
    else:
        preprocess = Preprocess.default(arch.resolution)
    labels = None
    if "labels" in meta:
        names = _metadata_field(meta, "labels", path, list)
        if len(names) != arch.num_classes or not all(isinstance(n, str) for n in names):
            raise WeightFormatError(f"{path.name}: its metadata 'labels' is not {arch.num_classes} class names "
                                    "(one per output); convert or copy it again")
        labels = tuple(names)
    return PretrainedCfg(
        name=path.stem,
        arch_cfg=arch,
        preprocess=preprocess,
        label_set=meta.get("label_set", CUSTOM),
        format="safetensors",
        published=_metadata_field(meta, "published", path, dict) if "published" in meta else {},
        description=meta.get("source", ""),
        labels=labels,
    )


def load_safetensors(path: str | os.PathLike[str]) -> tuple[MobileNetV1, PretrainedCfg]:
    """``read_safetensors`` built into a model, exactly as saved (no settings merged)."""
    weights = read_safetensors(path)
    return model_from_weights(weights), weights.pretrained_cfg


def metadata_json(meta: dict[str, str]) -> dict[str, Any]:
    """Metadata with its JSON fields decoded (for display)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        try:
            out[key] = json.loads(value) if key in ("arch", "preprocess", "labels", "published") else value
        except json.JSONDecodeError:
            out[key] = value
    return out

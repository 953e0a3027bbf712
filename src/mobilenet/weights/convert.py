"""Foreign weight files -> ``LoadedWeights`` (architecture, tensors, config), format detected from the bytes.

=============  =========================================  ==========================================
format         file                                       read by
=============  =========================================  ==========================================
tflite         ``.tflite`` FlatBuffer, float32 or uint8   ``tflite.read_tflite`` (dequantised)
tf-graphdef    frozen TF-slim GraphDef ``.pb``            ``graphdef.read_graphdef`` (no TensorFlow)
keras          legacy ``.h5``, Keras 3 ``.weights.h5``    ``keras.read_keras`` (h5py)
               or a Keras 3 ``.keras`` archive
timm           timm ``mobilenetv1_*`` state dict          ``timm.read_timm`` (``.pth``/``.bin``
               (``.pth``, ``.bin`` or ``.safetensors``)   via ``torch.load(weights_only=True)``)
transformers   ``MobileNetV1ForImageClassification``:     ``hf.read_hf`` (config.json for padding,
               a ``save_pretrained`` / hub snapshot       eps, labels: id2label; a weights file
               directory, or its weights file             needs it beside it, or the padding given)
=============  =========================================  ==========================================

Nothing is unpickled: ``.pt``/``.pth``/``.bin`` files go through ``torch.load(..., weights_only=True)``,
which refuses anything but tensors and plain containers.

``convert_file(sources, out)`` is ``mobilenet convert``: read, write our safetensors, and return a
summary; no model is built. ``convert(sources)`` builds the model instead, exactly as the file holds it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mobilenet.errors import InputError
from mobilenet.files import refuse_overwrite
from mobilenet.model import MobileNetV1
from mobilenet.weights.fetch import sha256_file
from mobilenet.weights.io import FORMAT, read_safetensors_metadata, save_safetensors
from mobilenet.weights.labels import label_set_for, label_set_of
from mobilenet.weights.loaded import LoadedWeights, loaded, model_from_weights
from mobilenet.weights.publishers import publisher_preprocess
from mobilenet.weights.registry import PretrainedCfg
from mobilenet.weights.source import SourceWeights, WeightFormatError, infer_config, to_state

FORMATS: tuple[str, ...] = ("tflite", "tf-graphdef", "keras", "timm", "transformers")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | os.PathLike[str]) -> str:
    """One of FORMATS, ``mobilenet`` (our safetensors) or ``checkpoint`` (a ``.pt`` of ``mobilenet
    train``), from the file's first bytes (a directory: a transformers checkpoint); the suffix
    only breaks ties."""
    path = Path(path)
    if path.is_dir():
        from mobilenet.weights.hf import is_hf_directory

        if is_hf_directory(path):
            return "transformers"
        raise WeightFormatError(f"{path}: a directory, but not a transformers MobileNet v1 checkpoint "
                                "(no config.json with model_type mobilenet_v1)")
    if not path.is_file():
        raise WeightFormatError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise WeightFormatError(f"{path.name}: file is empty or truncated ({len(head)} bytes)")
    if head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head[8:9] == b"{":  # safetensors: 8-byte header length, then a JSON header
        if read_safetensors_metadata(path).get("format") == FORMAT:
            return "mobilenet"
        return _state_format(load_state_file(path))
    if head.startswith(b"PK\x03\x04"):
        from mobilenet.weights.keras import is_keras_archive

        if is_keras_archive(path):
            return "keras"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or legacy pickle
        state = load_torch_file(path)
        return "checkpoint" if isinstance(state.get("model"), dict) and "arch" in state else _state_format(state)
    if head[:1] == b"\x0a":  # protobuf: field 1 (GraphDef.node), length-delimited
        return "tf-graphdef"
    raise WeightFormatError(
        f"{path.name}: unrecognised weight file (not TFLite, HDF5, a .keras archive, safetensors, a PyTorch file "
        "or a GraphDef)"
    )


def _state_format(state: dict[str, Any]) -> str:
    from mobilenet.weights.hf import is_hf_state_dict

    return "transformers" if is_hf_state_dict(state) else "timm"


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A state dict from safetensors or a PyTorch file, told apart by the bytes, not the suffix."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise WeightFormatError(f"{Path(path).name}: not a readable safetensors file ({err})") from None
    return load_torch_file(path)


def load_torch_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        raise WeightFormatError(f"{Path(path).name}: not a PyTorch weights file we can read safely ({err})") from None
    if not isinstance(state, dict):
        raise WeightFormatError(f"{Path(path).name}: holds a {type(state).__name__}, not a state dict")
    for key in ("state_dict", "model_state_dict"):  # common wrappers
        if isinstance(state.get(key), dict) and "model" not in state:
            state = state[key]
    return state


def read_source(paths: list[Path], fmt: str, settings: dict[str, Any] | None = None) -> SourceWeights:
    if fmt == "tflite":
        from mobilenet.weights.tflite import read_tflite

        return read_tflite(list(paths))
    if len(paths) != 1:
        raise WeightFormatError(f"only TFLite models can come in several files; got {len(paths)} {fmt} files")
    path = paths[0]
    if fmt == "tf-graphdef":
        from mobilenet.weights.graphdef import read_graphdef

        return read_graphdef(path)
    if fmt == "keras":
        from mobilenet.weights.keras import read_keras

        return read_keras(path)
    if fmt == "timm":
        from mobilenet.weights.timm import read_timm

        return read_timm(load_state_file(path))
    if fmt == "transformers":
        from mobilenet.weights.hf import read_config, read_hf, weights_file

        config = read_config(path, padding_given=(settings or {}).get("padding") is not None)
        return read_hf(load_state_file(weights_file(path) if path.is_dir() else path), config)
    raise WeightFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def read_weights(
    sources: str | os.PathLike[str] | list[str | os.PathLike[str]], fmt: str | None = None, **arch_settings: Any
) -> LoadedWeights:
    """Read one weight file (or a TFLite model split in several, or a transformers directory) into
    the architecture it needs, its tensors and its config; no model is built.

    ``arch_settings`` fill in what a file does not say (Keras .h5 and timm files do not store the
    input resolution) or override what was inferred; every tensor is checked against the result.
    """
    paths = [Path(p) for p in (sources if isinstance(sources, list) else [sources])]
    detected = [detect_format(p) for p in paths]
    fmt = fmt or detected[0]
    if fmt in ("mobilenet", "checkpoint"):
        raise WeightFormatError(f"{paths[0].name} is already this project's format; load it with load_pretrained()")
    try:
        src = read_source(paths, fmt, arch_settings)
    except (IndexError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, WeightFormatError):
            raise
        raise WeightFormatError(f"{paths[0].name}: not a readable {fmt} MobileNet v1 file ({err})") from None
    cfg = infer_config(src, **arch_settings)
    state = to_state(src, cfg)
    label_set, labels = label_set_of(src.labels) if src.labels is not None else (label_set_for(cfg.num_classes), None)
    pretrained_cfg = PretrainedCfg(
        name=paths[0].stem,
        arch_cfg=cfg,
        preprocess=publisher_preprocess(src.format, cfg.resolution, alpha=cfg.alpha,
                                        input_quantization=src.input_quantization),
        label_set=label_set,
        labels=labels,
        format=src.format,
        description=f"converted from {src.format}: {', '.join(p.name for p in paths)}",
    )
    return loaded(state, src.folded, pretrained_cfg)


def convert(
    sources: str | os.PathLike[str] | list[str | os.PathLike[str]], fmt: str | None = None, **arch_settings: Any
) -> tuple[MobileNetV1, PretrainedCfg]:
    """``read_weights`` built into a model, exactly as the file holds it (1001 classes stay 1001:
    the form ``mobilenet convert`` saves). ``load_pretrained(file)`` applies the user-facing
    defaults (1,000 ImageNet classes) instead."""
    weights = read_weights(sources, fmt, **arch_settings)
    return model_from_weights(weights), weights.pretrained_cfg


def parameter_count(weights: LoadedWeights) -> int:
    """What ``sum(p.numel() for p in model.parameters())`` gives once built: every tensor but
    BatchNorm's running statistics (buffers)."""
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(t.numel() for k, t in weights.state.items() if not k.endswith(buffers))


def convert_file(
    sources: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
    fmt: str | None = None, **arch_settings: Any,
) -> dict[str, Any]:
    """``mobilenet convert``: read a foreign weight file (or a TFLite model split in several, in
    order) and write it as our ``.safetensors`` at ``out``, atomically, with the sources' SHA-256
    in its metadata. Nothing is built. ``out`` may not be one of the sources. Returns a summary:
    {"out", "format", "arch", "bn_folded", "preprocess", "label_set", "parameters"}."""
    paths = [Path(s) for s in ([sources] if isinstance(sources, (str, os.PathLike)) else sources)]
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"OUT must end in .safetensors, got {out.name!r}")
    refuse_overwrite(out, paths)  # before reading anything: `convert X X` must not destroy X
    weights = read_weights(list(paths), fmt, **{k: v for k, v in arch_settings.items() if v is not None})
    cfg = weights.pretrained_cfg
    checksums = ", ".join(f"{p.name} sha256 {sha256_file(p)}" for p in paths if p.is_file())
    save_safetensors(weights, out, source=f"{cfg.description}; {checksums}", inputs=paths)
    return {
        "out": str(out), "format": cfg.format, "arch": weights.arch_cfg.to_dict(), "bn_folded": weights.folded,
        "preprocess": cfg.preprocess.to_dict(), "label_set": cfg.label_set, "parameters": parameter_count(weights),
    }

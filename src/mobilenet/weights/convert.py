"""Foreign weight files -> ``MobileNetV1`` (+ its ``PretrainedCfg``), format detected from the bytes.

=============  =========================================  ==========================================
format         file                                       read by
=============  =========================================  ==========================================
tflite         ``.tflite`` FlatBuffer, float32 or uint8   ``tflite.read_tflite`` (dequantised)
tf-graphdef    frozen TF-slim GraphDef ``.pb``            ``graphdef.read_graphdef`` (no TensorFlow)
keras          legacy ``.h5`` or Keras 3 ``.weights.h5``  ``keras.read_keras`` (h5py)
timm           timm ``mobilenetv1_*`` state dict          ``timm.read_timm`` (``.pth``/``.bin``
               (``.pth``, ``.bin`` or ``.safetensors``)   via ``torch.load(weights_only=True)``)
=============  =========================================  ==========================================

Nothing is unpickled: ``.pt``/``.pth`` files go through ``torch.load(..., weights_only=True)``,
which refuses anything but tensors and plain containers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights.labels import IMAGENET_1000, IMAGENET_1001
from mobilenet.weights.registry import PretrainedCfg
from mobilenet.weights.source import SourceWeights, WeightFormatError, build_model, infer_config

FORMATS: tuple[str, ...] = ("tflite", "tf-graphdef", "keras", "timm")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def detect_format(path: str | os.PathLike[str]) -> str:
    """One of FORMATS, ``mobilenet`` (our safetensors) or ``checkpoint`` (a ``.pt`` of ``mobilenet
    train``), from the file's first bytes; the suffix only breaks ties."""
    path = Path(path)
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
        from mobilenet.weights.io import FORMAT, read_safetensors_metadata

        return "mobilenet" if read_safetensors_metadata(path).get("format") == FORMAT else "timm"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save zip, or legacy pickle
        state = load_torch_file(path)
        return "checkpoint" if isinstance(state.get("model"), dict) and "arch" in state else "timm"
    if head[:1] == b"\x0a":  # protobuf: field 1 (GraphDef.node), length-delimited
        return "tf-graphdef"
    raise WeightFormatError(
        f"{path.name}: unrecognised weight file (not TFLite, HDF5, safetensors, a PyTorch file or a GraphDef)"
    )


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


def read_source(paths: list[Path], fmt: str) -> SourceWeights:
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

        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return read_timm(load_file(str(path)))
        return read_timm(load_torch_file(path))
    raise WeightFormatError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def default_preprocess(src: SourceWeights, resolution: tuple[int, int]) -> Preprocess:
    """The evaluation recipe each publisher used with its weights."""
    if src.format == "timm":
        return Preprocess(
            resolution=resolution, crop_fraction=0.875, interpolation="bicubic", crop_mode="resize_shorter"
        )
    if src.input_quantization is not None:
        # uint8 input q means (q - zero_point) * scale, i.e. mean = zp/255 and std = 1 / (255 * scale)
        scale, zero = src.input_quantization
        return Preprocess(resolution=resolution, mean=(zero / 255,) * 3, std=(1 / (255 * scale),) * 3)
    return Preprocess(resolution=resolution)  # TF and Keras: (x - 127.5) / 127.5, central 87.5 %, bilinear


def convert(
    sources: str | os.PathLike[str] | list[str | os.PathLike[str]], fmt: str | None = None, **arch_settings: Any
) -> tuple[MobileNetV1, PretrainedCfg]:
    """Read one weight file (or a TFLite model split in several) into a model and its config.

    ``arch_settings`` fill in what a file does not say (Keras and timm files do not store the
    input resolution) or override what was inferred; every tensor is checked against the result.
    """
    paths = [Path(p) for p in (sources if isinstance(sources, list) else [sources])]
    detected = [detect_format(p) for p in paths]
    fmt = fmt or detected[0]
    if fmt in ("mobilenet", "checkpoint"):
        raise WeightFormatError(f"{paths[0].name} is already this project's format; load it with load_pretrained()")
    try:
        src = read_source(paths, fmt)
    except (IndexError, KeyError, TypeError, ValueError) as err:
        if isinstance(err, WeightFormatError):
            raise
        raise WeightFormatError(f"{paths[0].name}: not a readable {fmt} MobileNet v1 file ({err})") from None
    cfg = infer_config(src, **arch_settings)
    model = build_model(src, cfg)
    label_set = {1001: IMAGENET_1001, 1000: IMAGENET_1000}.get(cfg.num_classes, "custom")
    pretrained_cfg = PretrainedCfg(
        name=paths[0].stem,
        arch=cfg.to_dict(),
        preprocess=default_preprocess(src, cfg.resolution),
        label_set=label_set,
        format=src.format,
        description=f"converted from {src.format}: {', '.join(p.name for p in paths)}",
    )
    return model, pretrained_cfg

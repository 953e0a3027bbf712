"""int8 post-training quantization, calibrated on real images.

Both quantizers keep weights per output channel (``per_channel=True`` in ONNX Runtime; NNCF does so
by default on CPU). Depthwise layers need it: each 3x3 filter sees one channel, and after BatchNorm
folding the per-channel weight ranges of one layer differ by 10x to 200x (TF-slim 1.0-224), so one
scale per tensor would leave the small filters a handful of levels. Activations are per tensor,
unsigned 8-bit (they follow a ReLU6).

* ``quantize_onnx``: ONNX Runtime's static quantizer, QDQ format (QuantizeLinear/DequantizeLinear
  around each conv, which ORT fuses into integer kernels at load time, ReLU6 folded into the
  output range), min/max calibration.
* ``quantize_openvino``: NNCF on the OpenVINO model (FakeQuantize nodes the CPU plugin runs as
  VNNI int8), performance preset (symmetric int8 weights and activations), with NNCF's
  fast bias correction, which repairs the systematic shift rounding puts on each channel's mean.

Which is better here is measured, not assumed: see docs/performance.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.optional import require
from mobilenet.errors import InputError

# More than ~300 images barely moves min/max ranges and NNCF's statistics; it only costs time.
MAX_CALIBRATION_IMAGES = 300
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def image_files(folder_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files of a folder (sorted by name, not recursive), or a list of files as given."""
    if isinstance(folder_or_files, (str, os.PathLike)):
        folder = Path(folder_or_files)
        if not folder.exists():
            raise InputError(f"{folder}: no such folder")
        if folder.is_file():
            return [folder]
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return files
    return [Path(p) for p in folder_or_files]


def calibration_tensor(
    images: Sequence[str | os.PathLike[str]], preprocess: Any, limit: int = MAX_CALIBRATION_IMAGES
) -> torch.Tensor:
    """The first ``limit`` images, preprocessed into one NCHW float32 batch. Fails on an image
    that cannot be read (a silently skipped file would change what was calibrated on)."""
    from mobilenet.preprocess import preprocess_images  # noqa: PLC0415

    paths = [Path(p) for p in images][:limit]
    if not paths:
        raise InputError("int8 quantization needs calibration images: a folder of a few hundred real images")
    return preprocess_images(paths, preprocess)


def quantize_onnx(
    fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str], calibration: torch.Tensor
) -> Path:
    """Static int8 quantization of an fp32 ONNX file with ONNX Runtime (QDQ, per-channel weights,
    min/max calibration: within 0.1 point of fp32 top-1 here, so the histogram methods, which
    also fail in ORT 1.32 on a last batch of a different size, are not offered)."""
    q = require("onnxruntime.quantization")
    input_name = require("onnx").load(str(fp32_path)).graph.input[0].name

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(calibration.split(16))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch.numpy()}

    # The quantizer logs (on the root logger) a suggestion to run its pre-processing first; we
    # measured that it changes nothing for this graph (docs/performance.md), so keep it quiet.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        q.quantize_static(
            str(fp32_path), str(int8_path), Reader(),
            quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)
    return Path(int8_path)


def quantize_openvino(ov_model: Any, calibration: torch.Tensor) -> Any:
    """int8 ``openvino.Model`` from an fp32 one with NNCF (per-channel weights, bias correction)."""
    nncf = require("nncf")
    samples = [x.numpy() for x in calibration.split(1)]
    return nncf.quantize(
        ov_model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU, subset_size=len(samples), fast_bias_correction=True,
    )

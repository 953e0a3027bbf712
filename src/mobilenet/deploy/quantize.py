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

**Portable int8.** The x86 int8 kernels of both runtimes multiply u8 activations by s8 weights.
With VNNI (or AMX) they accumulate in 32 bits. Without it — AVX2-only CPUs, AVX-512 without VNNI
— they use ``vpmaddubsw``, which adds *pairs* of products into saturating 16-bit lanes: 2 × 255 ×
127 = 64,770 does not fit in 32,767, so large products clip. Measured on TF-slim 1.0-224 (the
1,000 evaluation images of imagenet-val1300) with the AVX2 kernels of an EPYC-Milan (Zen 3) CPU
model: ONNX Runtime int8 with 8-bit weights fell to 64.1% top-1 against 78.9% with VNNI; on a real
Zen 3, 63.7% (ONNX Runtime) and 72.6% (OpenVINO) against fp32's 78.8%. Keeping weights to 7 bits
(|w| <= 64: 2 × 255 × 64 = 32,640 fits) removes the overflow: ONNX Runtime's ``reduce_range``,
NNCF's ``OverflowFix.ENABLE``. ``portable``: True — 7-bit weights, right on every CPU (the default
for files, which may run anywhere); False — 8-bit weights, for VNNI/AMX CPUs only; None — what
this CPU needs (the default for in-process predictors).

Which is better here is measured, not assumed: see docs/performance.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError

# More than ~300 images barely moves min/max ranges and NNCF's statistics; it only costs time.
MAX_CALIBRATION_IMAGES = 300
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def image_files(folder_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The image files of a folder (sorted by name, not recursive); a single file, or a list of
    files, as given."""
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


def seven_bit_weights(portable: bool | None) -> bool:
    """Whether int8 weights must keep to 7 bits (see the module docstring)."""
    if portable is None:
        cpu = cpu_info()
        return cpu.is_x86 and not cpu.int8_dot
    return portable


@contextlib.contextmanager
def _quiet_to_stderr(*loggers: str) -> Any:
    """Quantizers print progress bars on stdout and log on the root logger: send the bars to
    stderr (stdout may be a --json report) and keep their INFO chatter out."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in ("", *loggers)]
    for logger, _ in saved:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def quantize_onnx(
    fp32_path: str | os.PathLike[str], int8_path: str | os.PathLike[str], calibration: torch.Tensor,
    *, portable: bool | None = True,
) -> Path:
    """Static int8 quantization of an fp32 ONNX file with ONNX Runtime (QDQ, per-channel weights,
    min/max calibration: within 0.1 point of fp32 top-1 here, so the histogram methods, which
    also fail in ORT 1.32 on a last batch of a different size, are not offered). ``portable``:
    7-bit weights (``reduce_range``), see the module docstring."""
    q = require("onnxruntime.quantization")
    graph_input = require("onnx").load(str(fp32_path), load_external_data=False).graph.input[0]
    input_name = graph_input.name
    batches = calibration_batches(calibration, fixed_batch_of(graph_input))

    class Reader(q.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[torch.Tensor] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch.numpy()}

    # The quantizer logs (on the root logger) a suggestion to run its pre-processing first; we
    # measured that it changes nothing for this graph (docs/performance.md), so keep it quiet.
    with _quiet_to_stderr():
        q.quantize_static(
            str(fp32_path), str(int8_path), Reader(),
            quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=seven_bit_weights(portable),
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            # MinMax, and only MinMax, is what makes the padding in ``calibration_batches`` exact.
            calibrate_method=q.CalibrationMethod.MinMax,
        )
    return Path(int8_path)


CALIBRATION_BATCH = 16  # images a calibration run feeds at once where the graph's batch is dynamic


def fixed_batch_of(graph_input: Any) -> int | None:
    """The batch size an ONNX graph input (``onnx.ValueInfoProto``) is fixed to, or None where
    its first dimension is dynamic (named, or left unknown)."""
    first = graph_input.type.tensor_type.shape.dim[0]
    return first.dim_value if first.HasField("dim_value") and first.dim_value > 0 else None


def calibration_batches(calibration: torch.Tensor, fixed_batch: int | None) -> list[torch.Tensor]:
    """``calibration`` in the batches ONNX Runtime can run: ``CALIBRATION_BATCH`` images at a time
    for a dynamic batch; exactly ``fixed_batch`` for a graph whose batch is fixed (an export with
    ``fixed_batch``), which refuses any other size. A last short batch is filled up by repeating
    its own images: with min/max calibration (``quantize_onnx``'s only method) a repeated image
    changes neither the minimum nor the maximum of any tensor, so the ranges are exactly those of
    the images given. (A histogram or entropy method would weight the repeats; it would need
    another way.)"""
    size = fixed_batch or CALIBRATION_BATCH
    batches = list(calibration.split(size))
    if fixed_batch and batches and len(batches[-1]) < fixed_batch:
        last = batches[-1]
        repeats = -(-fixed_batch // len(last))  # ceil
        batches[-1] = last.repeat(repeats, *[1] * (last.dim() - 1))[:fixed_batch]
    return batches


def quantize_openvino(ov_model: Any, calibration: torch.Tensor, *, portable: bool | None = True) -> Any:
    """int8 ``openvino.Model`` from an fp32 one with NNCF (per-channel weights, bias correction).
    ``portable``: 7-bit weights in every layer (NNCF's overflow fix; its default fixes only the
    first layer), see the module docstring."""
    nncf = require("nncf")
    from nncf.quantization.advanced_parameters import (  # noqa: PLC0415
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    overflow_fix = OverflowFix.ENABLE if seven_bit_weights(portable) else OverflowFix.DISABLE
    samples = [x.numpy() for x in calibration.split(1)]
    with _quiet_to_stderr("nncf"):
        return nncf.quantize(
            ov_model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU, subset_size=len(samples), fast_bias_correction=True,
            advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix),
        )

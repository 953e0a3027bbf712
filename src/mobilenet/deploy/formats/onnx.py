"""ONNX: the folded model (conv with bias + Clip(0, 6) per layer, a mean, one Gemm), opset 18.

The batch dimension is dynamic by default; ``fixed_batch`` fixes it, as ONNX Runtime Mobile's
NNAPI and Core ML execution providers need (its checker: 0 of 57 nodes usable with a dynamic
batch, 57 of 57 with a fixed one). The spatial size is always the configured resolution: TF
'SAME' pads are computed from it, so they become constants of the graph. int8 is ONNX Runtime's
static QDQ quantization (``mobilenet.deploy.quantize``). The model's description (name,
architecture, precision, preprocessing, labels: ``mobile.model_description``) travels in the file's
``metadata_props`` under ``mobilenet``, as JSON, so that the file can be evaluated alone
(``formats.metadata``).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy import quantize
from mobilenet.deploy.formats.metadata import METADATA_KEY
from mobilenet.deploy.formats.mobile import model_description
from mobilenet.deploy.optional import package_version, require
from mobilenet.errors import InputError, option
from mobilenet.files import atomic_write
from mobilenet.model import MobileNetV1
from mobilenet.prepare import folded_copy

NAME = "onnx"
SUFFIXES = (".onnx",)
PRECISIONS = ("fp32", "int8")
RUNTIME = "onnxruntime"
# Options of ``write`` that only an int8 file has (``export.check_export`` refuses them otherwise).
INT8_OPTIONS = ("portable_int8",)
ONNX_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_DYNAMIC_BATCH = 4096


def export_onnx(
    model: MobileNetV1, path: str | os.PathLike[str], *, opset: int = ONNX_OPSET, fixed_batch: int | None = None,
    precision: str = "fp32",
) -> Path:
    """Write the folded fp32 model as ONNX (unverified: ``mobilenet.deploy.export`` verifies).
    ``precision``: what its metadata says the finished file will be (int8 once quantized)."""
    require("onnx")
    require("onnxscript")
    check_fixed_batch(fixed_batch)
    path = Path(path)
    folded = folded_copy(model)
    example = torch.zeros(fixed_batch or 2, model.arch_cfg.in_channels, *model.arch_cfg.resolution)
    dynamic = None if fixed_batch else {"x": {0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)}}
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            folded, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic, opset_version=opset, verbose=False,
        )
        program.model.metadata_props[METADATA_KEY] = json.dumps(metadata_for(model, precision), separators=(",", ":"))
        program.save(str(tmp), external_data=False)
    return path


def check_fixed_batch(fixed_batch: object) -> None:
    """Refuse a ``fixed_batch`` that is neither None (a dynamic batch) nor an int >= 1: cheap, so
    that ``export.check_export`` refuses it before any model is built."""
    if fixed_batch is not None and (isinstance(fixed_batch, bool) or not isinstance(fixed_batch, int)
                                    or fixed_batch < 1):
        raise InputError(f"{option('fixed_batch')} must be an int >= 1 (or left out, for a dynamic batch), "
                         f"got {fixed_batch!r}")


def write(
    model: MobileNetV1, path: str | os.PathLike[str], *, precision: str = "fp32",
    calibration: torch.Tensor | None = None, fixed_batch: int | None = None,
    portable_int8: bool = True,
) -> list[Path]:
    """Write ``path`` (.onnx) at ``precision``; int8 is calibrated on ``calibration`` (NCHW,
    preprocessed). ``portable_int8``: see ``quantize.quantize_onnx``."""
    path = Path(path)
    if precision == "fp32":
        return [export_onnx(model, path, fixed_batch=fixed_batch)]
    if precision != "int8" or calibration is None:
        raise InputError(f"ONNX export offers {PRECISIONS}; int8 needs calibration images (got {precision!r})")
    fp32 = export_onnx(model, path.with_name(f".{path.stem}.fp32.onnx"), fixed_batch=fixed_batch, precision="int8")
    try:
        quantize.quantize_onnx(fp32, path, calibration, portable=portable_int8)
    finally:
        fp32.unlink(missing_ok=True)
    return [path]


def metadata_for(model: MobileNetV1, precision: str) -> dict[str, Any]:
    """What an ONNX or OpenVINO file says about the model inside it (NCHW float32 input)."""
    from mobilenet.version import __version__  # noqa: PLC0415

    return {
        "format": "mobilenet-metadata", "version": 1,
        "producer": f"mobilenet {__version__}, torch {package_version('torch') or 'unknown'}",
        **model_description(model, precision, "nchw"),
        "input": {"dtype": "float32"}, "output": {"dtype": "float32", "meaning": "logits"},
    }


def onnx_input_shape(path: str | os.PathLike[str]) -> list[int | str]:
    """The declared input shape of an ONNX file (a name for a dynamic dimension)."""
    onnx = require("onnx")
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value for d in dims]

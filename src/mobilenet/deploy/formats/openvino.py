"""OpenVINO IR: an ``.xml`` graph and a ``.bin`` of weights beside it, converted from the ONNX
export (dynamic batch kept) and, for int8, quantized with NNCF (``mobilenet.deploy.quantize``).
Weights stay at full precision: OpenVINO's own default would compress them to fp16. The model's
description travels in the IR's ``rt_info`` under ``mobilenet`` (JSON, as the ONNX export's)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy import quantize
from mobilenet.deploy.formats.metadata import METADATA_KEY
from mobilenet.deploy.formats.onnx import export_onnx, metadata_for
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError
from mobilenet.files import atomic_files
from mobilenet.model import MobileNetV1

NAME = "openvino"
SUFFIXES = (".xml",)
PRECISIONS = ("fp32", "int8")
RUNTIME = "openvino"
# Options of ``write`` that only an int8 file has (``export.check_export`` refuses them otherwise).
INT8_OPTIONS = ("portable_int8",)
FULL_DISK_MARGIN = 1 << 20  # free bytes under which a failed write is taken for a full disk


def convert_to_openvino(onnx_path: str | os.PathLike[str]) -> Any:
    """An ``openvino.Model`` from an ONNX file (keeps the dynamic batch)."""
    return require("openvino").convert_model(str(onnx_path))


def openvino_model(model: MobileNetV1) -> Any:
    """The fp32 ``openvino.Model`` of a PyTorch model (through a temporary ONNX file)."""
    with tempfile.TemporaryDirectory(prefix="mobilenet-ov-") as tmp:
        ov_model = convert_to_openvino(export_onnx(model, Path(tmp) / "model.onnx"))
        # convert_model reads the file lazily in some versions: materialise before the folder goes.
        ov_model = ov_model.clone()
    return ov_model


def save_openvino(ov_model: Any, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``path`` (.xml) and its .bin atomically: the .bin is renamed first, so a reader never
    sees a new .xml beside an old .bin."""
    ov = require("openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise InputError(f"an OpenVINO model is an .xml file (with a .bin beside it), got {path}")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmp, \
            atomic_files([path.with_suffix(".bin"), path]) as (bin_tmp, xml_tmp):
        _save(ov, ov_model, Path(tmp) / "model.xml")
        # The .xml does not name its weights file: OpenVINO reads <stem>.bin beside it, so the
        # pair only has to arrive under the final names, .bin first.
        os.replace(Path(tmp) / "model.bin", bin_tmp)
        os.replace(Path(tmp) / "model.xml", xml_tmp)
    return [path, path.with_suffix(".bin")]


def _save(ov: Any, ov_model: Any, path: Path) -> None:
    """``ov.save_model`` at full precision, its failure to write (a ``RuntimeError``, "basic_ios::clear:
    iostream error" on a full disk) an ``OSError`` as any other writer's, for ``export`` to word."""
    try:
        ov.save_model(ov_model, str(path), compress_to_fp16=False)
    except RuntimeError as err:
        full = shutil.disk_usage(path.parent).free < FULL_DISK_MARGIN
        reason = os.strerror(errno.ENOSPC) if full else f"OpenVINO could not write it ({str(err).strip()[:200]})"
        raise OSError(errno.ENOSPC if full else errno.EIO, reason, str(path)) from err


def write(
    model: MobileNetV1, path: str | os.PathLike[str], *, precision: str = "fp32",
    calibration: torch.Tensor | None = None, portable_int8: bool = True,
) -> list[Path]:
    """Write ``path`` (.xml + .bin) at ``precision``; int8 calibrated on ``calibration``.
    ``portable_int8``: see ``quantize.quantize_openvino``."""
    ov_model = openvino_model(model)
    if precision == "int8":
        if calibration is None:
            raise InputError("OpenVINO int8 needs calibration images")
        ov_model = quantize.quantize_openvino(ov_model, calibration, portable=portable_int8)
    elif precision != "fp32":
        raise InputError(f"OpenVINO export offers {PRECISIONS}, got {precision!r}")
    ov_model.set_rt_info(json.dumps(metadata_for(model, precision), separators=(",", ":")), METADATA_KEY)
    return save_openvino(ov_model, path)

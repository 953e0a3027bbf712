"""Export to ONNX, OpenVINO IR, LiteRT ``.tflite``, ExecuTorch ``.pte`` and Core ML, verified.

``export`` stands above the three parts of ``deploy``: a format writer (``formats/``) writes the
file into a temporary folder beside the target, the runtime that reads that format
(``runtimes/``) loads it, and ``verify`` compares its logits with the unfolded PyTorch model's on
real photos at batch 1 and at the full batch. Only a file that passes is moved into place
(atomically, by ``mobilenet.files``); a mismatch raises ``ExportMismatchError`` and writes
nothing. Core ML packages run only on Apple platforms: elsewhere they are checked structurally
and the verification says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy.formats import FORMAT_MODULES, SUFFIX_FORMATS, format_for_path, format_module
from mobilenet.deploy.formats.onnx import onnx_input_shape
from mobilenet.deploy.runtimes import predictor_class
from mobilenet.deploy.verify import ExportMismatchError, Verification, photo_batch, verify
from mobilenet.errors import InputError
from mobilenet.files import atomic_files
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PlatformUnsupportedError
from mobilenet.preprocess import repeat_to_batch

__all__ = ["ExportMismatchError", "Verification", "export", "onnx_input_shape"]


def export(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    precision: str = "fp32",
    verify_images: Sequence[Path] | None = None,
    calibration_images: Sequence[Path] | None = None,
    preprocess: Any = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    **options: Any,
) -> Verification:
    """Export ``model`` to ``path`` in ``format`` (default: from the suffix) at ``precision``,
    verify the written file in its runtime against PyTorch on real images, and move it into
    place. ``options`` go to the format's writer (``fixed_batch`` for ONNX, ``layout`` and
    ``io_dtype`` for .tflite, ``portable_int8`` for ONNX and OpenVINO). ``inputs``: files this
    export reads, which ``path`` must not overwrite. Returns the verification; raises
    ``ExportMismatchError`` (and leaves nothing at ``path``) if the file does not match."""
    path = Path(path)
    fmt = format or format_for_path(path)
    suffixes = [suffix for suffix, name in SUFFIX_FORMATS.items() if name == fmt]
    if fmt not in FORMAT_MODULES:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMAT_MODULES)}")
    if path.suffix.lower() not in suffixes:
        raise InputError(f"a {fmt} model is written to a {' or '.join(suffixes)} file, got {path}")
    writer = format_module(fmt)
    if precision not in writer.PRECISIONS:
        raise InputError(f"{fmt} export offers {', '.join(writer.PRECISIONS)}, not {precision}")
    if precision == "int8" and not calibration_images:
        raise InputError("int8 export needs calibration images: a folder of a few hundred real images")
    images = photo_batch(model, verify_images, preprocess)
    calibration = None
    if precision == "int8":
        from mobilenet.deploy.quantize import calibration_tensor  # noqa: PLC0415
        from mobilenet.preprocess import Preprocess  # noqa: PLC0415

        preprocess = preprocess or Preprocess(resolution=model.arch_cfg.resolution)
        calibration = calibration_tensor(calibration_images, preprocess)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror}") from err
    with staging as tmp:
        staged = Path(tmp) / f"model{path.suffix}"
        files = writer.write(model, staged, precision=precision, calibration=calibration, **options)
        check = _verify_file(model, writer, staged, precision, images, options)
        _move_into_place(files, staged, path, inputs)
    return check


def _verify_file(
    model: MobileNetV1, writer: Any, staged: Path, precision: str, images: torch.Tensor, options: dict[str, Any]
) -> Verification:
    try:
        predictor = predictor_class(writer.RUNTIME).from_file(staged, precision)
    except PlatformUnsupportedError:
        if not hasattr(writer, "check_structure"):
            raise
        return Verification.structural(writer.RUNTIME, precision, writer.check_structure(staged, model))
    fixed = options.get("fixed_batch") or getattr(predictor, "fixed_batch", None)
    if fixed:
        # A file with a fixed batch runs whole batches of that size only.
        n = len(images)
        images = images[: n // fixed * fixed] if fixed <= n else repeat_to_batch(images, fixed)
        return verify(model, predictor, images, precision=precision, batch_sizes=(fixed,))
    return verify(model, predictor, images, precision=precision)


def _move_into_place(files: list[Path], staged: Path, path: Path, inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Rename the verified files to their final names (the main file last: it is what readers
    open, and OpenVINO's .xml finds its .bin by name)."""
    targets = [path.with_suffix(f.suffix) if f != staged else path for f in files]
    order = sorted(range(len(files)), key=lambda i: files[i] == staged)
    if any(f.is_dir() for f in files):  # an .mlpackage is a folder: rename it whole
        for i in order:
            if targets[i].exists():
                old = targets[i].with_name(f".{targets[i].name}.old")
                os.replace(targets[i], old)
                os.replace(files[i], targets[i])
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(files[i], targets[i])
        return
    with atomic_files([targets[i] for i in order], inputs=inputs) as temporaries:
        for i, tmp in zip(order, temporaries):
            os.replace(files[i], tmp)

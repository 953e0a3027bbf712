"""Export to ONNX, OpenVINO IR, LiteRT ``.tflite``, ExecuTorch ``.pte`` and Core ML, verified.

``export`` stands above the three parts of ``deploy``: a format writer (``formats/``) writes the
file into a temporary folder beside the target, the runtime that reads that format
(``runtimes/``) loads it, and ``verify`` compares its logits with the unfolded PyTorch model's on
real photos at batch 1 and at the full batch. Only a file that passes is moved into place
(atomically, by ``mobilenet.files``), with ``NAME.sha256`` beside it (``integrity``: what the
predictors check before they run it); a mismatch raises ``ExportMismatchError`` and writes
nothing, and so does a full disk (a ``ResourceError``, one line). Core ML packages run only on
Apple platforms: elsewhere they are checked structurally and the verification says so.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy.execution import Execution
from mobilenet.deploy.formats import FORMAT_MODULES, SUFFIX_FORMATS, format_for_path, format_module
from mobilenet.deploy.formats.onnx import check_fixed_batch, onnx_input_shape
from mobilenet.deploy.integrity import checksum_lines, sidecar
from mobilenet.deploy.runtimes import predictor_class
from mobilenet.deploy.verify import ExportMismatchError, Verification, photo_batch, verify
from mobilenet.errors import InputError, MobileNetError
from mobilenet.errors import option as spelled
from mobilenet.files import (
    atomic_files,
    destination,
    refuse_replacing_other_than,
    replace_directory,
    write_error,
    write_text,
)
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PlatformUnsupportedError
from mobilenet.preprocess import Preprocess, repeat_to_batch

__all__ = ["ExportMismatchError", "ExportResult", "Verification", "check_export", "export", "onnx_input_shape"]


@dataclass(frozen=True)
class ExportResult:
    """What ``export`` wrote, and how the written file compared with PyTorch."""

    files: tuple[Path, ...]  # the main file first (OpenVINO: the .xml, then its .bin)
    format: str
    precision: str
    model: str  # the architecture's name, e.g. "1.0-224"
    input: str  # the file's batch and input layout, e.g. "batch 1, input NHWC 224x224x3"
    size_bytes: int
    verification: Verification
    checksum: Path | None = None  # NAME.sha256 beside the main file (mobilenet.deploy.integrity)
    execution: Execution | None = None  # what the file runs in its runtime (None: not run here, Core ML)

    def summary(self) -> str:
        """What was written, how it verified, and what it runs (what ``mobilenet export`` prints)."""
        written = " + ".join(map(str, self.files))
        checksum = f", SHA-256 in {self.checksum.name}" if self.checksum else ""
        runs = f"\n{self.verification.runtime} {self.execution.summary()}" if self.execution else ""
        return (f"wrote {written} ({self.size_bytes / 1e6:.1f} MB{checksum}): {self.model} {self.format} "
                f"{self.precision}, {self.input}\n{self.verification.summary()}{runs}")


def check_export(
    path: str | os.PathLike[str], *, format: str | None = None, precision: str = "fp32",
    calibration_images: Sequence[Path] | None = None, **options: Any,
) -> str:
    """The format of an export request, after checking it can be done: the suffix, the precision
    and each option against what the format's writer takes (and the precision it applies to: the
    writer's ``INT8_OPTIONS``). Cheap: ``export`` calls it, and a
    command line can call it before it builds the model. Raises ``InputError``."""
    path = Path(path)
    fmt = format or format_for_path(path)
    if fmt == "web":  # a folder whose page is checked in a browser: the web package (above deploy) owns it
        raise InputError("a web export is a folder checked in a browser: use mobilenet.web.export.export_web")
    if fmt not in FORMAT_MODULES:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMAT_MODULES)}")
    suffixes = [suffix for suffix, name in SUFFIX_FORMATS.items() if name == fmt]
    if path.suffix.lower() not in suffixes:
        raise InputError(f"a {fmt} model is written to a {' or '.join(suffixes)} file, got {path}")
    writer = format_module(fmt)
    if precision not in writer.PRECISIONS:
        raise InputError(f"{fmt} export offers {', '.join(writer.PRECISIONS)}, not {precision}")
    if precision == "int8" and not calibration_images:
        raise InputError("int8 export needs calibration images: a folder of a few hundred real images")
    for option in options:
        if option not in _writer_options(fmt):
            takers = [name for name in FORMAT_MODULES if option in _writer_options(name)]
            if not takers:
                raise InputError(f"unknown export option {option!r}")
            raise InputError(f"{option} applies to {' and '.join(takers)} exports, not {fmt}")
    if "fixed_batch" in options:  # (a format that takes it: above) its value too, not only after a model is built
        check_fixed_batch(options["fixed_batch"])
    # An option only an int8 file has would be ignored by a float one: refused, as one the format lacks.
    int8_only = [name for name in options if name in getattr(writer, "INT8_OPTIONS", ())]
    if int8_only and precision != "int8":
        raise InputError(f"{spelled(int8_only[0])} applies to int8 {fmt} exports only, and this one is {precision}: "
                         f"leave it out, or export {spelled('precision', 'int8')} with calibration images")
    if hasattr(writer, "is_output"):  # a folder: refuse what is not ours before the work, not after
        refuse_replacing_other_than(path, writer.is_output, f"{fmt} export")
    return fmt


def export(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    precision: str = "fp32",
    verify_images: Sequence[Path] | None = None,
    calibration_images: Sequence[Path] | None = None,
    preprocess: Preprocess | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    **options: Any,
) -> ExportResult:
    """Export ``model`` to ``path`` in ``format`` (default: from the suffix) at ``precision``,
    verify the written file in its runtime against PyTorch on real images, and move it into
    place, with its checksums beside it. A file whose runtime would run it otherwise than its writer
    promises (an op outside XNNPACK in a ``.pte``, a TRANSPOSE in an NHWC ``.tflite``) is refused
    too. ``options`` go to the format's writer, which says what it takes (``fixed_batch`` for
    ONNX; ``layout`` for .tflite, .pte and .mlpackage; ``io_dtype`` for .tflite int8;
    ``portable_int8`` for ONNX and OpenVINO int8); one it does not take is an ``InputError``.
    ``preprocess``: how the verification photos and calibration images are prepared (default: the
    model's own). ``inputs``: files this export reads, which ``path`` must not overwrite.

    Returns what was written with its verification; raises ``ExportMismatchError`` (and leaves
    ``path`` as it was) if the file does not match."""
    path = Path(path)
    fmt = check_export(path, format=format, precision=precision, calibration_images=calibration_images, **options)
    writer = format_module(fmt)
    # A fixed batch is traced at its size: refused from the cost model before a tensor of it exists.
    check_memory(model.arch_cfg, options.get("fixed_batch") or getattr(writer, "BATCH", 1), mode="inference")
    images = photo_batch(model, verify_images, preprocess)
    calibration = None
    if precision == "int8":
        from mobilenet.deploy.quantize import calibration_tensor  # noqa: PLC0415
        from mobilenet.preprocess import preprocess_for  # noqa: PLC0415

        preprocess = preprocess or preprocess_for(model)
        calibration = calibration_tensor(calibration_images, preprocess)
    staging_folder = destination(path).parent  # beside the file a symlink names: renames stay on its disk
    try:
        staging_folder.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=staging_folder, prefix=f".{path.name}.")
    except OSError as err:
        raise write_error(err, path) from err
    with staging as tmp:  # removed whatever happens: nothing partial is left beside the target
        staged = Path(tmp) / f"model{path.suffix}"
        with _said_of(path):
            files = writer.write(model, staged, precision=precision, calibration=calibration, **options)
        check, execution = _verify_file(model, writer, staged, precision, images, options)
        targets = _move_into_place(writer, files, staged, path, inputs)
    return ExportResult(
        files=tuple(targets), format=fmt, precision=precision, model=model.arch_cfg.name,
        input=_input_description(model, writer, options), size_bytes=sum(map(_size, targets)), verification=check,
        checksum=sidecar(path), execution=execution,
    )


@contextlib.contextmanager
def _said_of(path: Path) -> Iterator[None]:
    """A write into the staging folder that fails (a full disk mid-write) is one line about
    ``path``, the file asked for, whether the writer let the ``OSError`` through or worded it
    about its own temporary name."""
    try:
        yield
    except OSError as err:
        raise write_error(err, path) from err
    except MobileNetError as err:
        if isinstance(err.__cause__, OSError):
            raise write_error(err.__cause__, path) from err
        raise


def _writer_options(fmt: str) -> list[str]:
    """The options a format's writer takes: the keyword parameters of its ``write`` beyond the common ones."""
    parameters = inspect.signature(format_module(fmt).write).parameters
    return [name for name in parameters if name not in ("model", "path", "precision", "calibration")]


def _input_description(model: MobileNetV1, writer: Any, options: dict[str, Any]) -> str:
    """The written file's batch and input layout, as its writer makes them: a mobile file has the
    batch it was traced at (``BATCH``) and its writer's layout; ONNX and OpenVINO take NCHW."""
    c, h, w = model.arch_cfg.in_channels, model.arch_cfg.height, model.arch_cfg.width
    batch = options.get("fixed_batch") or getattr(writer, "BATCH", None)
    layout = options.get("layout") or getattr(writer, "DEFAULT_LAYOUT", "nchw")
    shape = f"NHWC {h}x{w}x{c}" if layout == "nhwc" else f"NCHW {c}x{h}x{w}"
    return f"{f'batch {batch}' if batch else 'dynamic batch'}, input {shape}"


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _verify_file(
    model: MobileNetV1, writer: Any, staged: Path, precision: str, images: torch.Tensor, options: dict[str, Any]
) -> tuple[Verification, Execution | None]:
    """How the staged file compares with PyTorch in its runtime, and what it runs there; raises
    ``ExportMismatchError`` if it computes something else or runs otherwise than its writer promises."""
    try:
        predictor = predictor_class(writer.RUNTIME).from_file(staged, precision)
    except PlatformUnsupportedError:
        if not hasattr(writer, "check_structure"):
            raise
        return Verification.structural(writer.RUNTIME, precision, writer.check_structure(staged, model)), None
    execution = getattr(predictor, "execution", None)
    rule = getattr(writer, "execution_problem", None)
    problem = rule(execution, precision=precision, **options) if rule and execution else None
    if problem:
        raise ExportMismatchError(f"the {writer.NAME} file would run {problem} in {writer.RUNTIME}; nothing written "
                                  f"({execution.summary()})")
    fixed = options.get("fixed_batch") or getattr(predictor, "fixed_batch", None)
    if fixed:
        # A file with a fixed batch runs whole batches of that size only.
        n = len(images)
        images = images[: n // fixed * fixed] if fixed <= n else repeat_to_batch(images, fixed)
        return verify(model, predictor, images, precision=precision, batch_sizes=(fixed,)), execution
    return verify(model, predictor, images, precision=precision), execution


def _move_into_place(
    writer: Any, files: list[Path], staged: Path, path: Path, inputs: Sequence[str | os.PathLike[str]]
) -> list[Path]:
    """Rename the verified files to their final names with their checksums beside them (the main
    file last: it is what readers open, and OpenVINO's .xml finds its .bin by name). Returns the
    final names, main file first."""
    targets = [path.with_suffix(f.suffix) if f != staged else path for f in files]
    listing = checksum_lines((f, target.name) for f, target in zip(files, targets))
    if staged.is_dir():  # an .mlpackage is a folder: it replaces the old one whole, then its checksums
        moved = replace_directory(staged, path, accept=writer.is_output, what=f"{writer.NAME} export", inputs=inputs)
        write_text(sidecar(path), listing)
        return [moved]
    order = sorted(range(len(files)), key=lambda i: files[i] == staged)
    names = [targets[i] for i in order]
    with atomic_files([*names[:-1], sidecar(path), names[-1]], inputs=inputs) as temporaries:
        *parts, checksums, main = temporaries
        for i, tmp in zip(order, [*parts, main]):
            shutil.move(files[i], tmp)  # a move, not a rename: a FIFO's or a device's temporary is elsewhere
        checksums.write_text(listing, encoding="utf-8")
    return [path, *(target for target in targets if target != path)]

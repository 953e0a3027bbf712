"""Format writers: one module per file format, each turning a model into files on disk.

Every writer module exposes ``NAME``, ``SUFFIXES`` (the file endings it writes), ``PRECISIONS``,
``RUNTIME`` (the runtime that reads the file back, or None) and
``write(model, path, *, precision, calibration, **options) -> list[Path]`` (its keyword options are
what an export of that format accepts). The mobile writers (.tflite, .pte, .mlpackage) add
``BATCH``, the batch their files are traced at, and ``DEFAULT_LAYOUT``; a writer whose output is a
folder (Core ML) exposes ``is_output(path) -> bool``, so that an export replaces only a folder of
its own kind; a writer that promises how its files run exposes ``execution_problem(execution,
**options) -> str | None`` (``deploy.execution``: nothing outside XNNPACK in a ``.pte``), which an
export holds the written file to. Writers import neither the runtimes nor verification;
``mobilenet.deploy.export`` stands above all three.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from mobilenet.errors import InputError

# Format name -> module; the order is the one `mobilenet export --help` lists.
FORMAT_MODULES: dict[str, str] = {
    "onnx": "mobilenet.deploy.formats.onnx",
    "openvino": "mobilenet.deploy.formats.openvino",
    "tflite": "mobilenet.deploy.formats.litert",
    "executorch": "mobilenet.deploy.formats.executorch",
    "coreml": "mobilenet.deploy.formats.coreml",
}
# File ending -> format name (kept here so that telling a format needs no optional import).
SUFFIX_FORMATS: dict[str, str] = {
    ".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite", ".pte": "executorch", ".mlpackage": "coreml",
}


def format_module(name: str) -> ModuleType:
    if name not in FORMAT_MODULES:
        raise InputError(f"unknown format {name!r}; known: {', '.join(FORMAT_MODULES)}")
    return importlib.import_module(FORMAT_MODULES[name])


def format_for_path(path: str | os.PathLike[str]) -> str:
    """The format a file name asks for, by its ending."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise InputError(
            f"cannot tell the format from {Path(path).name!r}: name it "
            f"{', '.join(SUFFIX_FORMATS)} (or give the format)"
        )
    return SUFFIX_FORMATS[suffix]

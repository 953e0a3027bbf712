"""The optional runtimes: imports that fail with the pip extra that installs them, and the
installed version of a package (the one lookup every description, metadata entry and cache key uses)."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from mobilenet.errors import InputError

# Import name -> (what it is, the extra of this package that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("ONNX", "onnx"),
    "onnxruntime": ("ONNX Runtime", "onnx"),
    "onnxscript": ("onnxscript (needed by torch.onnx.export)", "onnx"),
    "openvino": ("OpenVINO", "openvino"),
    "nncf": ("NNCF (OpenVINO's quantizer)", "openvino"),
    "litert_torch": ("litert-torch (PyTorch -> .tflite converter)", "litert"),
    "ai_edge_quantizer": ("ai-edge-quantizer (.tflite fp16 and int8)", "litert"),
    "ai_edge_litert": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "ai_edge_litert.interpreter": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "ai_edge_litert.schema_py_generated": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "flatbuffers": ("flatbuffers (writes .tflite metadata)", "litert"),
    "executorch": ("ExecuTorch", "executorch"),
    "executorch.runtime": ("ExecuTorch's runtime", "executorch"),
    "torchao": ("torchao (PT2E quantization for ExecuTorch)", "executorch"),
    "coremltools": ("coremltools (Core ML)", "coreml"),
}


class MissingRuntimeError(InputError, ImportError):
    """An optional runtime is not installed. A ``ValueError`` too, so the command line reports it
    in one line (the fix is the user's: install the extra)."""


def require(module: str) -> ModuleType:
    """Import an optional dependency or raise ``MissingRuntimeError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what, extra = EXTRAS.get(module, (module, "all"))
        raise MissingRuntimeError(
            f"{what} is not installed (import {module!r} failed: {err}); install it with "
            f"pip install 'mobilenet[{extra}]'"
        ) from err


def available(module: str) -> bool:
    """Whether an optional dependency can be imported."""
    try:
        require(module)
    except MissingRuntimeError:
        return False
    return True


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (``ai-edge-litert``, ``openvino``), as pip names
    it; None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None

"""Runtimes (predictors): one module per backend, each running a model file and returning logits.

Every runtime module exposes a ``Predictor`` subclass with ``from_file(path, precision, threads)``
(PyTorch's runs the model itself). Runtimes may use format writers; they never import ``export``.
``mobilenet.deploy.runtime`` (``make_predictor``) stands above them.
"""

from __future__ import annotations

import importlib

from mobilenet.errors import InputError

# Runtime -> (module, predictor class, the format it reads). PyTorch reads no file.
RUNTIME_MODULES: dict[str, tuple[str, str, str | None]] = {
    "torch": ("mobilenet.deploy.runtimes.pytorch", "TorchPredictor", None),
    "onnxruntime": ("mobilenet.deploy.runtimes.ort", "OnnxRuntimePredictor", "onnx"),
    "openvino": ("mobilenet.deploy.runtimes.ov", "OpenVinoPredictor", "openvino"),
    "litert": ("mobilenet.deploy.runtimes.litert", "LiteRtPredictor", "tflite"),
    "executorch": ("mobilenet.deploy.runtimes.executorch", "ExecuTorchPredictor", "executorch"),
    "coreml": ("mobilenet.deploy.runtimes.coreml", "CoreMlPredictor", "coreml"),
}


# Every precision any runtime offers, and what a command line may ask for ("auto": measured here).
# Each runtime's own PRECISIONS and native-precision rule live in its module.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *(name for name in RUNTIME_MODULES if name != "coreml"))


def predictor_class(runtime: str) -> type:
    if runtime not in RUNTIME_MODULES:
        raise InputError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIME_MODULES)}")
    module, name, _ = RUNTIME_MODULES[runtime]
    return getattr(importlib.import_module(module), name)


def runtime_format(runtime: str) -> str | None:
    return RUNTIME_MODULES[runtime][2]

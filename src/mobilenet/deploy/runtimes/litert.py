"""LiteRT (TensorFlow Lite) interpreter from ``ai-edge-litert``, with its default XNNPACK delegate.

One predictor runs our ``.tflite`` files and TensorFlow's published ones alike, so they can be
compared in the same interpreter with the same threads: it takes the standard NCHW float32 batch
and adapts it to what the file declares — NHWC or NCHW, float32 or uint8/int8 with the input's
own scale and zero point (``q = round(x / scale) + zero_point``, clipped) — and dequantizes a
quantized output. A model published in parts that run one after another (TF's uint8 1.0-224 body
and head) is given as a list of files.

The files have a fixed batch (1 in every MobileNet we know): a larger batch runs as that many
invocations, which is how the interpreter serves a batch on a phone too. TF's own files end in a
SOFTMAX, so they return probabilities, not logits (``outputs_probabilities`` says which; top-1 is
the same either way).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.formats.tflite_flatbuffer import read_metadata
from mobilenet.deploy.optional import package_version, require
from mobilenet.errors import InputError
from mobilenet.predictor import PrecisionUnavailableError, Predictor, as_numpy

PRECISIONS = ("fp32", "fp16", "int8")


class LiteRtPredictor(Predictor):
    runtime = "litert"

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], precision: str | None = None, threads: int | None = None
    ) -> None:
        """``paths``: one file, or the parts of one model in the order they run. ``precision``:
        what the caller expects the file to be (None: whatever it is); a different one raises
        ``PrecisionUnavailableError``. ``threads``: the interpreter's threads (default: all cores)."""
        from mobilenet.weights.tflite import describe_tflite  # noqa: PLC0415 - pure numpy, no cycle

        interpreter_module = require("ai_edge_litert.interpreter")
        files = [Path(p) for p in paths]
        if not files:
            raise InputError("no .tflite file given")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")
        self.threads = threads or os.cpu_count() or 1
        self.paths = files
        self.interpreters = []
        for path in files:
            if not path.is_file():
                raise InputError(f"{path}: no such file")
            interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=self.threads)
            interpreter.allocate_tensors()
            self.interpreters.append(interpreter)
        facts = [describe_tflite(p) for p in files]
        self.precision = _precision(facts)
        if precision is not None and precision != self.precision:
            raise PrecisionUnavailableError(
                f"asked for {precision}, but {', '.join(p.name for p in files)} is {self.precision}"
            )
        self.input = self.interpreters[0].get_input_details()[0]
        self.output = self.interpreters[-1].get_output_details()[0]
        self.metadata = read_metadata(files[0])
        self.layout = self.metadata["layout"] if self.metadata else _guess_layout(tuple(self.input["shape"]))
        self.batch = int(self.input["shape"][0])
        self.fixed_batch = self.batch  # a larger batch runs as several executions
        self.outputs_probabilities = facts[-1]["ops"][-1:] == ["SOFTMAX"]
        dtype = np.dtype(self.input["dtype"]).name
        scale, zero = self.input["quantization"]
        quant = f" (scale {scale:.6g}, zero point {zero})" if dtype != "float32" else ""
        weights = {"fp32": "float32 weights", "fp16": "float16 weights (dequantized at load)",
                   "int8": f"{facts[0]['weight_dtype']} weights, integer kernels"}[self.precision]
        produced = "probabilities (the file ends in SOFTMAX)" if self.outputs_probabilities else "logits"
        version = package_version("ai-edge-litert") or "?"
        self.description = (
            f"LiteRT interpreter (ai-edge-litert {version}, XNNPACK delegate) {' + '.join(p.name for p in files)}: "
            f"{self.precision}, {weights}; input {dtype} {self.layout.upper()}{quant}; returns {produced}; "
            f"{self.threads} threads, batch {self.batch} per invocation"
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        precision: str | None = None,
        threads: int | None = None,
    ) -> LiteRtPredictor:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        return cls(paths, precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        batch = as_numpy(x)
        expected = tuple(int(s) for s in self.input["shape"])
        if batch.ndim != 4:
            raise InputError(f"expected an NCHW batch, got shape {batch.shape}")
        if self.layout == "nhwc":
            batch = batch.transpose(0, 2, 3, 1)
        if batch.shape[1:] != expected[1:]:
            raise InputError(
                f"input of shape {tuple(x.shape)} does not fit the file's {self.layout.upper()} input {expected}"
            )
        outputs = []
        for start in range(0, len(batch), self.batch):
            part = batch[start : start + self.batch]
            count = len(part)
            if count < self.batch:  # a fixed batch larger than 1: pad the last slice
                part = np.concatenate([part, np.zeros((self.batch - count, *part.shape[1:]), part.dtype)])
            value = _quantize(part, self.input)
            previous: dict[str, Any] | None = None
            for interpreter in self.interpreters:
                details = interpreter.get_input_details()[0]
                if previous is not None:  # the next part of a split model
                    value = _quantize(_dequantize(value, previous), details)
                interpreter.set_tensor(details["index"], value)
                interpreter.invoke()
                previous = interpreter.get_output_details()[0]
                value = interpreter.get_tensor(previous["index"])
            outputs.append(_dequantize(value, self.output).reshape(self.batch, -1)[:count])
        return torch.from_numpy(np.concatenate(outputs))


def _precision(facts: list[dict[str, Any]]) -> str:
    dtypes = {f["weight_dtype"] for f in facts}
    if dtypes & {"int8", "uint8"}:
        return "int8"
    if "float16" in dtypes:
        return "fp16"
    return "fp32"


def _guess_layout(shape: tuple[int, ...]) -> str:
    """Files without our metadata (TF's): channels last unless the shape says otherwise."""
    if len(shape) != 4:
        raise InputError(f"expected a 4-D image input, the file declares {shape}")
    if shape[1] in (1, 3) and shape[3] not in (1, 3):
        return "nchw"
    return "nhwc"


def _quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if x.dtype == dtype:
        return x
    scale, zero = details["quantization"]
    if not scale:
        raise InputError(f"the file's {dtype.name} input has no quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    if y.dtype == np.float32:
        return y.copy()
    scale, zero = details["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

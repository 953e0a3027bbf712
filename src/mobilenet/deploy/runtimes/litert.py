"""LiteRT (TensorFlow Lite) interpreter from ``ai-edge-litert``, with its default XNNPACK delegate.

One predictor runs our ``.tflite`` files and TensorFlow's published ones alike, so they can be
compared in the same interpreter with the same threads: it takes the standard NCHW float32 batch
and adapts it to what the file declares — NHWC or NCHW, float32 or uint8/int8 with the input's
own scale and zero point (``q = round(x / scale) + zero_point``, clipped) — and dequantizes a
quantized output. The file's own input (``native``, ``runtimes.inputs``) passes straight through:
converting in Python on every call cost more than the network at 0.25-224. A model published in
parts that run one after another (TF's uint8 1.0-224 body and head) is given as a list of files.

What runs is read back from the interpreter once the delegate is applied (``execution``): the
ops XNNPACK took and those left outside it (an int8 file's uint8 -> int8 QUANTIZE at the input),
TRANSPOSE ops, and the stored weight dtypes.

The files have a fixed batch (1 in every MobileNet we know): a larger batch runs as that many
invocations, which is how the interpreter serves a batch on a phone too. TF's own files end in a
SOFTMAX, so they return probabilities, not logits (``outputs_probabilities`` says which; top-1 is
the same either way).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.execution import Execution
from mobilenet.deploy.formats.tflite_flatbuffer import read_metadata
from mobilenet.deploy.integrity import unreadable, verify_checksums
from mobilenet.deploy.optional import package_version, require
from mobilenet.deploy.runtimes.inputs import NativeInput
from mobilenet.errors import InputError, MobileNetError
from mobilenet.predictor import PrecisionUnavailableError, Predictor
from mobilenet.threads import check_threads

PRECISIONS = ("fp32", "fp16", "int8")
WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


class LiteRtPredictor(Predictor):
    runtime = "litert"

    def __init__(
        self, paths: Sequence[str | os.PathLike[str]], precision: str | None = None, threads: int | None = None
    ) -> None:
        """``paths``: one file, or the parts of one model in the order they run, each checked
        against its checksum where it has one (``integrity``). ``precision``: what the caller
        expects the file to be (None: whatever it is); a different one raises
        ``PrecisionUnavailableError``. ``threads``: the interpreter's threads (default: all cores)."""
        files = [Path(p) for p in paths]
        if not files:
            raise InputError("no .tflite file given")
        check_threads(threads)
        self.threads = threads or os.cpu_count() or 1
        self.paths = files
        self.interpreters, facts = [], []
        # An interpreter is not thread-safe: set_tensor, invoke and get_tensor work on its own
        # buffers, so one call at a time runs them (a predictor may be shared between threads).
        self._lock = threading.Lock()
        for path in files:
            interpreter, fact, metadata = _load(path, self.threads)
            self.interpreters.append(interpreter)
            facts.append(fact)
            if path == files[0]:
                self.metadata = metadata
        self.precision = _precision(facts)
        if precision is not None and precision != self.precision:
            raise PrecisionUnavailableError(
                f"asked for {precision}, but {', '.join(p.name for p in files)} is {self.precision}"
            )
        self._inputs = [interpreter.get_input_details()[0] for interpreter in self.interpreters]
        self._outputs = [interpreter.get_output_details()[0] for interpreter in self.interpreters]
        self.input, self.output = self._inputs[0], self._outputs[-1]
        shape = tuple(int(s) for s in self.input["shape"])
        self.layout = self.metadata["layout"] if self.metadata else _guess_layout(shape)
        scale, zero = self.input["quantization"]
        self.native = NativeInput(shape, self.layout, np.dtype(self.input["dtype"]).name, float(scale), int(zero))
        self.batch = shape[0]
        self.fixed_batch = self.batch  # a larger batch runs as several executions
        self.outputs_probabilities = facts[-1]["ops"][-1:] == ["SOFTMAX"]
        self.execution = read_execution(self.interpreters)
        weights = {"fp32": "float32 weights", "fp16": "float16 weights (dequantized at load)",
                   "int8": f"{facts[0]['weight_dtype']} weights, integer kernels"}[self.precision]
        produced = "probabilities (the file ends in SOFTMAX)" if self.outputs_probabilities else "logits"
        version = package_version("ai-edge-litert") or "?"
        self.description = (
            f"LiteRT interpreter (ai-edge-litert {version}, XNNPACK delegate) {' + '.join(p.name for p in files)}: "
            f"{self.precision}, {weights}; input {self.native.describe()}; returns {produced}; "
            f"{self.threads} threads, batch {self.batch} per invocation; {self.execution.summary()}"
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

    def native_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``x`` as the file takes it (``runtimes.inputs``): converted once, passed through after."""
        return self.native.convert(x)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        outputs = []
        for value, count in self.native.fixed_batches(x):
            with self._lock:
                for i, interpreter in enumerate(self.interpreters):
                    if i:  # the next part of a split model
                        value = _quantize(_dequantize(value, self._outputs[i - 1]), self._inputs[i])
                    interpreter.set_tensor(self._inputs[i]["index"], value)
                    interpreter.invoke()
                    value = interpreter.get_tensor(self._outputs[i]["index"])  # (a copy)
            outputs.append(_dequantize(value, self.output).reshape(self.batch, -1)[:count])
        return torch.from_numpy(outputs[0] if len(outputs) == 1 else np.concatenate(outputs))


def _load(path: Path, threads: int) -> tuple[Any, dict[str, Any], dict[str, Any] | None]:
    """(interpreter with tensors allocated, ``describe_tflite`` facts, our metadata) of one file,
    checked against its checksum first; a file the interpreter cannot parse is one line."""
    from mobilenet.weights.tflite import describe_tflite  # noqa: PLC0415 - pure numpy, no cycle

    interpreter_module = require("ai_edge_litert.interpreter")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    verify_checksums(path)
    try:
        interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        return interpreter, describe_tflite(path), read_metadata(path)
    except MobileNetError:
        raise
    except Exception as err:  # the interpreter and the FlatBuffer readers raise many kinds
        raise unreadable(path, "a TFLite model", err) from err


def read_execution(interpreters: Sequence[Any]) -> Execution:
    """What the interpreters run once XNNPACK is applied (one per part of a split model)."""
    ops_total, calls, transposes = 0, 0, 0
    outside: list[str] = []
    weights: Counter[str] = Counter()
    for interpreter in interpreters:
        nodes = interpreter._get_ops_details()  # noqa: SLF001 - the interpreter's only view of its plan
        delegated = [n for n in nodes if n["op_name"] == "DELEGATE"]
        ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
        ops_total, calls = ops_total + len(ops), calls + len(delegated)
        transposes += sum(op["op_name"] == "TRANSPOSE" for op in ops)
        outside += _outside_the_delegate(interpreter, ops, delegated)
        weights += _weight_dtypes(interpreter, ops)
    return Execution.of("litert", ops_total, delegate="XNNPACK", delegate_calls=calls, outside=outside,
                        transposes=transposes, weights=weights)


def _outside_the_delegate(interpreter: Any, ops: list[dict[str, Any]], delegated: list[dict[str, Any]]) -> list[str]:
    """The ops a DELEGATE node did not replace: walking back from what the delegates read and the
    graph outputs they do not write, every op that produces one of those ran outside them."""
    needed = {int(t) for node in delegated for t in node["inputs"]}
    written = {int(t) for node in delegated for t in node["outputs"]}
    needed |= {d["index"] for d in interpreter.get_output_details()} - written
    left = []
    for op in reversed(ops):
        if any(int(t) in needed for t in op["outputs"]):
            left.append(op["op_name"])
            needed |= {int(t) for t in op["inputs"]}
    return left[::-1]


def _weight_dtypes(interpreter: Any, ops: list[dict[str, Any]]) -> Counter[str]:
    """The stored dtype of each conv and classifier weight (behind its DEQUANTIZE, where it has one)."""
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    producers = {int(t): op for op in ops for t in op["outputs"]}
    found: Counter[str] = Counter()
    for op in ops:
        if op["op_name"] in WEIGHTED_OPS and len(op["inputs"]) > 1:
            weight = int(op["inputs"][1])
            source = producers.get(weight)
            if source is not None and source["op_name"] == "DEQUANTIZE":
                weight = int(source["inputs"][0])
            found[dtypes.get(weight, "?")] += 1
    return found


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

"""OpenVINO on the CPU: fp32, bf16 (where the CPU has it) and NNCF int8.

``INFERENCE_PRECISION_HINT`` is always set: OpenVINO runs bf16 by default on CPUs that have it, so
an unset "fp32" would really be bf16 there. What runs is read back from the compiled model (the
precision each convolution executes in), and a request that would silently run another precision
— bf16 on a CPU without it, where OpenVINO quietly falls back to f32 — is refused: ``not_native``
says so before anything is built, and the read-back catches whatever it could not foresee.
``execution`` says what the compiled model runs (its layers, the transposes among them) and the
dtypes the IR stores its weights in. A file is checked against its checksum first
(``integrity``); one OpenVINO cannot read is a one-line ``DamagedFileError``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.execution import Execution
from mobilenet.deploy.integrity import unreadable, verify_checksums
from mobilenet.deploy.openvino_core import openvino_core
from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes.chain import ChainOps, chain_layer_seconds
from mobilenet.predictor import PrecisionUnavailableError, Predictor, as_numpy
from mobilenet.threads import check_threads

PRECISIONS = ("fp32", "bf16", "int8")
# OpenVINO's names for what a convolution executes in -> ours.
EXECUTED = {"f32": "fp32", "bf16": "bf16", "u8": "int8", "i8": "int8", "f16": "fp16"}
# OpenVINO's element types -> numpy's names, for the stored weights.
STORED = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i8": "int8", "u8": "uint8", "i4": "int4"}
# What stands between a stored weight and the layer that uses it (decompression, NNCF's quantization).
_WEIGHT_PATH = ("Convert", "FakeQuantize", "Multiply", "Subtract", "Reshape")


def not_native(precision: str) -> str | None:
    """Why ``precision`` would not run as asked on this CPU (None: it would)."""
    cpu = cpu_info()
    if precision == "bf16" and not cpu.native_bf16:
        return f"this CPU has no native bf16 ({cpu.summary()}): OpenVINO would silently run f32 instead"
    return None


def compile_config(precision: str, threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin's configuration for a model run at ``precision`` on ``threads`` (None: its
    default): what the predictor compiles with, and the latency model's probes too."""
    # int8 layers run int8 whatever the hint; the hint decides the rest (the first conv, the
    # pool, the classifier), which we keep at f32 for int8 so only quantization costs accuracy.
    # No thread pinning: on a shared machine a pinned worker waits for its core while another
    # is idle (measured: fp32 batch 1 at 49 ms pinned against 32 ms unpinned under load 7).
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def executed_precisions(compiled: Any) -> Counter[str]:
    """How many convolutions of a compiled model run in each precision (fp32, bf16, int8)."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) == "Convolution":
            executed = info["runtimePrecision"].astype(str)
            counts[EXECUTED.get(executed, executed)] += 1
    return counts


class OpenVinoPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, ov_model: Any, precision: str = "fp32", threads: int | None = None) -> None:
        """Compiles ``ov_model`` for ``precision`` and reads back what its convolutions run: a
        different precision (bf16 asked of a CPU without it, which OpenVINO quietly runs in f32)
        raises ``PrecisionUnavailableError``."""
        ov = require("openvino")
        check_threads(threads)
        config = compile_config(precision, threads)
        hint = config["INFERENCE_PRECISION_HINT"]
        self.compiled = openvino_core().compile_model(ov_model, "CPU", config)
        # One request, reused: it holds the input and output tensors, so a call runs infer and
        # copies its output under ``_lock`` (a second thread would be refused "Infer Request is
        # busy", or read the other call's logits). A lock rather than a request per call: the
        # LATENCY hint compiles one stream, which runs one inference at a time on all the threads
        # anyway, and a new request per call would allocate its buffers on every call.
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()
        executed = executed_precisions(self.compiled)
        main = executed.most_common(1)[0][0] if executed else "?"
        if main != precision:
            raise PrecisionUnavailableError(
                f"asked OpenVINO for {precision}, but its compiled model runs its convolutions in "
                f"{dict(executed)} on this CPU ({cpu_info().summary()})"
            )
        self.precision = main
        self.execution = read_execution(ov_model, self.compiled)
        used = self.compiled.get_property("INFERENCE_NUM_THREADS")
        layers = ", ".join(f"{n} conv {p}" for p, n in sorted(executed.items()))
        kind = "NNCF int8, per-channel weights" if precision == "int8" else f"{precision}, BatchNorm folded"
        self.description = (
            f"OpenVINO {ov.get_version().split('-')[0]} {kind} (runs {layers}), INFERENCE_PRECISION_HINT={hint}, "
            f"{used or 'all'} threads; {self.execution.summary()}"
        )

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], precision: str | None = "fp32", threads: int | None = None
    ) -> OpenVinoPredictor:
        """``precision`` None: int8 if the IR holds NNCF's FakeQuantize nodes, else fp32. The .xml
        and its .bin are checked against their checksums first (``integrity``)."""
        verify_checksums(path)
        try:
            ov_model = openvino_core().read_model(str(path))
        except Exception as err:  # OpenVINO raises RuntimeError for any file it cannot parse
            raise unreadable(path, "an OpenVINO IR (.xml and its .bin)", err) from err
        if precision is None:
            quantized = any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ordered_ops())
            precision = "int8" if quantized else "fp32"
        return cls(ov_model, precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = as_numpy(x)  # (converted outside the lock: a caller's conversion need not wait)
        with self._lock:
            self.request.infer({0: x}, share_inputs=True)
            return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def read_execution(ov_model: Any, compiled: Any) -> Execution:
    """The compiled model's layers (inputs, outputs and constants aside) and the transposes among
    them, and the element type of each convolution's and the classifier's stored weights."""
    layers = [op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()]
    layers = [kind for kind in layers if kind not in ("Input", "Output", "Const", "Parameter", "Result")]
    weights: Counter[str] = Counter()
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution", "MatMul"):
            source = op.input_value(1).get_node()
            while source.get_type_name() in _WEIGHT_PATH:
                source = source.input_value(0).get_node()
            if source.get_type_name() == "Constant":
                kind = source.get_element_type().get_type_name()
                weights[STORED.get(kind, kind)] += 1
    return Execution.of("openvino", len(layers), weights=weights, transposes=layers.count("Transpose"))


# OpenVINO's CPU nodes in a network's performance counters: a reorder into a conv's layout (or the
# input's conversion to bf16, or its int8 quantization, fused into a "Subgraph") belongs to the
# layer after it, as ONNX Runtime's does.
OV_OPS = ChainOps(convs=("Convolution", "GroupConvolution"),
                  before=("Reorder", "Convert", "FakeQuantize", "Subgraph"),
                  pools=("ReduceMean", "AvgPool", "Pooling"),
                  classifiers=("FullyConnected", "FullyConnectedQuantizedLegacy", "MatMul"))


def profile_layers(ov_model: Any, config: dict[str, Any], x: np.ndarray, seconds: float) -> list[float]:
    """Each layer's median seconds by OpenVINO's performance counters, in the order of the chain
    (``OV_OPS``), running ``ov_model`` compiled with ``config`` and the counters on (apart, so
    that a predictor's own compiled model runs without them) on ``x`` for about ``seconds`` (at
    least six runs; the first, warming up, left out)."""
    counted = openvino_core().compile_model(ov_model, "CPU", config | {"PERF_COUNT": True}).create_infer_request()
    runs: list[list[float]] = []
    deadline = time.perf_counter() + seconds
    while len(runs) < 6 or time.perf_counter() < deadline:
        counted.infer({0: x}, share_inputs=True)
        nodes = [(n.node_type, n.real_time.total_seconds()) for n in counted.profiling_info
                 if ran(n.status.name, n.node_type, n.exec_type)]
        runs.append(chain_layer_seconds(nodes, OV_OPS))
    return list(np.median(np.array(runs[1:]), axis=0))


def ran(status: str, node_type: str, exec_type: str) -> bool:
    """Whether a node of OpenVINO's performance counters ran. Its status says NOT_RUN for a layer
    that ran in under a microsecond (a depthwise conv on a 3x3 map, on a Zen 5), so a layer's
    node counts whenever it has a kernel (an ``exec_type`` other than ``undef``: a node fused into
    another has none); other nodes (reorders) count as their status says."""
    if status == "EXECUTED":
        return True
    return node_type in (*OV_OPS.convs, *OV_OPS.pools, *OV_OPS.classifiers) and exec_type != "undef"

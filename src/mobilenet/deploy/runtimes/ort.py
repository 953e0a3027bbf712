"""ONNX Runtime on the CPU: the folded fp32 export, or its QDQ int8 quantization.

int8 kernels multiply u8 activations by s8 weights. On x86 CPUs without VNNI (AVX2-only, or
AVX-512 without VNNI) they add pairs of products in saturating 16-bit lanes, so weights must
keep to 7 bits there (``reduce_range``) or large products clip: measured on 1.0-224 under an
AVX2-only CPU, top-1 fell from 78.9% to 64.1% (see ``mobilenet.deploy.quantize``). A predictor
reads the weight range back from the file and warns when the file will clip on this CPU.

A file is checked against its checksum first (``integrity``); one ONNX Runtime cannot parse is a
one-line ``DamagedFileError``. ``execution`` says what the graph holds: its nodes (all on the CPU
execution provider: there is no delegate to fall back from) and its stored weight dtypes.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.execution import Execution
from mobilenet.deploy.integrity import unreadable, verify_checksums
from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes.chain import ChainOps, chain_layer_seconds
from mobilenet.errors import MobileNetError
from mobilenet.predictor import PrecisionUnavailableError, Predictor, as_numpy
from mobilenet.threads import check_threads

PRECISIONS = ("fp32", "int8")  # no bf16 kernels on x86 CPUs
SEVEN_BIT_LIMIT = 64  # |w| <= 64 keeps 2 x 255 x 64 = 32,640 inside a signed 16-bit lane


def int8_weight_magnitude(model_bytes: bytes) -> int | None:
    """The largest |value| among the file's int8 weight initializers (None: no int8 weights)."""
    return _read_graph(model_bytes)[0]


def _read_graph(model_bytes: bytes) -> tuple[int | None, Execution]:
    """(``int8_weight_magnitude``, what the graph runs) from one parse of the file."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper  # noqa: PLC0415

    graph = onnx.load_from_string(model_bytes).graph
    largest = None
    weights: Counter[str] = Counter()
    for init in graph.initializer:
        if init.data_type == onnx.TensorProto.INT8:
            value = int(np.abs(numpy_helper.to_array(init).astype(np.int16)).max(initial=0))
            largest = value if largest is None else max(largest, value)
        if len(init.dims) >= 2:  # a weight, not a bias, a scale or a shape
            weights[np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).name] += 1
    transposes = sum(node.op_type == "Transpose" for node in graph.node)
    return largest, Execution.of("onnxruntime", len(graph.node), weights=weights, transposes=transposes)


# The size of the one pool ``share_one_pool`` put this process's sessions on (0: ONNX Runtime's
# default count); None while each session keeps a pool of its own.
_one_pool_threads: int | None = None


def on_one_pool(threads: int | None) -> bool:
    """Whether every session of this process runs on one pool of ``threads`` threads (None: ONNX
    Runtime's default count), which ``share_one_pool`` made."""
    return _one_pool_threads is not None and _one_pool_threads == (threads or 0)


def share_one_pool(threads: int | None) -> bool:
    """Run every ONNX Runtime session this process makes from now on on one intra-op pool of
    ``threads`` threads (None: ONNX Runtime's default count), for a process that runs ONNX
    Runtime at that one count only: the latency model's own process (``calibrate``, ``choose``).

    ONNX Runtime gives each session a pool of its own, and at as many threads as cores those pools
    slow each other: nine networks timed in turn in one process ran 1.0-224 at 2.7 ms in some
    blocks and 6.6-7.5 in others, 2.9 alone; on one pool, 2.9 in turn and alone (2-vCPU Zen 5,
    docs/latency.md §0). Once the pool exists ONNX Runtime refuses every session with a pool of its
    own, ``onnxruntime.quantization``'s included, so every session of the process is put on it.
    False, changing nothing, where this ONNX Runtime offers no such pool (its sessions keep their own)
    or the process has one of another size already; True again for the size it has."""
    global _one_pool_threads
    if _one_pool_threads is not None:
        return on_one_pool(threads)
    ort = require("onnxruntime")
    try:
        from onnxruntime.capi._pybind_state import set_global_thread_pool_sizes  # noqa: PLC0415

        set_global_thread_pool_sizes(threads or 0, 1)
    except Exception:  # (ImportError where it has none; its own Fail, a bare Exception, where one is made already)
        return False
    made_with_own_pool = ort.InferenceSession.__init__

    def on_the_shared_pool(self: Any, path_or_bytes: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> None:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        options.use_per_session_threads = False
        options.intra_op_num_threads = options.inter_op_num_threads = 0  # (the pool's; said ignored otherwise)
        made_with_own_pool(self, path_or_bytes, options, *args, **kwargs)

    ort.InferenceSession.__init__ = on_the_shared_pool
    _one_pool_threads = threads or 0
    return True


def session_options(threads: int | None, profile_prefix: str | None = None) -> Any:
    """The session options every ONNX Runtime session of the project runs with (all graph
    optimisations, sequential, ``threads`` intra-op threads); with ``profile_prefix``, profiling
    on, its JSON written there (the latency model's per-layer calibration)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling, options.profile_file_prefix = True, profile_prefix
    return options


class OnnxRuntimePredictor(Predictor):
    runtime = "onnxruntime"

    def __init__(
        self, model_bytes: bytes, precision: str | None = "fp32", threads: int | None = None, *,
        name: str = "the ONNX model",
    ) -> None:
        """``precision``: what the caller expects the file to be (None: whatever it is); the file's
        own precision is read back from its weights, and a different one raises
        ``PrecisionUnavailableError``. ``name``: the file's, for errors."""
        ort = require("onnxruntime")
        check_threads(threads)
        try:
            self.session = ort.InferenceSession(model_bytes, session_options(threads),
                                                providers=["CPUExecutionProvider"])
            magnitude, self.execution = _read_graph(model_bytes)
        except MobileNetError:
            raise
        except Exception as err:  # ONNX Runtime's and onnx's parse errors have no common base
            raise unreadable(name, "an ONNX model", err) from err
        self.input_name = self.session.get_inputs()[0].name
        self.precision = "int8" if magnitude is not None else "fp32"
        if precision is not None and self.precision != precision:
            raise PrecisionUnavailableError(f"asked for {precision}, but the ONNX file is {self.precision}")
        kind = "fp32, BatchNorm folded"
        if magnitude is not None:
            seven_bit = magnitude <= SEVEN_BIT_LIMIT
            kind = f"QDQ int8 (u8 activations, {'7' if seven_bit else '8'}-bit per-channel weights)"
            if not seven_bit and cpu_info().is_x86 and not cpu_info().int8_dot:
                warnings.warn(
                    "this int8 ONNX file has full 8-bit weights, and this CPU has no VNNI: ONNX Runtime's "
                    "u8 x s8 kernels saturate here and lose accuracy (measured 78.9% -> 64.1% top-1 on 1.0-224). "
                    "Re-quantize with portable int8 (7-bit weights), the project's default", stacklevel=2,
                )
                kind += ", SATURATES on this CPU (no VNNI)"
        self.description = (f"ONNX Runtime {ort.__version__} {kind}, {threads or 'default (all cores)'} intra-op "
                            f"threads; {self.execution.summary()}")

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], precision: str | None = "fp32", threads: int | None = None
    ) -> OnnxRuntimePredictor:
        """The file at ``path``, checked against its checksum first (``integrity``)."""
        path = Path(path)
        verify_checksums(path)
        return cls(path.read_bytes(), precision, threads, name=path.name)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input_name: as_numpy(x)})[0])


# ONNX Runtime's ops in a network's profile: each conv (plain, or with its activation fused) is the
# chain's next conv layer; a pad or a reorder into the blocked layout belongs to the conv after
# it; the pool and the classifier are the chain's last two layers; anything else (a reorder out of
# the blocked layout, a flatten) belongs to the layer before it.
ORT_OPS = ChainOps(convs=("Conv", "FusedConv", "NchwcConv", "QLinearConv"),
                   before=("Pad", "ReorderInput", "QuantizeLinear"),
                   pools=("GlobalAveragePool", "NchwcGlobalAveragePool", "ReduceMean"),
                   classifiers=("Gemm", "MatMul", "QGemm", "QLinearMatMul"))


def profile_layers(data: bytes, x: torch.Tensor | np.ndarray, threads: int | None, seconds: float) -> list[float]:
    """Each layer's median seconds by ONNX Runtime's profiler, in the order of the chain
    (``ORT_OPS``), running the ONNX graph ``data`` on ``x`` in a session of its own, as the
    predictor's, for about ``seconds`` (at least five runs; the first, warming up, left out)."""
    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        session = ort.InferenceSession(data, session_options(threads, str(Path(tmp) / "profile")),
                                       providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: as_numpy(x)}
        runs, deadline = 0, time.perf_counter() + seconds
        while runs < 5 or time.perf_counter() < deadline:
            session.run(None, feed)
            runs += 1
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [(e["args"].get("op_name", ""), e["dur"] * 1e-6) for e in events
             if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(nodes) // runs
    layers = [chain_layer_seconds(nodes[i * per_run:(i + 1) * per_run], ORT_OPS) for i in range(1, runs)]
    return list(np.median(np.array(layers), axis=0))

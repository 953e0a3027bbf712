"""ExecuTorch's own runtime (``executorch.runtime``) running a ``.pte`` program on the CPU, its
layers delegated to XNNPACK as the program was lowered.

Takes the standard NCHW float32 batch and hands the program its declared layout (our programs say
NCHW, the default, or NHWC in their metadata); a batch already in the program's own layout passes
straight through (``runtimes.inputs``), and one in neither is refused naming both shapes. What the
program runs is read from it (``execution``): its delegate calls, the kernels outside them, and the
dtypes XNNPACK stores its weights in. Programs have a fixed batch (1 in ours): a larger batch runs
as that many executions. ``threads`` sizes ExecuTorch's thread pool, which is process-wide: the
last predictor built decides it for all.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.execution import Execution
from mobilenet.deploy.formats.pte_program import read_plan
from mobilenet.deploy.integrity import unreadable, verify_checksums
from mobilenet.deploy.optional import package_version, require
from mobilenet.deploy.runtimes.chain import ChainOps, chain_layer_seconds
from mobilenet.deploy.runtimes.inputs import NativeInput
from mobilenet.errors import InputError, MobileNetError
from mobilenet.predictor import PrecisionUnavailableError, Predictor
from mobilenet.threads import check_threads

PRECISIONS = ("fp32", "int8")
# XNNPACK times each operator in whole microseconds, truncated (``xnn_get_elapsed_time``): half of
# one is added back to each, so that a layer of a few microseconds is not read a sixth short.
XNNPACK_TICK_S = 1e-6
# XNNPACK's operator families in a MobileNet's ETDump (``operator_timings``): a conv layer runs as a
# convolution, a pointwise one as a fully connected GEMM over the pixels, the pool as a mean, and
# the fully connected operator after the pool is the classifier, which ``operator_timings`` names so.
CONV_OPERATORS = ("Convolution", "Fully Connected")
POOL_OPERATORS = ("Mean", "Global Average Pooling")
CLASSIFIER = "classifier"


class ExecuTorchPredictor(Predictor):
    runtime = "executorch"

    def __init__(self, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None) -> None:
        runtime_module = require("executorch.runtime")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        check_threads(threads)
        verify_checksums(path)
        if threads:
            require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(threads)
        self.path = path
        self.program, self.method, self.metadata, sizes = _load(runtime_module, path)
        # A method's inputs and outputs live in its planned memory: one execution at a time, its
        # output copied before the next (a predictor may be shared between threads).
        self._lock = threading.Lock()
        self.execution = read_execution(path)
        self.shape = sizes
        self.batch = sizes[0]
        self.fixed_batch = self.batch  # a larger batch runs as several executions
        if self.metadata:
            self.layout = self.metadata["layout"]
            self.precision = self.metadata["precision"]
        else:
            self.layout = "nchw" if sizes[1] in (1, 3) and sizes[3] not in (1, 3) else "nhwc"
            self.precision = precision or "fp32"
        if precision is not None and precision != self.precision:
            raise PrecisionUnavailableError(f"asked for {precision}, but {path.name} is {self.precision}")
        self.native = NativeInput(sizes, self.layout)
        pool = require("executorch.extension.pybindings.portable_lib")._threadpool_get_thread_count()
        kind = "int8 (PT2E, per-channel weights)" if self.precision == "int8" else self.precision
        version = package_version("executorch") or "?"
        self.description = (
            f"ExecuTorch {version} runtime, XNNPACK delegate, {path.name}: {kind}, input float32 "
            f"{self.layout.upper()} {sizes}, {pool} threads in its pool, batch {self.batch} per execution; "
            f"{self.execution.summary()}"
        )

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None
    ) -> ExecuTorchPredictor:
        return cls(path, precision, threads)

    def native_input(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``x`` in the program's own layout (``runtimes.inputs``): converted once, passed through after."""
        return torch.from_numpy(self.native.convert(x))

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        outputs = []
        for value, count in self.native.fixed_batches(x):
            with self._lock:
                out = self.method.execute([torch.from_numpy(value)])[0]
                outputs.append(out.reshape(self.batch, -1)[:count].float().clone())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def _load(runtime_module: Any, path: Path) -> tuple[Any, Any, dict[str, Any] | None, tuple[int, ...]]:
    """(program, its forward method, our metadata, the input's sizes); a file the runtime cannot
    load is one line."""
    from mobilenet.deploy.formats.executorch import read_metadata  # noqa: PLC0415 - runtimes may use writers

    try:
        program = runtime_module.Runtime.get().load_program(path)
        method = program.load_method("forward")
        sizes = tuple(int(s) for s in program.metadata("forward").input_tensor_meta(0).sizes())
        metadata = read_metadata(path)
    except MobileNetError:
        raise
    except Exception as err:  # the runtime raises RuntimeError, ValueError and more on a bad program
        raise unreadable(path, "an ExecuTorch program", err) from err
    if len(sizes) != 4:
        raise InputError(f"{path.name}: expected a 4-D image input, the program declares {sizes}")
    return program, method, metadata, sizes


def read_execution(path: str | os.PathLike[str]) -> Execution:
    """What the program's ``forward`` runs (``formats.pte_program``): XNNPACK calls, the kernels
    outside them, and the dtypes of the weights XNNPACK holds."""
    plan = read_plan(Path(path).read_bytes())
    return Execution.of("executorch", plan.xnnpack_nodes + len(plan.outside), weights=plan.weights,
                        delegate="XNNPACK", delegate_calls=plan.delegate_calls, outside=plan.outside,
                        transposes=plan.xnnpack_transposes + sum("permute" in op for op in plan.outside))


def operator_timings(
    program: bytes, image: torch.Tensor, seconds: float, min_runs: int = 6,
) -> list[list[tuple[str, float]]]:
    """Each run's operators in execution order, as (name, seconds), by ExecuTorch's event tracer
    (ETDump) on a module of ``program`` loaded apart with it on, run on ``image`` (in the
    program's own layout) for ``seconds``, at least ``min_runs`` times; the first run, warming
    up, left out. XNNPACK's operators, timed by XNNPACK itself, are named by family (the name
    less its types and number: "Convolution", "Fully Connected", "Transpose", "Mean"...; the
    fully connected one after the pool ``CLASSIFIER``); the kernels ExecuTorch runs itself by
    theirs ("native_call_..."). The events that span others (the delegate's call, the method's
    execution) are left out."""
    from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc  # noqa: PLC0415

    portable = require("executorch.extension.pybindings.portable_lib")
    module = portable._load_for_executorch_from_buffer(program, enable_etdump=True)
    deadline, runs = time.perf_counter() + seconds, 0
    while runs < min_runs or time.perf_counter() < deadline:
        module.forward([image])
        runs += 1
    with tempfile.TemporaryDirectory(prefix="mobilenet-etdump-") as tmp:
        path = Path(tmp) / "profile.etdp"
        module.write_etdump_result_to_file(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (its reader's use of importlib.resources)
            dump = deserialize_from_etdump_flatcc(path.read_bytes())
    timed = [nodes for nodes in map(run_operators, dump.run_data) if nodes]  # (loading the method is a run too)
    return timed[1:]


def run_operators(run: Any) -> list[tuple[str, float]]:
    """One ETDump run's operators, as ``operator_timings`` gives them."""
    nodes, pooled = [], False
    for event in run.events:
        profiled = event.profile_event
        if profiled is None:
            continue
        elapsed = (profiled.end_time - profiled.start_time) / 1e9
        if profiled.delegate_debug_id_str:  # an XNNPACK operator, "Convolution (NHWC, F32) IGEMM #3"
            family = profiled.delegate_debug_id_str.split(" (")[0]
            pooled = pooled or family in POOL_OPERATORS
            nodes.append((CLASSIFIER if pooled and family == "Fully Connected" else family,
                          elapsed + XNNPACK_TICK_S / 2))
        elif profiled.name and profiled.name.startswith("native_call_"):
            nodes.append((profiled.name, elapsed))
    return nodes


# XNNPACK's operators in an ExecuTorch network's ETDump (``operator_timings``):
# a conv is the chain's next conv layer; the transposes and pad around the stem, a strided conv's
# pad and an int8 network's conversions around it belong to the conv after them; the pool and the
# classifier are the chain's last two layers; anything else (a reshape, ExecuTorch's own copy for
# the flatten) belongs to the layer before it.
ET_OPS = ChainOps(convs=CONV_OPERATORS, before=("Transpose", "Constant Pad", "Convert"), pools=POOL_OPERATORS,
                  classifiers=(CLASSIFIER,))


def profile_layers(program: bytes, image: torch.Tensor, seconds: float) -> list[float]:
    """Each layer's seconds in the ``program``'s network at ``image``, in the order of the chain
    (``ET_OPS``), by XNNPACK's operator timings over about ``seconds``: per layer the mean of
    the middle 80% of runs (a median would keep the timings' whole-microsecond steps)."""
    runs = [chain_layer_seconds(nodes, ET_OPS) for nodes in operator_timings(program, image, seconds)]
    return trimmed_mean(np.array(runs))


def trimmed_mean(runs: np.ndarray, cut: float = 0.1) -> list[float]:
    """Per column of ``runs`` (one row a run), the mean of the values left once the ``cut``
    lowest and highest were dropped."""
    ordered = np.sort(runs, axis=0)
    drop = int(len(ordered) * cut)
    return list(ordered[drop:len(ordered) - drop].mean(axis=0))

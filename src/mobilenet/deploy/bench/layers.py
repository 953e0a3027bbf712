"""Per-layer time shares (stem, depthwise, pointwise, pool, FC) against mult-add shares (Table 2),
from PyTorch's oneDNN Graph program by its profiler (or its compiled calls timed one by one, or
eager hooks), ONNX Runtime's profiler, OpenVINO's performance counters and XNNPACK's operator
timings in ExecuTorch (at fp32 each)."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet import fused_ops, onednn_graph
from mobilenet.cost import network_cost
from mobilenet.deploy.bench.common import input_batch
from mobilenet.deploy.bench.report import BenchOptions
from mobilenet.deploy.formats import executorch as pte
from mobilenet.deploy.formats.onnx import export_onnx
from mobilenet.deploy.formats.openvino import openvino_model
from mobilenet.deploy.openvino_core import openvino_core
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtimes.executorch import (
    CLASSIFIER,
    CONV_OPERATORS,
    POOL_OPERATORS,
    ExecuTorchPredictor,
    operator_timings,
)
from mobilenet.model import MobileNetV1
from mobilenet.optimized import cpu_backend, optimize
from mobilenet.prepare import folded_copy, inference_copy

KINDS = ("conv", "depthwise", "pointwise", "pool", "fc")
KIND_LABELS = {"conv": "stem (3x3 conv)", "depthwise": "depthwise 3x3", "pointwise": "pointwise 1x1",
               "pool": "average pool", "fc": "classifier (FC)", "other": "other (layout reorders)"}


def layer_shares(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    cost = network_cost(model.arch_cfg)
    predicted = {kind: sum(x.mult_adds for x in cost.layers if x.kind == kind) / cost.total.mult_adds for kind in KINDS}
    x = input_batch(model, 1, options.preprocess)
    rows = []
    profilers = {"torch": _torch_layer_times, "onnxruntime": _ort_layer_times, "openvino": _openvino_layer_times,
                 "executorch": _executorch_layer_times}
    for runtime, profile in profilers.items():
        if runtime not in options.runtimes or not (runtime == "torch" or available(runtime)):
            continue
        log(f"profiling layers on {runtime}")
        seconds = profile(model, x, options)
        total = sum(seconds.values())
        for kind in (*KINDS, "other"):
            if kind == "other" and kind not in seconds:
                continue
            rows.append({
                "runtime": runtime, "kind": kind, "label": KIND_LABELS[kind],
                "time_share": seconds.get(kind, 0.0) / total, "mult_add_share": predicted.get(kind, 0.0),
            })
    return rows


def _torch_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time of what the torch cell runs: where ``mobilenet.optimize`` runs oneDNN Graph,
    its program's partitions by PyTorch's profiler; where it compiles with inductor, its
    program's calls timed one by one (``mobilenet.fused_ops``: the compiled program itself has no
    per-layer profile); else the folded channels_last model in eager mode, from forward hooks
    around every layer (TorchScript hides the layers)."""
    layers = network_cost(model.arch_cfg).layers
    kinds = {layer.name: layer.kind for layer in layers}
    totals: dict[str, float] = {}
    if cpu_backend() == "onednn-graph":
        program = optimize(model, batch_size=len(x), backend="onednn-graph", log=lambda line: None).net
        for layer, seconds in zip(layers, onednn_graph.layer_seconds(program, x, options.seconds), strict=True):
            totals[layer.kind] = totals.get(layer.kind, 0.0) + seconds
        return totals
    if fused_ops.available():
        program = fused_ops.fused_ops(inference_copy(model), tuple(x.shape))
        for name, seconds in program.layer_seconds(x, options.seconds).items():
            totals[kinds[name]] = totals.get(kinds[name], 0.0) + seconds
        return totals
    net = folded_copy(model).to(memory_format=torch.channels_last)
    starts: dict[str, float] = {}
    for name, module in net.named_modules():
        if name in kinds:
            module.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, time.perf_counter()))
            module.register_forward_hook(
                lambda m, a, out, name=name: totals.__setitem__(
                    kinds[name], totals.get(kinds[name], 0.0) + time.perf_counter() - starts[name]
                )
            )
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        totals.clear()
        deadline = time.perf_counter() + options.seconds
        while time.perf_counter() < deadline:
            net(x)
    return totals


def _ort_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time from ONNX Runtime's own profiler. Its node names change when it fuses, so
    nodes are matched to layers by execution order: the k-th convolution run is the k-th conv
    layer of the architecture (the network is a chain)."""

    import onnxruntime as ort  # noqa: PLC0415

    layers = network_cost(model.arch_cfg).layers
    conv_kinds = [layer.kind for layer in layers if layer.kind in ("conv", "depthwise", "pointwise")]
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        if options.threads:
            opts.intra_op_num_threads = options.threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(3):
            session.run(None, feed)
        deadline = time.perf_counter() + options.seconds
        while time.perf_counter() < deadline:
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    ops = {"Conv": "conv", "FusedConv": "conv", "Gemm": "fc", "FusedGemm": "fc", "MatMul": "fc",
           "ReduceMean": "pool", "GlobalAveragePool": "pool"}
    return _by_kind(((ops.get(e.get("args", {}).get("op_name", ""), "other"), e["dur"] * 1e-6) for e in nodes),
                    conv_kinds)


def _openvino_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time from OpenVINO's per-node performance counters (fp32), matched to layers by
    execution order like ONNX Runtime's."""

    conv_kinds = [x.kind for x in network_cost(model.arch_cfg).layers if x.kind in ("conv", "depthwise", "pointwise")]
    config: dict[str, Any] = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                              "ENABLE_CPU_PINNING": False}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = options.threads
    compiled = openvino_core().compile_model(openvino_model(model), "CPU", config)
    request = compiled.create_infer_request()
    data = x.numpy()
    for _ in range(3):
        request.infer({0: data})
    ops = {"Convolution": "conv", "GroupConvolution": "conv", "FullyConnected": "fc", "MatMul": "fc",
           "ReduceMean": "pool", "AvgPool": "pool"}
    totals: dict[str, float] = {}
    deadline = time.perf_counter() + options.seconds
    while time.perf_counter() < deadline:
        request.infer({0: data})
        executed = [p for p in request.profiling_info if p.status.name == "EXECUTED"]
        run = _by_kind(((ops.get(p.node_type, "other"), p.real_time.total_seconds()) for p in executed), conv_kinds)
        for kind, seconds in run.items():
            totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def _executorch_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time from XNNPACK's operator timings in ExecuTorch's ETDump (the fp32 program
    bench times), matched to layers by execution order like ONNX Runtime's: a pointwise conv
    runs as a fully connected operator (``runtimes.executorch.CONV_OPERATORS``)."""
    conv_kinds = [x.kind for x in network_cost(model.arch_cfg).layers if x.kind in ("conv", "depthwise", "pointwise")]
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        path = Path(tmp) / "model.pte"
        pte.write(model, path)
        predictor = ExecuTorchPredictor(path, threads=options.threads)  # (its threads: the process's pool)
        program, image = path.read_bytes(), predictor.native_input(x[:predictor.batch])
    totals: dict[str, float] = {}
    for run in operator_timings(program, image, options.seconds):
        for kind, seconds in _by_kind(((_executorch_kind(op), seconds) for op, seconds in run), conv_kinds).items():
            totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def _executorch_kind(op: str) -> str:
    """bench's op kind of an operator as ``operator_timings`` names it."""
    if op in CONV_OPERATORS:
        return "conv"
    return "pool" if op in POOL_OPERATORS else "fc" if op == CLASSIFIER else "other"


def _by_kind(events: Any, conv_kinds: list[str]) -> dict[str, float]:
    """Sum (op kind, seconds) events in execution order into layer kinds; the k-th "conv" event is
    the k-th convolution of the architecture (stem, depthwise or pointwise)."""
    totals: dict[str, float] = {}
    conv_index = 0
    for kind, seconds in events:
        if kind == "conv":
            kind = conv_kinds[conv_index % len(conv_kinds)]
            conv_index += 1
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


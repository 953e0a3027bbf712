"""Each layer's time in the network bench runs, from each runtime's own profiler at batch 1,
fp32: PyTorch's oneDNN Graph program by its profiler (or its compiled calls timed one by one, or
eager hooks), ONNX Runtime's profiler, OpenVINO's performance counters and XNNPACK's operator
timings in ExecuTorch; and from those, each layer type's share of the time against its share of
the mult-adds (Table 2). A profile's ops are given to the layers as the latency model's
calibration gives them (``runtimes.chain``): a pad or a reorder into a conv's layout is that
conv's, so the shares and the predictions beside them (``bench --predict``) split the same time."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet import fused_ops, onednn_graph
from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.deploy.bench.common import input_batch
from mobilenet.deploy.bench.report import BenchOptions
from mobilenet.deploy.formats import executorch as pte
from mobilenet.deploy.formats.onnx import export_onnx
from mobilenet.deploy.formats.openvino import openvino_model
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtimes import executorch as executorch_runtime
from mobilenet.deploy.runtimes import ort as ort_runtime
from mobilenet.deploy.runtimes import ov as ov_runtime
from mobilenet.model import MobileNetV1
from mobilenet.optimized import cpu_backend, optimize
from mobilenet.prepare import folded_copy, inference_copy
from mobilenet.threads import torch_threads_kept

KINDS = ("conv", "depthwise", "pointwise", "pool", "fc")
KIND_LABELS = {"conv": "stem (3x3 conv)", "depthwise": "depthwise 3x3", "pointwise": "pointwise 1x1",
               "pool": "average pool", "fc": "classifier (FC)"}
LayerProfiler = Callable[[MobileNetV1, torch.Tensor, int | None, float], list[float]]


def layer_profiles(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> dict[str, list[float]]:
    """Per runtime of ``options`` that has a profiler here, each layer's seconds in one profile of
    the network bench runs (batch 1, fp32, ``options.threads``, about ``options.seconds``), in the
    order of ``arch.layers``. A profile that does not split into the network's layers is left
    out, and said."""
    x = input_batch(model, 1, options.preprocess)
    count = len(network_cost(model.arch_cfg).layers)
    profiles = {}
    for runtime in PROFILED:
        if runtime not in options.runtimes or not (runtime == "torch" or available(runtime)):
            continue
        log(f"profiling layers on {runtime}")
        seconds = network_layer_seconds(model, runtime, x, options.threads, options.seconds)
        if len(seconds) != count or sum(seconds) <= 0:
            log(f"{runtime}'s profile does not split into the network's {count} layers "
                f"({len(seconds)} found): its layers are left out")
            continue
        profiles[runtime] = [float(s) for s in seconds]
    return profiles


def network_layer_seconds(model: MobileNetV1, runtime: str, x: torch.Tensor, threads: int | None,
                          seconds: float) -> list[float]:
    """Each layer's seconds in one profile of ``model`` as bench runs it in ``runtime`` (one of
    ``PROFILED``), on ``x`` (batch 1) for about ``seconds``, in the order of ``arch.layers``."""
    return PROFILED[runtime](model, x, threads, seconds)


def layer_shares(arch_cfg: ArchConfig, profiles: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Per profiled runtime and layer type, its share of the layers' time (``layer_profiles``)
    beside its share of the mult-adds."""
    cost = network_cost(arch_cfg)
    mult_adds = {kind: sum(x.mult_adds for x in cost.layers if x.kind == kind) / cost.total.mult_adds for kind in KINDS}
    rows = []
    for runtime, seconds in profiles.items():
        by_kind = dict.fromkeys(KINDS, 0.0)
        for layer, s in zip(cost.layers, seconds, strict=True):
            by_kind[layer.kind] += s
        rows += [{"runtime": runtime, "kind": kind, "label": KIND_LABELS[kind],
                  "time_share": by_kind[kind] / sum(seconds), "mult_add_share": mult_adds[kind]} for kind in KINDS]
    return rows


def _torch_layer_seconds(model: MobileNetV1, x: torch.Tensor, threads: int | None, seconds: float) -> list[float]:
    """PyTorch's layers at ``threads`` (None: the process's count), the count put back after
    (PyTorch has one for the whole process)."""
    with torch_threads_kept():
        if threads:
            torch.set_num_threads(threads)
        return _torch_program_layer_seconds(model, x, seconds)


def _torch_program_layer_seconds(model: MobileNetV1, x: torch.Tensor, seconds: float) -> list[float]:
    """What the torch cell runs: where ``mobilenet.optimize`` runs oneDNN Graph, its program's
    partitions by PyTorch's profiler; where it compiles with inductor, its program's calls timed
    one by one (``mobilenet.fused_ops``: the compiled program itself has no per-layer profile);
    else the folded channels_last model in eager mode, from forward hooks around every layer
    (TorchScript hides the layers)."""
    layers = network_cost(model.arch_cfg).layers
    if cpu_backend() == "onednn-graph":
        program = optimize(model, batch_size=len(x), backend="onednn-graph", log=lambda line: None).net
        return onednn_graph.layer_seconds(program, x, seconds)
    if fused_ops.available():
        timed = fused_ops.fused_ops(inference_copy(model), tuple(x.shape)).layer_seconds(x, seconds)
        return [timed[layer.name] for layer in layers]
    net = folded_copy(model).to(memory_format=torch.channels_last)
    modules = dict(net.named_modules())
    starts: dict[str, float] = {}
    totals = dict.fromkeys((layer.name for layer in layers), 0.0)
    for name in totals:
        modules[name].register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, time.perf_counter()))
        modules[name].register_forward_hook(
            lambda m, a, out, name=name: totals.__setitem__(name, totals[name] + time.perf_counter() - starts[name])
        )
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        totals.update(dict.fromkeys(totals, 0.0))
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            net(x)
    return list(totals.values())


def _ort_layer_seconds(model: MobileNetV1, x: torch.Tensor, threads: int | None, seconds: float) -> list[float]:
    """ONNX Runtime's profiler on the network's ONNX file, as bench writes and runs it."""
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        data = export_onnx(model, Path(tmp) / "model.onnx").read_bytes()
    return ort_runtime.profile_layers(data, x, threads, seconds)


def _openvino_layer_seconds(model: MobileNetV1, x: torch.Tensor, threads: int | None, seconds: float) -> list[float]:
    """OpenVINO's performance counters on the converted network, compiled as its predictor compiles it."""
    return ov_runtime.profile_layers(openvino_model(model), ov_runtime.compile_config("fp32", threads), x.numpy(),
                                     seconds)


def _executorch_layer_seconds(model: MobileNetV1, x: torch.Tensor, threads: int | None, seconds: float) -> list[float]:
    """XNNPACK's operator timings in ExecuTorch's ETDump, on the fp32 program bench times."""
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        path = Path(tmp) / "model.pte"
        pte.write(model, path)
        predictor = executorch_runtime.ExecuTorchPredictor(path, threads=threads)  # (its threads: the process's pool)
        program, image = path.read_bytes(), predictor.native_input(x[:predictor.batch])
    return executorch_runtime.profile_layers(program, image, seconds)


PROFILED: dict[str, LayerProfiler] = {"torch": _torch_layer_seconds, "onnxruntime": _ort_layer_seconds,
                                      "openvino": _openvino_layer_seconds, "executorch": _executorch_layer_seconds}

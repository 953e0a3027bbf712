"""Peers measured beside our runtimes: timm's MobileNet in eager PyTorch, ONNX Runtime and
OpenVINO with their default settings, and TensorFlow's published ``.tflite`` files under the
LiteRT interpreter."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.arch import ArchConfig
from mobilenet.deploy.bench.common import no_grad
from mobilenet.deploy.bench.report import BenchOptions, Cell
from mobilenet.deploy.formats.onnx import export_onnx
from mobilenet.deploy.openvino_core import openvino_core
from mobilenet.deploy.optional import available
from mobilenet.model import MobileNetV1
from mobilenet.predictor import as_numpy
from mobilenet.weights.timm import TIMM_MOBILENET_V1


def peer_cells(
    model: MobileNetV1, options: BenchOptions, inputs: dict[int, torch.Tensor], log: Callable[[str], None]
) -> list[tuple[Cell, Callable[[], Any] | None]]:
    cfg = model.arch_cfg
    out: list[tuple[Cell, Callable[[], Any] | None]] = []
    if "fp32" in options.precisions:
        cells = [Cell("timm eager fp32", "timm", "fp32", b, peer=True) for b in options.batch_sizes]
        if not available("timm"):
            _skip(cells, "timm is not installed")
            out += [(c, None) for c in cells]
        elif cfg.alpha != 1.0 or cfg.variant != "separable":
            _skip(cells, "timm's mobilenetv1_100 is the separable network at alpha 1.0 only")
            out += [(c, None) for c in cells]
        else:
            import timm  # noqa: PLC0415

            log("preparing timm mobilenetv1_100 (eager, random weights: speed does not depend on them)")
            net = timm.create_model(TIMM_MOBILENET_V1, pretrained=False, num_classes=cfg.num_classes).eval()
            for cell in cells:
                cell.description = f"timm {timm.__version__} {TIMM_MOBILENET_V1}, eager PyTorch, BatchNorm unfolded"
                x = inputs[cell.batch_size]
                out.append((cell, lambda x=x: no_grad(net, x)))
    if "fp32" in options.precisions:
        out += _default_settings_cells(model, options, inputs, log)
    for path_set, precision in _tflite_models(cfg, options.tflite_dir):
        name = f"tflite {precision}"
        for b in options.batch_sizes:
            cell = Cell(name, "tflite", precision, b, peer=True)
            if not path_set:
                _skip([cell], f"no TensorFlow .tflite model for {cfg.name} in {options.tflite_dir}")
                out.append((cell, None))
                continue
            try:
                fn, description = _tflite_runner(path_set, b, options.threads)
            except ImportError:
                _skip([cell], "the TFLite interpreter is not installed: pip install ai-edge-litert")
                out.append((cell, None))
                continue
            cell.description = description
            out.append((cell, fn))
    return out


def _default_settings_cells(
    model: MobileNetV1, options: BenchOptions, inputs: dict[int, torch.Tensor], log: Callable[[str], None]
) -> list[tuple[Cell, Callable[[], Any] | None]]:
    """The same fp32 ONNX export under ONNX Runtime and OpenVINO with every setting left at its
    default: what a user gets without this package's tuning. OpenVINO's default on a CPU with
    AVX512-BF16 is bf16 inference, so that cell is labelled with what it really runs."""
    wanted = [r for r in ("onnxruntime", "openvino") if r in options.runtimes and available(r)]
    if not wanted:
        return []
    log("preparing ONNX Runtime and OpenVINO with default settings")
    out: list[tuple[Cell, Callable[[], Any] | None]] = []
    with tempfile.TemporaryDirectory(prefix="mobilenet-defaults-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        if "onnxruntime" in wanted:
            import onnxruntime as ort  # noqa: PLC0415

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            for b in options.batch_sizes:
                cell = Cell("onnxruntime defaults", "onnxruntime defaults", "fp32", b, peer=True,
                            description="ONNX Runtime, our fp32 export, default session options")
                feed = {name: as_numpy(inputs[b])}
                out.append((cell, lambda feed=feed: session.run(None, feed)))
        if "openvino" in wanted:
            compiled = openvino_core().compile_model(str(path), "CPU")
            precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            request = compiled.create_infer_request()
            for b in options.batch_sizes:
                cell = Cell(f"openvino defaults ({precision})", "openvino defaults", precision, b, peer=True,
                            description=f"OpenVINO, our fp32 export, default settings (runs {precision} here)")
                feed = {0: as_numpy(inputs[b])}
                out.append((cell, lambda feed=feed: request.infer(feed)))
    return out


def _skip(cells: list[Cell], reason: str) -> None:
    for cell in cells:
        cell.status, cell.reason = "skipped", reason


def _tflite_models(cfg: ArchConfig, folder: Path | None) -> list[tuple[list[Path], str]]:
    """TF's published files for this configuration: float and uint8 (the 1.0-224 uint8 model
    comes as a body and a head, run one after the other)."""
    if folder is None or not folder.is_dir() or cfg.variant != "separable" or cfg.height != cfg.width:
        return []
    stem = f"mobilenet_v1_{float(cfg.alpha)}_{cfg.height}"
    found = []
    if (folder / f"{stem}.tflite").is_file():
        found.append(([folder / f"{stem}.tflite"], "fp32"))
    if (folder / f"{stem}_quant.tflite").is_file():
        found.append(([folder / f"{stem}_quant.tflite"], "uint8"))
    elif (folder / f"{stem}_quant_body.tflite").is_file():
        found.append(([folder / f"{stem}_quant_body.tflite", folder / f"{stem}_quant_head.tflite"], "uint8"))
    return found


def _tflite_runner(paths: list[Path], batch_size: int, threads: int | None) -> tuple[Callable[[], Any], str]:
    """The published graphs have a fixed batch of 1 (a Reshape to [1, 1001]), so a batch of B is B
    invocations: TFLite's own way to serve a batch."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interpreters = []
    for path in paths:
        interp = Interpreter(str(path), num_threads=threads or os.cpu_count() or 1)
        interp.allocate_tensors()
        interpreters.append(interp)
    first = interpreters[0].get_input_details()[0]
    x = np.zeros(first["shape"], dtype=first["dtype"])

    def run() -> Any:
        for _ in range(batch_size):
            value = x
            for interp in interpreters:
                interp.set_tensor(interp.get_input_details()[0]["index"], value)
                interp.invoke()
                value = interp.get_tensor(interp.get_output_details()[0]["index"])
        return value

    names = " + ".join(p.name for p in paths)
    calls = f", {batch_size} calls at batch 1" if batch_size > 1 else ""
    return run, f"TFLite interpreter (ai-edge-litert, XNNPACK) {names}, {threads or os.cpu_count()} threads{calls}"


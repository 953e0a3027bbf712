"""OpenVINO's probes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.latency.backends.base import Backend, Cell, Shaper, int8_calibration, onnx_bytes


class OpenVinoBackend(Backend):
    """Converted (and, for int8, quantized by NNCF) once, then reshaped to each size: OpenVINO
    compiles a reshaped model as it compiles the network's, for the shape it is given."""

    runtime = "openvino"
    path = "OpenVINO CPU, converted from the ONNX graph"
    fixed_pads = True  # as ONNX Runtime's: the network's file holds constant pads
    needs = ("onnx", "openvino")
    distributions = ("openvino", "nncf", "torch")
    calibrates = ("fp32", "bf16", "int8")

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.deploy.formats.openvino import convert_to_openvino  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
            path = Path(tmp) / "probe.onnx"
            path.write_bytes(onnx_bytes(module, shape))
            ov_model = convert_to_openvino(path).clone()
        if self.precision == "int8":
            from mobilenet.deploy.quantize import quantize_openvino  # noqa: PLC0415

            ov_model = quantize_openvino(ov_model, int8_calibration(shape), portable=None)

        def at(shape: tuple[int, ...]) -> Cell:
            sized = ov_model.clone()
            sized.reshape(list(shape))
            return self._compiled_call(sized, shape)

        return at

    def _compiled_call(self, ov_model: Any, shape: tuple[int, ...]) -> Cell:
        from mobilenet.deploy.openvino_core import openvino_core  # noqa: PLC0415
        from mobilenet.deploy.runtimes.ov import compile_config  # noqa: PLC0415

        # OpenVinoPredictor's configuration, not the predictor: its constructor also insists that the
        # convolutions run the precision asked for, which a probe without any (the pool, the classifier) fails.
        config = compile_config(self.precision, self.threads)
        request = openvino_core().compile_model(ov_model, "CPU", config).create_infer_request()
        x = np.random.rand(*shape).astype(np.float32)

        def call() -> object:
            request.infer({0: x}, share_inputs=True)
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return Cell(call)

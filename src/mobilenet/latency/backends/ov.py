"""OpenVINO's probes."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.latency.backends.base import (
    Backend,
    Cell,
    Shaper,
    int8_calibration,
    onnx_bytes,
)


class OpenVinoBackend(Backend):
    """Converted (and, for int8, quantized by NNCF) once, then reshaped to each size: OpenVINO
    compiles a reshaped model as it compiles the network's, for the shape it is given. Its
    performance counters time each layer of a network apart, so that the rooflines are fitted to
    layers as they run inside networks (its chains of twin layers fitted its networks with 35-79%
    error on the AMX Xeon, docs/latency.md §4)."""

    runtime = "openvino"
    path = "OpenVINO CPU, converted from the ONNX graph"
    fixed_pads = True  # as ONNX Runtime's: the network's file holds constant pads
    needs = ("onnx", "openvino")
    distributions = ("openvino", "nncf", "torch")
    calibrates = ("fp32", "bf16", "int8")

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.deploy.openvino_core import openvino_core  # noqa: PLC0415

        if self.precision == "int8":
            # NNCF takes seconds a probe (19 of 30 probes were left out of a first calibration
            # for want of time), so the quantized model is kept for the next calibration, as
            # LiteRT's and ExecuTorch's conversions are. It is quantized at batch 1, as NNCF feeds
            # its calibration one image at a time, and ``at`` reshapes it to the batch timed: one
            # kept model serves every batch size.
            one = (1, *shape[1:])
            xml, weights = unpack(self.kept("openvino-int8", module, one, self.distributions,
                                            lambda: pack(*_serialized(_quantized(module, one)))))
            ov_model = openvino_core().read_model(model=xml, weights=weights)
        else:
            ov_model = _converted(module, shape)

        def at(shape: tuple[int, ...]) -> Cell:
            sized = ov_model.clone()
            sized.reshape(list(shape))
            return self._compiled_call(sized, shape)

        return at

    def _compiled_call(self, ov_model: Any, shape: tuple[int, ...]) -> Cell:
        from mobilenet.deploy.openvino_core import openvino_core  # noqa: PLC0415
        from mobilenet.deploy.runtimes.ov import compile_config, profile_layers  # noqa: PLC0415

        # OpenVinoPredictor's configuration, not the predictor: its constructor also insists that the
        # convolutions run the precision asked for, which a probe without any (the pool, the classifier) fails.
        config = compile_config(self.precision, self.threads)
        request = openvino_core().compile_model(ov_model, "CPU", config).create_infer_request()
        x = np.random.rand(*shape).astype(np.float32)

        def call() -> object:
            request.infer({0: x}, share_inputs=True)
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return Cell(call, profile=lambda seconds: profile_layers(ov_model, config, x, seconds))


def _converted(module: nn.Module, shape: tuple[int, ...]) -> Any:
    from mobilenet.deploy.formats.openvino import convert_to_openvino  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
        path = Path(tmp) / "probe.onnx"
        path.write_bytes(onnx_bytes(module, shape))
        return convert_to_openvino(path).clone()


def _quantized(module: nn.Module, shape: tuple[int, ...]) -> Any:
    from mobilenet.deploy.quantize import quantize_openvino  # noqa: PLC0415

    return quantize_openvino(_converted(module, shape), int8_calibration(shape), portable=None)


def _serialized(ov_model: Any) -> tuple[bytes, bytes]:
    """The model's .xml and .bin, at the precision it holds (no compression to fp16)."""
    from mobilenet.deploy.optional import require  # noqa: PLC0415

    ov = require("openvino")
    with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
        xml = Path(tmp) / "probe.xml"
        ov.save_model(ov_model, str(xml), compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def pack(xml: bytes, weights: bytes) -> bytes:
    """An OpenVINO model's two files as one: the .xml's length (8 bytes), the .xml, the .bin."""
    return struct.pack("<Q", len(xml)) + xml + weights


def unpack(data: bytes) -> tuple[bytes, bytes]:
    """``pack``'s two files back. (``kept_build`` has checked the digest: the bytes are whole.)"""
    (length,) = struct.unpack_from("<Q", data)
    return data[8:8 + length], data[8 + length:]

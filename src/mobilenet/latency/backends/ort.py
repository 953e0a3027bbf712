"""ONNX Runtime's probes; its profiler times each layer of a network apart (``runtimes.ort.profile_layers``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn

from mobilenet.latency.backends.base import (
    Backend,
    Cell,
    Shaper,
    int8_calibration,
    onnx_bytes,
)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime's predictor on a static ONNX graph; its profiler times each layer apart."""

    runtime = "onnxruntime"
    path = "ONNX Runtime CPU, the network's static ONNX graph"
    needs = ("onnx", "onnxruntime")
    distributions = ("onnxruntime", "torch")
    calibrates = ("fp32", "int8")
    # The network's ONNX file (the dynamo exporter, static height and width) holds its pads as
    # constants, which ONNX Runtime folds into the convs; a pad computed from the input's shape
    # stays a separate kernel (measured: 15-20% of a misaligned network's time).
    fixed_pads = True

    @staticmethod
    def pools_of_their_own(threads: int | None) -> bool:
        """Every ONNX Runtime session has a pool of its own; at more than one thread, dozens of
        probes' pools slowed each other (docs/latency.md §0): the calibration's networks fitted
        within 19-28% RMSPE at 2 threads on a 2-vCPU Zen 5, within 4-7% on one shared pool, and
        ``choose``'s candidates ran up to 2.3x their time on one pool."""
        return threads != 1

    @staticmethod
    def share_one_pool(threads: int | None) -> bool:
        from mobilenet.deploy.runtimes.ort import share_one_pool  # noqa: PLC0415

        return share_one_pool(threads)

    @property
    def channel_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """At fp32 (measured on the Zen 4, docs/latency.md §1) the depthwise convs want multiples
        of 4 channels, the dense ones MLAS's NCHWc block (16 with AVX-512, 8 with AVX2). At int8
        the convs are QLinearConvs on NHWC, with blocks of their own (Zen 5, chains of four at
        28×28, docs/latency.md §4, 2026-12-05): a pointwise conv runs twice as long off
        multiples of 4, a depthwise one 2.2× as long on multiples of 8 that are not of 16, and
        longer still on the rest."""
        from mobilenet.cpu import cpu_info  # noqa: PLC0415

        if self.precision == "int8":
            return {"depthwise": 16, "depthwise_s2": 16, "pointwise": 4, "conv": 4, "stem": 4}
        dense = cpu_info().fp32_lanes
        return {"depthwise": 4, "depthwise_s2": 4, "pointwise": dense, "conv": dense, "stem": dense}

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.deploy.runtimes.ort import OnnxRuntimePredictor, profile_layers  # noqa: PLC0415

        def at(shape: tuple[int, ...]) -> Cell:
            data = onnx_bytes(module, shape)
            if self.precision == "int8":
                data = self._quantized(data, shape)
            predictor = OnnxRuntimePredictor(data, None, self.threads)
            x = torch.rand(shape)
            return Cell(lambda: predictor(x), profile=lambda seconds: profile_layers(data, x, self.threads, seconds))

        return at

    @staticmethod
    def _quantized(data: bytes, shape: tuple[int, ...]) -> bytes:
        """The probe quantized as the writer quantizes a network, from its graph folded first.

        Folded, because TorchScript's exporter computes a 'SAME' pad's widths in ops of their own:
        the quantizer cannot see through them, so each pad stayed a float op between a
        DequantizeLinear and a QuantizeLinear, where the writer's files (the dynamo exporter's
        constant pads) have it folded into the conv. The calibration's int8 networks ran 10-22%
        slower than the same networks written as users write them (Zen 5, docs/latency.md §4,
        2026-12-05); folded, they run the same QLinearConvs."""
        import onnxruntime as ort  # noqa: PLC0415

        from mobilenet.deploy.quantize import quantize_onnx  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
            fp32, int8 = Path(tmp) / "probe.onnx", Path(tmp) / "probe.int8.onnx"
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # (portable folds only)
            options.optimized_model_filepath = str(fp32)
            options.log_severity_level = 3
            ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            quantize_onnx(fp32, int8, int8_calibration(shape), portable=None)
            return int8.read_bytes()


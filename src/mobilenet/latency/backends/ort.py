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

# The columns MLAS packs a matrix product's right-hand side in (its packing; timed on AVX-512 only).
MLAS_POSITION_BLOCK = 16


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

    @staticmethod
    def on_one_pool(threads: int | None) -> bool:
        from mobilenet.deploy.runtimes.ort import on_one_pool  # noqa: PLC0415

        return on_one_pool(threads)

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

    @property
    def position_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """At fp32 a dense conv off the NCHWc block runs as MLAS's NCHW convolution: a matrix
        product over each image's output positions, whose columns MLAS packs in blocks of 16 and
        computes whole. Measured on the Zen 4 (AVX-512), chains of four 1x1 convs on 563 channels,
        1 thread (docs/latency.md §4, 2026-12-07): 20.5 ps a mult-add at 8x8, 26.7-28.3 at 5x5
        to 7x7 and 24.5 at 9x9, and 20.9-22.7 at every size from 4x4 to 16x16 once the
        positions are counted in whole 16s; on 576 channels (NCHWc) 19.8-22.2 as counted. A 3x3
        conv off the block (150 channels) likewise. Not the depthwise conv off its block, which
        loops over its channels (``Roofline.group_s``), nor int8's QLinearConvs."""
        if self.precision == "int8":
            return {}
        return dict.fromkeys(("pointwise_unblocked", "conv_unblocked", "stem_unblocked"), MLAS_POSITION_BLOCK)

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


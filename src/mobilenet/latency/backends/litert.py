"""LiteRT's probes: converted once, kept, resized to each size."""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import nn

from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes.inputs import NativeInput
from mobilenet.latency.backends.base import (
    Backend,
    Cell,
    ChannelsLastIO,
    Shaper,
    int8_calibration,
    nhwc_shape,
    nhwc_tensor,
    xnnpack_channel_blocks,
)


class LiteRtBackend(Backend):
    """litert-torch's conversion, run by the LiteRT interpreter (XNNPACK) at each size.
    fp16 files dequantize their weights at load and run the fp32 kernels, so fp16 is calibrated
    on fp32 probes. int8 probes are quantized as the .tflite writer quantizes a network
    (``litert.full_integer``: int8 weights and activations, the classifier dynamic-range), int8
    in and out of a chain, as a layer's neighbours hand it over; a whole network takes uint8
    pixels and gives float logits, as the writer's files do."""

    runtime = "litert"
    path = "LiteRT interpreter (XNNPACK), litert-torch's conversion"
    fixed_batch = fixed_pads = True
    needs = ("litert_torch", "ai_edge_litert.interpreter")
    distributions = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer", "torch")
    calibrates = ("fp32", "fp16", "int8")

    @property
    def channel_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """XNNPACK's fp32 blocks (fp16 runs the fp32 kernels) for the pointwise convs: without a
        profile of its networks, its depthwise probes (one on whole 16s) could not fit the
        depthwise twins. Its int8 kernels were not measured."""
        return {} if self.precision == "int8" else xnnpack_channel_blocks()

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        litert_torch = require("litert_torch")
        interpreter_class = require("ai_edge_litert.interpreter").Interpreter
        os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

        def convert() -> bytes:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bytes(litert_torch.convert(ChannelsLastIO(module).eval(), (torch.zeros(nhwc_shape(shape)),))
                             .model_content())

        # fp32 is what converts slowly, and what fp16 and int8 start from: one kept file for the three.
        data = self.kept("litert-fp32", module, shape, ("litert-torch", "torch"), convert)
        if self.precision == "int8":
            data = self._quantized(data, shape, whole_network=not isinstance(module, nn.Sequential))
        threads = self.threads or os.cpu_count() or 1

        def at(shape: tuple[int, ...]) -> Cell:
            interpreter = interpreter_class(model_content=data, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, list(nhwc_shape(shape)))
            interpreter.allocate_tensors()
            given = interpreter.get_input_details()[0]
            scale, zero = given["quantization"]
            dtype = np.dtype(given["dtype"])
            if len(shape) == 4:  # the predictor's own conversion of a float NCHW image (NativeInput)
                native = NativeInput(nhwc_shape(shape), "nhwc", dtype.name, float(scale), int(zero))
                x = np.random.rand(*shape).astype(np.float32)
                feed = lambda: interpreter.set_tensor(index, native.convert(x))  # noqa: E731
            else:  # (the classifier's features, handed over by the pool as they are)
                features = (np.random.rand(*shape).astype(np.float32) if dtype == np.float32 else
                            np.random.randint(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, shape).astype(dtype))
                feed = lambda: interpreter.set_tensor(index, features)  # noqa: E731
            feed()
            return Cell(interpreter.invoke, feed)

        return at

    @staticmethod
    def _quantized(data: bytes, shape: tuple[int, ...], *, whole_network: bool) -> bytes:
        """int8 as the writer's files: an image (3 channels) comes in as uint8 pixels, through the
        QUANTIZE the writer puts in front; a network's logits go out as float32."""
        require("ai_edge_quantizer")
        from mobilenet.deploy.formats.litert import full_integer  # noqa: PLC0415
        from mobilenet.deploy.formats.tflite_flatbuffer import set_interface  # noqa: PLC0415

        data = full_integer(data, nhwc_tensor(int8_calibration(shape)).numpy())
        takes_image = len(shape) == 4 and shape[1] == 3
        if not (takes_image or whole_network):
            return data  # a chain: int8 in and out, as quantized
        return set_interface(data, "uint8" if takes_image else "int8", "float32" if whole_network else None)[0]

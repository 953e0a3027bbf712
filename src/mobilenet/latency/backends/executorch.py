"""ExecuTorch's probes: lowered to XNNPACK once with a dynamic size, kept; its networks' layers
timed apart by XNNPACK's own operator timings, which ExecuTorch's ETDump records."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes.executorch import profile_layers
from mobilenet.latency.backends.base import (
    MAX_SIDE,
    Backend,
    Cell,
    ChannelsLastIO,
    Shaper,
    int8_calibration,
    nhwc_shape,
    nhwc_tensor,
    xnnpack_channel_blocks,
)


class ExecuTorchBackend(Backend):
    """torch.export with a dynamic height and width, lowered to XNNPACK as the .pte writer does;
    int8 probes quantized as the writer quantizes a network (``executorch.xnnpack_int8``). Each
    layer of a network is timed apart by XNNPACK's operator timings
    (``runtimes.executorch.profile_layers``), so that the rooflines are fitted to layers as they
    run inside networks, as ONNX Runtime's and OpenVINO's are: fitted to its chains of twin
    layers instead, whose calls spend a third to a half of their time handing maps over, its
    depthwise rooflines gave 1.0-224's depthwise layers a quarter to a third of the time its
    profile shows (docs/latency.md §4, 2026-12-05)."""

    runtime = "executorch"
    path = "ExecuTorch, lowered to XNNPACK"
    fixed_batch = fixed_pads = True
    needs = ("executorch.runtime",)
    distributions = ("executorch", "torch")
    calibrates = ("fp32", "int8")
    # Its calls hand a byte over 2.3x as slowly as LiteRT's through the same XNNPACK conv (135
    # against 58 µs per MB of input and output, Zen 5), and fitted that way its held-out fp32
    # networks came within 5.9% RMSPE, from 18.5% (docs/latency.md §4, 2026-12-04), before its
    # networks were profiled; now it is taken off the probes of the kernels no network profiles
    # (Table 4's full conv) and off each network's call. Its int8 calibration, 4.6% without it on
    # the Zen 5, has not been judged with it.
    handover_precisions = ("fp32",)

    @property
    def channel_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """XNNPACK's fp32 blocks, the depthwise ones too (fitted to its networks' profiled
        layers); its int8 kernels were not measured."""
        return xnnpack_channel_blocks(depthwise=True) if self.precision == "fp32" else {}

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        runtime = require("executorch.runtime").Runtime.get()
        if self.threads:
            require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(self.threads)
        largest = largest_side or MAX_SIDE
        buffer = self.kept(f"executorch-{self.precision}", module, (*shape, largest),
                           ("executorch", "torchao", "torch"), lambda: self._lowered(module, shape, largest))

        def at(shape: tuple[int, ...]) -> Cell:
            # The method points into its program, and the program into ``buffer``, without holding
            # them: the cell holds all three (once the probe's other cells were collected, a
            # method alone ran freed memory and crashed the calibration).
            program = runtime.load_program(buffer)
            method = program.load_method("forward")
            x = torch.rand(shape)

            def feed() -> torch.Tensor:  # ExecuTorchPredictor's: NCHW -> NHWC
                return nhwc_tensor(x)

            image = feed()

            def run() -> object:
                _ = buffer, program  # named, so that the closure keeps them as long as the cell
                return method.execute([image])

            return Cell(run, feed, profile=lambda seconds: profile_layers(buffer, image, seconds))

        return at

    def _lowered(self, module: nn.Module, shape: tuple[int, ...], largest_side: int) -> bytes:
        exir = require("executorch.exir")
        partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner")
        example = torch.zeros(nhwc_shape(shape))
        dynamic = None
        if len(shape) == 4:
            # Up to the largest size the probe runs at: the program plans its activations' memory
            # for it (a 1000-channel chain planned for 512x512 took gigabytes a cell).
            side = torch.export.Dim("side", min=2, max=max(largest_side, shape[2]))
            strided = any(isinstance(m, nn.Conv2d) and m.stride[0] > 1 for m in module.modules())
            if strided:  # export cannot prove a quantized strided conv's guards for odd sizes
                half = max(largest_side, shape[2]) // 2  # (a strided probe's sizes are even)
                side = 2 * torch.export.Dim("half_side", min=1, max=half)
            dynamic = {"x": {1: side, 2: side}}
        program: nn.Module = ChannelsLastIO(module).eval()
        if self.precision == "int8":
            from mobilenet.deploy.formats.executorch import xnnpack_int8  # noqa: PLC0415

            calibration = int8_calibration(shape)
            program = xnnpack_int8(program, example, dynamic, [nhwc_tensor(calibration)])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(program, (example,), dynamic_shapes=dynamic)
            lowered = exir.to_edge_transform_and_lower(exported, partitioner=[partitioner.XnnpackPartitioner()])
            return bytes(lowered.to_executorch().buffer)


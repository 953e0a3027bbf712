"""ExecuTorch ``.pte`` programs, lowered to the XNNPACK delegate, fp32 or int8.

* **fp32**: ``torch.export`` of the folded model with constant TF 'SAME' pads
  (``prepare.fixed_padding_copy``), lowered with ``to_edge_transform_and_lower`` and the XNNPACK
  partitioner: the whole network is one XNNPACK subgraph.
* **int8**: PT2E static quantization with the XNNPACK quantizer: int8 weights per output channel
  (symmetric), int8 activations per tensor, calibrated on ``calibration`` with min/max observers
  (the quantizer's default histogram observers took 520 s at batch 1 for 300 images at 1.0-224
  and were no more accurate here). Two things are changed from the quantizer's defaults, both
  measured on TF-slim 1.0-224 (1,000 evaluation images):

  - ReLU6. The quantizer fuses a convolution with a following ReLU but not with ReLU6
    (``hardtanh``), which instead shares the convolution's output quantization: its range would be
    the pre-activation one (negative values included), wasting most of the 256 levels. The
    convolutions followed by ReLU6 are observed through the clamp, so their range is ReLU6's.
    Without this: 87.7% top-1 agreement with fp32; with it: 97.2%.
  - The classifier is dynamically quantized (int8 weights, float logits out): 8-bit logits tie the
    top two classes on a few percent of the images.

  The weights are first rounded to the int8 grid with bias correction
  (``prepare.int8_rounded_copy``), which the quantizer then reproduces exactly.

Input: NCHW (``layout="nchw"``, the default: what ExecuTorch programs from PyTorch take, as
ExecuTorch's examples feed ``(1, 3, 224, 224)`` and Android's ``TensorImageUtils.bitmapToFloat32Tensor``
builds ``[1, 3, H, W]``) or NHWC on request, always float32 (the quantization runs inside the
program; ``io_dtype`` other than float32 is refused). Either way the whole program is one XNNPACK
call with nothing outside it, which ``execution_problem`` holds every export to (NHWC's permute is
made a contiguous copy for that: ``mobile.InputLayout``). The labels,
normalisation and architecture travel in the program as a constant method ``mobilenet_metadata``
(UTF-8 JSON bytes as a uint8 tensor); ``read_metadata(path)`` returns it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mobilenet.deploy.execution import Execution
from mobilenet.deploy.formats.mobile import BATCH, InputLayout, check_layout, example_input, model_description
from mobilenet.deploy.optional import package_version, require
from mobilenet.errors import InputError, MobileNetError
from mobilenet.model import MobileNetV1
from mobilenet.prepare import fixed_padding_copy, int8_rounded_copy

NAME = "executorch"
SUFFIXES = (".pte",)
PRECISIONS = ("fp32", "int8")
RUNTIME = "executorch"
DEFAULT_LAYOUT = "nchw"
METADATA_METHOD = "mobilenet_metadata"
CALIBRATION_BATCH = 50


class ExecuTorchConversionError(MobileNetError, RuntimeError):
    """torch.export, the quantizer or the XNNPACK lowering failed."""


def write(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    layout: str = DEFAULT_LAYOUT,
    io_dtype: str = "float32",
) -> list[Path]:
    """Write ``model`` as one ``.pte`` program at ``path`` (unverified: ``mobilenet.deploy.export``
    runs it in ExecuTorch's runtime against PyTorch before keeping it). int8 needs
    ``calibration`` (NCHW float32, preprocessed real images)."""
    if precision not in PRECISIONS:
        raise InputError(f".pte export offers {', '.join(PRECISIONS)}, not {precision!r}")
    check_layout(layout)
    if io_dtype != "float32":
        raise InputError(
            f"an ExecuTorch program takes float32 input (its int8 quantization runs inside); got io_dtype={io_dtype!r}"
        )
    if precision == "int8" and calibration is None:
        raise InputError(
            "int8 .pte export needs calibration images: a few hundred real images (never the evaluation ones)"
        )
    require("executorch")
    path = Path(path)
    if precision == "int8":
        assert calibration is not None
        prepared: nn.Module = _quantized(int8_rounded_copy(model, calibration), model, layout, calibration)
    else:
        prepared = InputLayout(fixed_padding_copy(model), layout, contiguous=True)
    program = _lower(prepared, example_input(model, layout, BATCH), _metadata(model, precision, layout))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(program)
    return [path]


def execution_problem(execution: Execution, **options: Any) -> str | None:
    """What keeps a written program from its promise (None: nothing): every op in XNNPACK."""
    del options
    if execution.outside:
        return f"{len(execution.outside)} op(s) outside XNNPACK ({', '.join(execution.outside)})"
    return None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``mobilenet_metadata`` a program carries (None if it has none)."""
    runtime = require("executorch.runtime").Runtime.get()
    program = runtime.load_program(Path(path))
    if METADATA_METHOD not in program.method_names:
        return None
    raw = program.load_method(METADATA_METHOD).execute([])[0]
    return json.loads(bytes(raw.to(torch.uint8).tolist()).decode("utf-8"))


# ---------------------------------------------------------------------------------------------


def _lower(module: nn.Module, example: torch.Tensor, metadata: dict[str, Any]) -> bytes:
    exir = require("executorch.exir")
    partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    blob = torch.tensor(list(json.dumps(metadata, separators=(",", ":")).encode("utf-8")), dtype=torch.uint8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not isinstance(module, torch.fx.GraphModule):  # a quantized graph is in eval form already
                module = module.eval()
            exported = torch.export.export(module, (example,))
            edge = exir.to_edge_transform_and_lower(
                exported, partitioner=[partitioner.XnnpackPartitioner()], constant_methods={METADATA_METHOD: blob}
            )
            return bytes(edge.to_executorch().buffer)
    except Exception as err:  # export and lowering raise many kinds
        raise ExecuTorchConversionError(f"ExecuTorch could not lower the model: {err}") from err


def _quantized(rounded: MobileNetV1, model: MobileNetV1, layout: str, calibration: torch.Tensor) -> nn.Module:
    """PT2E int8 of ``rounded`` for XNNPACK (see the module docstring), calibrated in batches."""
    module = InputLayout(rounded, layout, contiguous=True)
    batches = (part.permute(0, 2, 3, 1) if layout == "nhwc" else part
               for part in calibration.float().split(CALIBRATION_BATCH))
    batch = torch.export.Dim("batch", min=1, max=4096)
    return xnnpack_int8(module, example_input(model, layout, 2), {"x": {0: batch}}, batches)


def xnnpack_int8(module: nn.Module, example: torch.Tensor, dynamic_shapes: dict[str, Any] | None,
                 calibration: Iterable[torch.Tensor]) -> torch.fx.GraphModule:
    """``module`` (one input, ``x``) quantized for XNNPACK as the .pte writer quantizes a network:
    int8 weights per output channel, int8 activations per tensor observed by min/max (after the
    ReLU6 where one follows a conv), ``nn.Linear`` dynamically quantized; ``example`` and
    ``dynamic_shapes`` as ``torch.export.export`` takes them, ``calibration`` the inputs to observe."""
    require("torchao")
    from executorch.backends.xnnpack.quantizer import xnnpack_quantizer as xq  # noqa: PLC0415
    from torchao.quantization.pt2e.observer import MinMaxObserver  # noqa: PLC0415
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(module.eval(), (example,), dynamic_shapes=dynamic_shapes).module()
        base = xq.get_symmetric_quantization_config(is_per_channel=True)
        min_max = MinMaxObserver.with_args(eps=2**-12)
        config = dataclasses.replace(
            base,
            input_activation=dataclasses.replace(base.input_activation, observer_or_fake_quant_ctr=min_max),
            output_activation=dataclasses.replace(base.output_activation, observer_or_fake_quant_ctr=min_max),
        )
        quantizer = _relu6_aware_quantizer(xq.XNNPACKQuantizer)().set_global(config)
        quantizer.set_module_type(nn.Linear, xq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for x in calibration:
                prepared(x)
        return convert_pt2e(prepared)


def _relu6_aware_quantizer(base: type) -> type:
    """The XNNPACK quantizer, with every conv -> ReLU6 pair observed after the clamp."""
    from torchao.quantization.pt2e.observer import MinMaxObserver  # noqa: PLC0415
    from torchao.quantization.pt2e.quantizer import QuantizationSpec  # noqa: PLC0415

    class ClampedMinMaxObserver(MinMaxObserver):
        """Min/max of ``clamp(x, low, high)``: the range a fused ReLU6 leaves."""

        def __init__(self, low: float = 0.0, high: float = 6.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.low = low
            self.high = high

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            super().forward(x.detach().clamp(self.low, self.high))
            return x

    hardtanh = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)

    class ReLU6AwareQuantizer(base):  # type: ignore[misc, valid-type]
        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            graph = super().annotate(graph)
            for node in graph.graph.nodes:
                if node.op != "call_function" or node.target not in hardtanh:
                    continue
                producer = node.args[0]
                annotation = getattr(producer, "meta", {}).get("quantization_annotation")
                if annotation is None or not isinstance(annotation.output_qspec, QuantizationSpec):
                    continue
                low = float(node.args[1]) if len(node.args) > 1 else -1.0
                high = float(node.args[2]) if len(node.args) > 2 else 1.0
                observer = ClampedMinMaxObserver.with_args(low=low, high=high, eps=2**-12)
                spec = annotation.output_qspec
                annotation.output_qspec = dataclasses.replace(spec, observer_or_fake_quant_ctr=observer)
            return graph

    return ReLU6AwareQuantizer


def _metadata(model: MobileNetV1, precision: str, layout: str) -> dict[str, Any]:
    from mobilenet.version import __version__  # noqa: PLC0415

    return {
        "format": "mobilenet-executorch-metadata",
        "version": 1,
        "producer": f"mobilenet {__version__}, executorch {package_version('executorch') or 'unknown'}",
        **model_description(model, precision, layout),
        "input": {"dtype": "float32"},
        "output": {"dtype": "float32", "meaning": "logits"},
    }



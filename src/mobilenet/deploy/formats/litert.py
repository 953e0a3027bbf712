"""LiteRT (TensorFlow Lite) ``.tflite`` files through litert-torch, fp32, fp16 or full-integer int8.

What is written, per precision (op counts for the separable network: ``arch.layers(model.arch_cfg)``):

* **fp32**: litert-torch converts the folded model with constant TF 'SAME' pads
  (``prepare.fixed_padding_copy``); the pads fold into the convolutions, leaving CONV_2D (stem and
  pointwise), DEPTHWISE_CONV_2D, one MEAN and one FULLY_CONNECTED, each conv with ReLU6 fused.
* **fp16**: the fp32 graph with float16 weights, each dequantized by a DEQUANTIZE op (which
  XNNPACK folds at load time, then computes in fp32): half the size, same speed, logits within
  about 1e-3 of the spread.
* **int8**: full-integer post-training quantization with ai-edge-quantizer: int8 weights per
  output channel (symmetric), int8 activations per tensor (asymmetric), min/max calibrated on
  ``calibration``; the weights are first rounded with bias correction
  (``prepare.int8_rounded_copy``). The classifier is a dynamic-range FULLY_CONNECTED (int8
  weights, float logits out): 8-bit logits tie the top two classes on 7.8% of the evaluation
  images (TF-slim 1.0-224), which cost 2.3 points of top-1, for a layer of 0.2% of the work.
  litert-torch's own PT2E path was tried and measured worse (11% top-1 on 1.0-224, eight extra
  TRANSPOSE ops), so it is not used.

Input: NHWC (``layout="nhwc"``, what Android and iOS callers hold) or NCHW. An int8 file's input
dtype is ``io_dtype``: ``uint8`` takes the pixel values themselves, as TF's own quantized MobileNets
do (scale 1 / (255 std), zero point 255 mean, so q = pixel where the normalisation is one mean and
one std for all channels: TF's (x - 127.5) / 127.5 gives scale 1/127.5, zero point 128, half a level
from exact); ``int8`` is the same shifted by 128; ``float32`` takes the normalised image and quantizes
inside. The output is float32 logits unless ``output_dtype`` asks for quantized logits (see above
for what that costs).

What travels in the file: a TFLite metadata entry named ``mobilenet`` (``METADATA_NAME``) holding
JSON: the architecture settings, class names, the preprocessing (resize, crop, mean, std), the
layout, the input's dtype and quantization. ``read_metadata(path)`` returns it; any FlatBuffer
reader finds it under ``Model.metadata`` (interpreters ignore it).

The writer runs no verification: ``mobilenet.deploy.export`` loads the file in the LiteRT
interpreter and compares it with PyTorch before keeping it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.deploy.formats.mobile import (
    InputLayout,
    check_layout,
    example_input,
    model_description,
    package_version,
)
from mobilenet.deploy.optional import require
from mobilenet.deploy.prepare import fixed_padding_copy, int8_rounded_copy
from mobilenet.errors import InputError, MobileNetError
from mobilenet.model import MobileNetV1

NAME = "tflite"
SUFFIXES = (".tflite",)
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIME = "litert"
IO_DTYPES = ("uint8", "int8", "float32")
METADATA_NAME = "mobilenet"
METADATA_VERSION = 1
# TFLite schema enums (schema.fbs) used when editing the graph's interface.
_FLOAT32, _UINT8, _INT8 = 0, 3, 9


class LiteRtConversionError(MobileNetError, RuntimeError):
    """litert-torch or ai-edge-quantizer failed, or wrote a graph this writer does not expect."""


def write(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    layout: str = "nhwc",
    io_dtype: str = "uint8",
    output_dtype: str = "float32",
) -> list[Path]:
    """Write ``model`` as one ``.tflite`` file at ``path`` (unverified; see the module docstring).

    ``precision``: fp32 | fp16 | int8 (int8 needs ``calibration``, an NCHW float32 batch of real
    images, preprocessed as for the model). ``layout``: nhwc | nchw input. ``io_dtype``: the int8
    file's input dtype, uint8 | int8 | float32 (fp32 and fp16 files take float32 whatever it says).
    ``output_dtype``: float32 logits (default) or the int8 file's quantized logits, int8 | uint8.
    """
    _check_options(model, precision, calibration, layout, io_dtype, output_dtype)
    path = Path(path)
    quantizing = precision == "int8"
    prepared = int8_rounded_copy(model, calibration) if quantizing else fixed_padding_copy(model)  # type: ignore[arg-type]
    data = _convert(InputLayout(prepared, layout), example_input(model, layout))
    input_quant = None
    if precision == "fp16":
        data = _float16_weights(data)
    elif quantizing:
        assert calibration is not None
        data = _full_integer(data, _to_layout(calibration, layout), _pixel_range(model))
        data, input_quant = _set_interface(data, io_dtype, output_dtype)
    output = output_dtype if quantizing else "float32"
    data = _with_metadata(data, _metadata(model, precision, layout, input_quant, output))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return [path]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``mobilenet`` metadata of a ``.tflite`` file (None if it has none, as TF's own files)."""
    data = Path(path).read_bytes()
    schema = require("ai_edge_litert.schema_py_generated")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise InputError(f"{Path(path).name}: not a TFLite file (no 'TFL3' identifier)")
    model = schema.Model.GetRootAsModel(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if (entry.Name() or b"").decode() != METADATA_NAME:
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset() > 1:
            raw = data[buffer.Offset() : buffer.Offset() + buffer.Size()]
        else:
            raw = buffer.DataAsNumpy().tobytes()
        return json.loads(raw.decode("utf-8"))
    return None


# ---------------------------------------------------------------------------------------------


def _check_options(
    model: MobileNetV1, precision: str, calibration: torch.Tensor | None, layout: str, io_dtype: str,
    output_dtype: str,
) -> None:
    if precision not in PRECISIONS:
        raise InputError(f".tflite export offers {', '.join(PRECISIONS)}, not {precision!r}")
    check_layout(layout)
    if io_dtype not in IO_DTYPES:
        raise InputError(f"io_dtype must be one of {IO_DTYPES}, got {io_dtype!r}")
    if output_dtype not in IO_DTYPES:
        raise InputError(f"output_dtype must be one of {IO_DTYPES}, got {output_dtype!r}")
    if precision == "int8" and calibration is None:
        raise InputError(
            "int8 .tflite export needs calibration images: a few hundred real images from the domain "
            "you will run on (never the ones you evaluate on)"
        )
    require("litert_torch")
    if precision != "fp32":
        require("ai_edge_quantizer")


def _to_layout(x: torch.Tensor, layout: str) -> np.ndarray:
    return np.ascontiguousarray((x.permute(0, 2, 3, 1) if layout == "nhwc" else x).float().numpy())


@contextlib.contextmanager
def _quiet_progress() -> Any:
    """litert-torch prints a progress tree on every conversion unless told not to."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _convert(module: nn.Module, example: torch.Tensor) -> bytes:
    litert_torch = require("litert_torch")
    with _quiet_progress(), torch.no_grad():
        try:
            edge = litert_torch.convert(module.eval(), (example,))
            return bytes(edge.model_content())
        except Exception as err:  # the converter raises anything from its MLIR passes
            raise LiteRtConversionError(f"litert-torch could not convert the model: {err}") from err


def _float16_weights(data: bytes) -> bytes:
    """fp32 graph -> float16 weights dequantized in the graph (ai-edge-quantizer's float casting)."""
    require("ai_edge_quantizer")
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager  # noqa: PLC0415

    manager = recipe_manager.RecipeManager()
    config = qtyping.OpQuantizationConfig(
        weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
        compute_precision=qtyping.ComputePrecision.FLOAT,
        explicit_dequantize=True,
    )
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        manager.add_quantization_config(
            ".*", qtyping.TFLOperationName[op], config, algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING
        )
    casting = quantizer.Quantizer(bytearray(data), manager.get_quantization_recipe())
    return bytes(casting.quantize(enable_progress_report=False).quantized_model)


def _pixel_range(model: MobileNetV1) -> tuple[float, float] | None:
    """(min, max) of the normalised input that makes uint8 q equal the pixel value, where the
    model's preprocessing uses one mean and one std for every channel; None otherwise."""
    pre = getattr(getattr(model, "pretrained_cfg", None), "preprocess", None)
    if pre is None:
        mean, std = (0.5,), (0.5,)  # the project's default: TF's (x - 127.5) / 127.5
    else:
        mean, std = tuple(pre.mean), tuple(pre.std)
    if len(set(mean)) != 1 or len(set(std)) != 1:
        return None
    scale = 1.0 / (255.0 * std[0])
    zero = round(255.0 * mean[0])
    return (0 - zero) * scale, (255 - zero) * scale


def _full_integer(data: bytes, calibration: np.ndarray, input_range: tuple[float, float] | None) -> bytes:
    """int8 weights and activations, the classifier dynamic-range (float logits out)."""
    require("ai_edge_quantizer")
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager  # noqa: PLC0415

    manager = recipe_manager.RecipeManager()
    manager.add_static_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 8, 8)
    manager.add_dynamic_config(".*", qtyping.TFLOperationName.FULLY_CONNECTED, 8)
    aeq = quantizer.Quantizer(bytearray(data), manager.get_quantization_recipe())
    signature, input_name = _signature_input(data)
    samples = [{input_name: calibration[i : i + 1]} for i in range(len(calibration))]
    with _no_progress_bars():
        ranges = aeq.calibrate({signature: samples}, num_threads=max(1, min(4, os.cpu_count() or 1)))
    if input_range is not None:
        tensor = _graph_input_tensor_name(data)
        if tensor in ranges:
            low, high = input_range
            shape = np.shape(ranges[tensor]["min"])
            ranges[tensor] = {"min": np.full(shape, low, np.float32), "max": np.full(shape, high, np.float32)}
    with _no_progress_bars():
        result = aeq.quantize(ranges, enable_progress_report=False)
    return bytes(result.quantized_model)


@contextlib.contextmanager
def _no_progress_bars() -> Any:
    """ai-edge-quantizer draws a tqdm bar over every calibration sample, on stderr, with no switch
    to turn it off; errors still raise."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _signature_input(data: bytes) -> tuple[str, str]:
    interpreter = require("ai_edge_litert.interpreter").Interpreter(model_content=data)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise LiteRtConversionError(f"expected one signature in the converted model, found {list(signatures)}")
    name, spec = next(iter(signatures.items()))
    return name, spec["inputs"][0]


def _graph_input_tensor_name(data: bytes) -> str:
    interpreter = require("ai_edge_litert.interpreter").Interpreter(model_content=data)
    return interpreter.get_input_details()[0]["name"]


# --- FlatBuffer editing (the TFLite schema's object API, shipped with ai-edge-litert) ----------


def _unpack(data: bytes) -> Any:
    schema = require("ai_edge_litert.schema_py_generated")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    # ai-edge-quantizer appends large buffers after the FlatBuffer (offset/size): bring them inside
    # so that packing again keeps them.
    for buffer in model.buffers or []:
        if buffer.offset > 1:
            buffer.data = np.frombuffer(data, np.uint8, buffer.size, buffer.offset).copy()
            buffer.offset = 0
            buffer.size = 0
    return model


def _pack(model: Any) -> bytes:
    flatbuffers = require("flatbuffers")
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _opcode_index(model: Any, builtin: int) -> int:
    schema = require("ai_edge_litert.schema_py_generated")
    for i, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 2
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _set_interface(data: bytes, io_dtype: str, output_dtype: str) -> tuple[bytes, dict[str, Any]]:
    """Give the quantized graph the input dtype asked for and, unless quantized logits are asked
    for, float32 logits (drop the QUANTIZE ai-edge-quantizer puts after the float classifier).
    Returns the file and the input's quantization, as {dtype, scale, zero_point}."""
    schema = require("ai_edge_litert.schema_py_generated")
    model = _unpack(data)
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    quantize = schema.BuiltinOperator.QUANTIZE

    # Output: the float classifier's logits, re-quantized by a last QUANTIZE op.
    last = graph.operators[-1]
    if codes[last.opcodeIndex] != quantize or list(last.outputs) != list(graph.outputs):
        raise LiteRtConversionError("the quantized graph does not end with the classifier's QUANTIZE as expected")
    if output_dtype == "float32":
        graph.operators = graph.operators[:-1]
        _rename_output(model, graph, graph.outputs[0], last.inputs[0])
        graph.outputs = [last.inputs[0]]
    elif output_dtype == "uint8":
        _shift_to_uint8(graph.tensors[graph.outputs[0]])

    # Input: int8 as quantized; uint8 or float32 through a QUANTIZE op in front.
    index = graph.inputs[0]
    tensor = graph.tensors[index]
    if tensor.type != _INT8 or tensor.quantization is None:
        raise LiteRtConversionError("the quantized graph's input is not int8")
    scale = float(tensor.quantization.scale[0])
    zero = int(tensor.quantization.zeroPoint[0])
    info = {"dtype": "int8", "scale": scale, "zero_point": zero}
    if io_dtype != "int8":
        inner = schema.TensorT()
        inner.shape = list(tensor.shape)
        inner.type = _INT8
        inner.name = (tensor.name or b"input") + b"_int8"
        inner.buffer = tensor.buffer
        inner.quantization = tensor.quantization
        graph.tensors.append(inner)
        inner_index = len(graph.tensors) - 1
        for op in graph.operators:
            op.inputs = [inner_index if i == index else i for i in op.inputs]
        if io_dtype == "uint8":
            outer = schema.QuantizationParametersT()
            outer.scale = [scale]
            outer.zeroPoint = [zero + 128]
            tensor.type = _UINT8
            tensor.quantization = outer
            info = {"dtype": "uint8", "scale": scale, "zero_point": zero + 128}
        else:
            tensor.type = _FLOAT32
            tensor.quantization = None
            info = {"dtype": "float32", "scale": None, "zero_point": None}
        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(model, quantize)
        op.inputs = [index]
        op.outputs = [inner_index]
        graph.operators.insert(0, op)
    return _pack(model), info


def _shift_to_uint8(tensor: Any) -> None:
    tensor.type = _UINT8
    tensor.quantization.zeroPoint = [int(z) + 128 for z in tensor.quantization.zeroPoint]


def _rename_output(model: Any, graph: Any, old: int, new: int) -> None:
    """Point the signature's output at tensor ``new`` (and give it the old output's name)."""
    graph.tensors[new].name = graph.tensors[old].name
    graph.tensors[old].name = (graph.tensors[old].name or b"output") + b"_quantized"
    for signature in model.signatureDefs or []:
        for entry in signature.outputs or []:
            if entry.tensorIndex == old:
                entry.tensorIndex = new


def _metadata(
    model: MobileNetV1, precision: str, layout: str, input_quant: dict[str, Any] | None, output_dtype: str
) -> dict[str, Any]:
    from mobilenet import __version__  # noqa: PLC0415

    return {
        "format": "mobilenet-tflite-metadata",
        "version": METADATA_VERSION,
        "producer": f"mobilenet {__version__}, litert-torch {package_version('litert-torch')}",
        **model_description(model, precision, layout),
        "input": input_quant or {"dtype": "float32", "scale": None, "zero_point": None},
        "output": {"dtype": output_dtype, "meaning": "logits"},
    }


def _with_metadata(data: bytes, content: dict[str, Any]) -> bytes:
    schema = require("ai_edge_litert.schema_py_generated")
    model = _unpack(data)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(content, separators=(",", ":")).encode("utf-8"), np.uint8).copy()
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    ours = (METADATA_NAME, METADATA_NAME.encode())
    model.metadata = [m for m in (model.metadata or []) if (m.name or b"") not in ours]
    model.metadata.append(entry)
    return _pack(model)

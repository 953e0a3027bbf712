"""Read TFLite MobileNet v1 files without TensorFlow: TF's own (float32 or uint8) and those
litert-torch writes (float32, float16 weights, int8).

A ``.tflite`` file is a FlatBuffer of the TFLite schema (``schema.fbs``). We read the few tables we
need with a small bounds-checked FlatBuffer reader: the model's buffers, the first subgraph's
tensors (shape, type, buffer, quantisation) and its operators in execution order. The convolutions
(``CONV_2D``, ``DEPTHWISE_CONV_2D``) are then MobileNet's layers in order; the classifier is either
the last of them (TF's 1x1 logits conv) or a ``FULLY_CONNECTED`` (litert-torch's, weights
(classes, features)). Quantised tensors (uint8, int8) are dequantised as ``(q - zero_point) * scale``
(per tensor or per channel); biases of quantised models are int32 with scale ``input_scale *
weight_scale``, and dequantise the same way. A weight fed through a ``DEQUANTIZE`` op (float16
weights, int8 weights of a dynamic-range layer) is read from that op's input. BatchNorm is already
folded into the conv biases of these files.

Padding: TF's files use SAME everywhere. litert-torch writes VALID on 1x1 convolutions (where it is
the same thing) and folds TF's asymmetric pads into SAME; a 3x3 VALID convolution is accepted only
behind an explicit ``PAD`` op (symmetric padding of PyTorch-style models, read as
``padding="symmetric"``). Other ops (MEAN, AVERAGE_POOL_2D, RESHAPE, SOFTMAX, QUANTIZE, TRANSPOSE of
an NCHW input...) carry no weights and are skipped.

Layouts: conv filters are OHWI, depthwise filters [1, H, W, C * multiplier]; the input is NHWC, or
NCHW where litert-torch was asked for it (told by the input shape).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

# BuiltinOperator codes (schema.fbs).
AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE, FULLY_CONNECTED = 1, 3, 4, 6, 9
PAD, TRANSPOSE = 34, 39
OP_NAMES = {
    0: "ADD", 1: "AVERAGE_POOL_2D", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D", 6: "DEQUANTIZE", 9: "FULLY_CONNECTED",
    22: "RESHAPE", 25: "SOFTMAX", 34: "PAD", 39: "TRANSPOSE", 40: "MEAN", 43: "SQUEEZE", 114: "QUANTIZE",
}
# TensorType codes.
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# Padding enum of Conv2DOptions / DepthwiseConv2DOptions.
SAME, VALID = 0, 1


class _FlatBuffer:
    """Tables, vectors and scalars of one FlatBuffer, every offset checked against the size."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _read(self, fmt: str, pos: int) -> Any:
        """One little-endian scalar at ``pos``: every read of the file goes through here, so a
        damaged offset anywhere is a ``WeightFormatError``, never a ``struct.error``."""
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise WeightFormatError(f"TFLite file is truncated or corrupt (offset {pos} out of range)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

    def _u32(self, pos: int) -> int:
        return self._read("I", pos)

    def root(self) -> int:
        return self._u32(0)

    def _field_pos(self, table: int, field: int) -> int | None:
        vtable = table - self._read("i", table)
        vtable_size = self._read("H", vtable)
        entry = 4 + 2 * field
        if entry >= vtable_size:
            return None
        offset = self._read("H", vtable + entry)
        return table + offset if offset else None

    def scalar(self, table: int, field: int, fmt: str, default: int | float = 0) -> int | float:
        pos = self._field_pos(table, field)
        return default if pos is None else self._read(fmt, pos)

    def _target(self, table: int, field: int) -> int | None:
        pos = self._field_pos(table, field)
        return None if pos is None else pos + self._u32(pos)

    def table(self, table: int, field: int) -> int | None:
        return self._target(table, field)

    def vector(self, table: int, field: int, dtype: str) -> np.ndarray:
        vec = self._target(table, field)
        if vec is None:
            return np.zeros(0, dtype)
        length = self._u32(vec)
        itemsize = np.dtype(dtype).itemsize
        if vec + 4 + length * itemsize > len(self.data):
            raise WeightFormatError("TFLite file is truncated (a vector runs past the end)")
        return np.frombuffer(self.data, dtype, length, vec + 4)

    def tables(self, table: int, field: int) -> list[int]:
        vec = self._target(table, field)
        if vec is None:
            return []
        return [vec + 4 + 4 * i + self._u32(vec + 4 + 4 * i) for i in range(self._u32(vec))]

    def string(self, table: int, field: int) -> str:
        raw = self.vector(table, field, "u1")
        return raw.tobytes().decode("utf-8", errors="replace")


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: type
    data: np.ndarray | None
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int

    def dequantize(self) -> np.ndarray:
        if self.data is None:
            raise WeightFormatError(f"TFLite tensor {self.name!r} has no data")
        values = self.data.reshape(self.shape)
        if self.dtype in (np.float32, np.float16):
            return values.astype(np.float32)
        if not len(self.scale):
            raise WeightFormatError(f"TFLite tensor {self.name!r} is {self.dtype.__name__} without quantisation")
        shape = [1] * len(self.shape)
        if len(self.scale) > 1:
            shape[self.quantized_dimension] = -1
        scale = self.scale.astype(np.float64).reshape(shape)
        zero = self.zero_point.astype(np.float64).reshape(shape) if len(self.zero_point) else 0.0
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class _Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    padding: int | None
    strides: tuple[int, int] | None


@dataclass
class _Model:
    tensors: list[_Tensor]
    ops: list[_Op]
    inputs: list[int]  # the graph's input and output tensors
    outputs: list[int]


def _read_model(path: Path) -> _Model:
    """The first subgraph of ``path``. Any damage (an offset, index or size that does not fit
    the file) is a ``WeightFormatError`` naming the file, whichever table it hits."""
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WeightFormatError(f"{path.name}: not a TFLite file (no 'TFL3' identifier)")
    try:
        return _parse_model(data)
    except (WeightFormatError, IndexError, ValueError) as err:  # IndexError: an opcode or tensor index
        reason = str(err) if isinstance(err, WeightFormatError) else f"TFLite file is corrupt ({err})"
        raise WeightFormatError(f"{path.name}: {reason}; download or export it again") from None


def _parse_model(data: bytes) -> _Model:
    fb = _FlatBuffer(data)
    model = fb.root()
    codes = []
    for opcode in fb.tables(model, 1):
        deprecated = int(fb.scalar(opcode, 0, "b"))
        builtin = int(fb.scalar(opcode, 3, "i"))
        codes.append(max(deprecated, builtin))  # newer files use the int32 field, older the int8 one
    buffers = [fb.vector(buf, 0, "u1") for buf in fb.tables(model, 4)]
    subgraphs = fb.tables(model, 2)
    if not subgraphs:
        raise WeightFormatError("TFLite file has no subgraph")
    graph = subgraphs[0]
    tensors = []
    for t in fb.tables(graph, 0):
        dtype = TENSOR_TYPES.get(int(fb.scalar(t, 1, "b")), np.uint8)
        buffer_index = int(fb.scalar(t, 2, "I"))
        raw = buffers[buffer_index] if buffer_index < len(buffers) else np.zeros(0, "u1")
        quant = fb.table(t, 4)
        scale = fb.vector(quant, 2, "<f4") if quant is not None else np.zeros(0, np.float32)
        zero = fb.vector(quant, 3, "<i8") if quant is not None else np.zeros(0, np.int64)
        qdim = int(fb.scalar(quant, 6, "i")) if quant is not None else 0
        tensors.append(
            _Tensor(
                name=fb.string(t, 3),
                shape=tuple(int(s) for s in fb.vector(t, 0, "<i4")),
                dtype=dtype,
                data=raw.view(dtype) if len(raw) else None,
                scale=scale,
                zero_point=zero,
                quantized_dimension=qdim,
            )
        )
    ops = []
    for op in fb.tables(graph, 3):
        code = codes[int(fb.scalar(op, 0, "I"))]
        padding = strides = None
        options = fb.table(op, 4)
        if options is not None and code in (CONV_2D, DEPTHWISE_CONV_2D):
            # Conv2DOptions and DepthwiseConv2DOptions both start: padding, stride_w, stride_h.
            padding = int(fb.scalar(options, 0, "b"))
            strides = (int(fb.scalar(options, 2, "i")), int(fb.scalar(options, 1, "i")))
        ops.append(_Op(code, list(fb.vector(op, 1, "<i4")), list(fb.vector(op, 2, "<i4")), padding, strides))
    inputs, outputs = list(fb.vector(graph, 1, "<i4")), list(fb.vector(graph, 2, "<i4"))
    for index in inputs + outputs:
        if not 0 <= index < len(tensors):
            raise WeightFormatError(f"TFLite file is corrupt (graph tensor {index} of {len(tensors)})")
    return _Model(tensors, ops, inputs, outputs)


def read_tflite(paths: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> SourceWeights:
    """The convolutions of one TFLite model, or of several files that run one after another
    (TF's 1.0-224 uint8 model published as a body and a head)."""
    files = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    convs: list[ConvParams] = []
    classifier: tuple[np.ndarray, np.ndarray | None, str] | None = None
    input_shape = None
    input_quant = None
    quantized = False
    symmetric = False
    models = [_read_model(path) for path in files]
    _check_order(files, models)
    for path, model in zip(files, models):
        tensors, ops, inputs = model.tensors, model.ops, model.inputs
        if input_shape is None and inputs:
            first = tensors[inputs[0]]
            input_shape = first.shape
            input_quant = _uint8_view(first)
        producers = {out: op for op in ops for out in op.outputs}
        for op in ops:
            if op.code == FULLY_CONNECTED:
                if classifier is not None:
                    raise WeightFormatError(f"{path.name}: more than one FULLY_CONNECTED layer; MobileNet v1 has one")
                weight_t = _weight_source(tensors, producers, op.inputs[1])
                quantized |= weight_t.dtype not in (np.float32, np.float16)
                bias = _bias(tensors, op)
                classifier = (weight_t.dequantize(), bias, weight_t.name or f"{path.name}:fc")
                continue
            if op.code not in (CONV_2D, DEPTHWISE_CONV_2D):
                continue
            if classifier is not None:
                raise WeightFormatError(f"{path.name}: a convolution follows the FULLY_CONNECTED classifier")
            weight_t = _weight_source(tensors, producers, op.inputs[1])
            kernel = weight_t.shape[1:3]
            if op.padding is not None and op.padding != SAME and kernel != (1, 1):
                symmetric |= _explicit_pad(path, tensors, producers, op, kernel)
            quantized |= weight_t.dtype not in (np.float32, np.float16)
            weight = weight_t.dequantize()
            if op.code == CONV_2D:
                weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            else:
                weight = weight[0].transpose(2, 0, 1)[:, None]  # [1, H, W, C] -> (C, 1, H, W)
            kind = "depthwise" if op.code == DEPTHWISE_CONV_2D else "conv"
            name = weight_t.name or f"{path.name}:op{len(convs)}"
            stride = op.strides[0] if op.strides else None
            convs.append(ConvParams(name, kind, weight, bias=_bias(tensors, op), stride=stride))
    if len(convs) < (1 if classifier is not None else 2):
        raise WeightFormatError(f"{files[0].name}: found {len(convs)} convolutions, not a MobileNet")
    if classifier is None:
        logits = convs.pop()
        if logits.weight.shape[2:] != (1, 1):
            raise WeightFormatError(
                f"{files[-1].name}: the last convolution is {tuple(logits.weight.shape)}, not the 1x1 logits conv "
                "(give the head file too if the model is split in parts)"
            )
        classifier = (logits.weight[:, :, 0, 0], logits.bias, logits.name)
    stored = str(describe_tflite(files[0])["weight_dtype"])
    return SourceWeights(
        # tflite (float32 weights), tflite-float16, tflite-uint8 (TF's) or tflite-int8 (litert-torch's)
        format=f"tflite-{stored}" if quantized or stored == "float16" else "tflite",
        convs=convs,
        classifier_weight=classifier[0],
        classifier_bias=classifier[1],
        classifier_name=classifier[2],
        folded=True,
        bn_eps=None,
        resolution=_resolution(input_shape, convs[0].weight.shape[1]),
        input_quantization=input_quant,
        arch_hints={"padding": "symmetric"} if symmetric else {},
    )


def describe_tflite(path: str | os.PathLike[str]) -> dict[str, object]:
    """What a ``.tflite`` file holds, without running it: ``ops`` (operator names in execution
    order), ``weight_dtype`` (of the convolution weights as stored: float32, float16, int8 or
    uint8), ``input_shape`` and ``input_dtype``."""
    model = _read_model(Path(path))
    tensors, ops, inputs = model.tensors, model.ops, model.inputs
    producers = {out: op for op in ops for out in op.outputs}
    convs = [op for op in ops if op.code in (CONV_2D, DEPTHWISE_CONV_2D)]
    weight_dtype = np.dtype(_weight_source(tensors, producers, convs[0].inputs[1]).dtype).name if convs else "none"
    first = tensors[inputs[0]] if inputs else None
    return {
        "ops": [OP_NAMES.get(op.code, f"op{op.code}") for op in ops],
        "weight_dtype": weight_dtype,
        "input_shape": first.shape if first else (),
        "input_dtype": np.dtype(first.dtype).name if first else "none",
    }


def _shape(model: _Model, ends: list[int]) -> tuple[int, ...] | None:
    return model.tensors[ends[0]].shape if ends else None


def _fits(output: tuple[int, ...] | None, input_: tuple[int, ...] | None) -> bool:
    """Whether one part's output can feed the next part: the same number of values (a part may
    reshape, (1, 1, 1, 1024) -> (1, 1024)); a shape the file does not give is taken to fit."""
    return not output or not input_ or int(np.prod(output)) == int(np.prod(input_))


def _check_order(files: list[Path], models: list[_Model]) -> None:
    """The parts of a split model must run one after another: each part takes what the previous
    one outputs. Parts given in the wrong order (head before body) would otherwise read as a
    model whose input is the head's 1x1 feature map, and fail later on that "resolution"."""
    for i in range(1, len(files)):
        before, after = models[i - 1], models[i]
        if _fits(_shape(before, before.outputs), _shape(after, after.inputs)):
            continue
        parts = (f"{files[i - 1].name} outputs {_shape(before, before.outputs)}, "
                 f"{files[i].name} takes {_shape(after, after.inputs)}")
        if _fits(_shape(after, after.outputs), _shape(before, before.inputs)):
            raise WeightFormatError(f"the parts of this split model are in the wrong order ({parts}); "
                                    f"give {files[i].name} before {files[i - 1].name}, in the order they run")
        raise WeightFormatError(f"{files[i].name} cannot follow {files[i - 1].name} ({parts}); give the parts of "
                                "one split model, in the order they run")


def _weight_source(tensors: list[_Tensor], producers: dict[int, _Op], index: int) -> _Tensor:
    """The stored tensor behind a weight input: itself, or the input of the DEQUANTIZE making it."""
    op = producers.get(index)
    if op is not None and op.code == DEQUANTIZE:
        return tensors[op.inputs[0]]
    return tensors[index]


def _bias(tensors: list[_Tensor], op: _Op) -> np.ndarray | None:
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and tensors[op.inputs[2]].data is not None:
        return tensors[op.inputs[2]].dequantize()
    return None


def _explicit_pad(
    path: Path, tensors: list[_Tensor], producers: dict[int, _Op], op: _Op, kernel: tuple[int, ...]
) -> bool:
    """A VALID k x k convolution must be fed by a PAD op. True if that pad is symmetric (k // 2 on
    every side: PyTorch's padding) on a strided conv, where TF's SAME would differ."""
    pad = producers.get(op.inputs[0])
    axes = [1, 2]  # height and width of the NHWC tensor the convolution reads
    while pad is not None and pad.code == TRANSPOSE and tensors[pad.inputs[1]].data is not None:
        # NCHW input (litert-torch on request): the PAD runs before the transpose to NHWC.
        perm = tensors[pad.inputs[1]].data.astype(int)
        axes = [int(perm[a]) for a in axes]
        pad = producers.get(pad.inputs[0])
    if pad is None or pad.code != PAD or len(pad.inputs) < 2 or tensors[pad.inputs[1]].data is None:
        raise WeightFormatError(
            f"{path.name}: a {kernel[0]}x{kernel[1]} convolution uses VALID padding with no explicit PAD before it; "
            "MobileNet v1 pads every 3x3 convolution"
        )
    amounts = tensors[pad.inputs[1]].data.reshape(-1, 2).astype(int)  # (before, after) per axis
    spatial = amounts[axes]
    half = kernel[0] // 2
    return bool(op.strides and max(op.strides) > 1 and (spatial == half).all())


def _uint8_view(first: _Tensor) -> tuple[float, int] | None:
    """(scale, zero point) of a quantised input as if it were uint8 (int8 is uint8 less 128)."""
    if not len(first.scale) or first.dtype not in (np.uint8, np.int8):
        return None
    zero = int(first.zero_point[0]) if len(first.zero_point) else 0
    return float(first.scale[0]), zero + (128 if first.dtype == np.int8 else 0)


def _resolution(shape: tuple[int, ...] | None, channels: int) -> tuple[int, int] | None:
    """(height, width) from a 4-D input shape, NHWC or (litert-torch on request) NCHW."""
    if not shape or len(shape) != 4:
        return None
    if shape[1] == channels and shape[3] != channels:
        return shape[2], shape[3]
    return shape[1], shape[2]


def activation_grids(paths: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> list[tuple[float, float, float]]:
    """(low, high, step) of each convolution's uint8 output, in network order, logits last.

    A dequantised model computes in float; TFLite's uint8 kernels round every activation to this
    grid. Rounding a converted model's activations to it shows how much of a remaining
    disagreement is that arithmetic, not the conversion (see tests/test_weights_assets.py)."""
    grids = []
    for path in [Path(p) for p in (paths if isinstance(paths, list) else [paths])]:
        model = _read_model(path)
        tensors, ops = model.tensors, model.ops
        for op in ops:
            if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
                out = tensors[op.outputs[0]]
                if not len(out.scale):
                    raise WeightFormatError(f"{path.name}: {out.name} is not quantised")
                step, zero = float(out.scale[0]), int(out.zero_point[0]) if len(out.zero_point) else 0
                grids.append(((0 - zero) * step, (255 - zero) * step, step))
    return grids

"""Read TFLite MobileNet v1 files (float32 or uint8) without TensorFlow.

A ``.tflite`` file is a FlatBuffer of the TFLite schema (``schema.fbs``). We read the few tables we
need with a small bounds-checked FlatBuffer reader: the model's buffers, the first subgraph's
tensors (shape, type, buffer, quantisation) and its operators in execution order. The convolutions
(``CONV_2D``, ``DEPTHWISE_CONV_2D``) are then MobileNet's layers in order, the last one being the
1x1 logits conv. uint8 tensors are dequantised as ``(q - zero_point) * scale`` (per tensor or per
channel); biases of quantised models are int32 with scale ``input_scale * weight_scale``, and
dequantise the same way. BatchNorm is already folded into the conv biases of these files.

Layouts: conv filters are OHWI, depthwise filters [1, H, W, C * multiplier].
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

# BuiltinOperator codes (schema.fbs).
AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D = 1, 3, 4
# TensorType codes.
TENSOR_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# Padding enum of Conv2DOptions / DepthwiseConv2DOptions.
SAME, VALID = 0, 1


class _FlatBuffer:
    """Tables, vectors and scalars of one FlatBuffer, every offset checked against the size."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > len(self.data):
            raise WeightFormatError("TFLite file is truncated or corrupt (offset out of range)")
        return struct.unpack_from("<I", self.data, pos)[0]

    def root(self) -> int:
        return self._u32(0)

    def _field_pos(self, table: int, field: int) -> int | None:
        vtable = table - struct.unpack_from("<i", self.data, table)[0]
        if vtable < 0 or vtable + 4 > len(self.data):
            raise WeightFormatError("TFLite file is truncated or corrupt (bad vtable)")
        vtable_size = struct.unpack_from("<H", self.data, vtable)[0]
        entry = 4 + 2 * field
        if entry >= vtable_size:
            return None
        offset = struct.unpack_from("<H", self.data, vtable + entry)[0]
        return table + offset if offset else None

    def scalar(self, table: int, field: int, fmt: str, default: int | float = 0) -> int | float:
        pos = self._field_pos(table, field)
        if pos is None:
            return default
        if pos + struct.calcsize(fmt) > len(self.data):
            raise WeightFormatError("TFLite file is truncated or corrupt (scalar out of range)")
        return struct.unpack_from("<" + fmt, self.data, pos)[0]

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
        if self.dtype == np.float32:
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


def _read_model(data: bytes) -> tuple[list[_Tensor], list[_Op], list[int]]:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise WeightFormatError("not a TFLite file (no 'TFL3' identifier)")
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
            padding = int(fb.scalar(options, 0, "b"))
            strides = (int(fb.scalar(options, 2, "i")), int(fb.scalar(options, 1, "i")))
        ops.append(_Op(code, list(fb.vector(op, 1, "<i4")), list(fb.vector(op, 2, "<i4")), padding, strides))
    inputs = list(fb.vector(graph, 1, "<i4"))
    return tensors, ops, inputs


def read_tflite(paths: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> SourceWeights:
    """The convolutions of one TFLite model, or of several files that run one after another
    (TF's 1.0-224 uint8 model published as a body and a head)."""
    files = [Path(p) for p in (paths if isinstance(paths, list) else [paths])]
    convs: list[ConvParams] = []
    input_shape = None
    input_quant = None
    quantized = False
    for path in files:
        tensors, ops, inputs = _read_model(path.read_bytes())
        if input_shape is None and inputs:
            first = tensors[inputs[0]]
            input_shape = first.shape
            if first.dtype == np.uint8 and len(first.scale):
                input_quant = (float(first.scale[0]), int(first.zero_point[0]) if len(first.zero_point) else 0)
        for op in ops:
            if op.code not in (CONV_2D, DEPTHWISE_CONV_2D):
                continue
            if op.padding is not None and op.padding != SAME:
                raise WeightFormatError(f"{path.name}: a convolution uses VALID padding; MobileNet v1 uses SAME")
            weight_t = tensors[op.inputs[1]]
            quantized |= weight_t.dtype != np.float32
            weight = weight_t.dequantize()
            if op.code == CONV_2D:
                weight = weight.transpose(0, 3, 1, 2)  # OHWI -> OIHW
            else:
                weight = weight[0].transpose(2, 0, 1)[:, None]  # [1, H, W, C] -> (C, 1, H, W)
            bias = tensors[op.inputs[2]].dequantize() if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            kind = "depthwise" if op.code == DEPTHWISE_CONV_2D else "conv"
            convs.append(ConvParams(weight_t.name or f"{path.name}:op{len(convs)}", kind, weight, bias=bias,
                                    stride=op.strides[0] if op.strides else None))
    if len(convs) < 2:
        raise WeightFormatError(f"{files[0].name}: found {len(convs)} convolutions, not a MobileNet")
    logits = convs.pop()
    if logits.weight.shape[2:] != (1, 1):
        raise WeightFormatError(
            f"{files[-1].name}: the last convolution is {tuple(logits.weight.shape)}, not the 1x1 logits conv "
            "(give the head file too if the model is split in parts)"
        )
    resolution = (input_shape[1], input_shape[2]) if input_shape and len(input_shape) == 4 else None
    return SourceWeights(
        format="tflite-uint8" if quantized else "tflite",
        convs=convs,
        classifier_weight=logits.weight[:, :, 0, 0],
        classifier_bias=logits.bias,
        classifier_name=logits.name,
        folded=True,
        bn_eps=None,
        resolution=resolution,
        input_quantization=input_quant,
    )


def activation_grids(paths: str | os.PathLike[str] | list[str | os.PathLike[str]]) -> list[tuple[float, float, float]]:
    """(low, high, step) of each convolution's uint8 output, in network order, logits last.

    A dequantised model computes in float; TFLite's uint8 kernels round every activation to this
    grid. Rounding a converted model's activations to it shows how much of a remaining
    disagreement is that arithmetic, not the conversion (see tests/test_weights_assets.py)."""
    grids = []
    for path in [Path(p) for p in (paths if isinstance(paths, list) else [paths])]:
        tensors, ops, _ = _read_model(path.read_bytes())
        for op in ops:
            if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
                out = tensors[op.outputs[0]]
                if not len(out.scale):
                    raise WeightFormatError(f"{path.name}: {out.name} is not quantised")
                step, zero = float(out.scale[0]), int(out.zero_point[0]) if len(out.zero_point) else 0
                grids.append(((0 - zero) * step, (255 - zero) * step, step))
    return grids

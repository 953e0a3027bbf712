"""Reading and editing ``.tflite`` FlatBuffers, with the TFLite schema's object API shipped in
ai-edge-litert: no converter, no PyTorch model.

* ``set_interface``: the input dtype and float logits of a graph ai-edge-quantizer made full-integer
  (what ``formats.litert`` asks of it, see there).
* ``with_metadata`` / ``read_metadata``: a JSON entry named ``mobilenet`` (``METADATA_NAME``) under
  ``Model.metadata``, which interpreters ignore and any FlatBuffer reader finds.

The LiteRT writer uses all three; the LiteRT runtime reads the metadata back from here, so that
running a file never imports the converter stack.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mobilenet.deploy.optional import require
from mobilenet.errors import InputError, MobileNetError

METADATA_NAME = "mobilenet"
# TFLite schema enums (schema.fbs) used when editing the graph's interface.
_FLOAT32, _UINT8, _INT8 = 0, 3, 9


class LiteRtConversionError(MobileNetError, RuntimeError):
    """litert-torch or ai-edge-quantizer failed, or wrote a graph the LiteRT writer does not expect."""


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


def with_metadata(data: bytes, content: dict[str, Any]) -> bytes:
    """The file ``data`` with ``content`` (JSON) as its ``mobilenet`` metadata entry, replacing any."""
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


def set_interface(data: bytes, io_dtype: str, output_dtype: str | None) -> tuple[bytes, dict[str, Any]]:
    """Give the quantized graph the input dtype asked for and, unless quantized logits are asked
    for, float32 logits (drop the QUANTIZE ai-edge-quantizer puts after the float classifier);
    ``output_dtype=None`` leaves the output as it is (a graph without the classifier).
    Returns the file and the input's quantization, as {dtype, scale, zero_point}."""
    schema = require("ai_edge_litert.schema_py_generated")
    model = _unpack(data)
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    quantize = schema.BuiltinOperator.QUANTIZE

    # Output: the float classifier's logits, re-quantized by a last QUANTIZE op.
    last = graph.operators[-1]
    if output_dtype is not None and (
        codes[last.opcodeIndex] != quantize or list(last.outputs) != list(graph.outputs)
    ):
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
        inner_index = _int8_copy_of_input(graph, index, schema)
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


# ---------------------------------------------------------------------------------------------


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


def _int8_copy_of_input(graph: Any, index: int, schema: Any) -> int:
    """A new int8 tensor with the input's shape and quantization, fed to every op that read the
    input (a QUANTIZE in front will fill it); returns its index."""
    tensor = graph.tensors[index]
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
    return inner_index


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

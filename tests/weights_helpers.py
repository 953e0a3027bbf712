"""Test-side writers of foreign weight files, built independently of the readers under test.

* ``write_tf_graphdef``: a TF-slim-style frozen GraphDef, protobuf wire format encoded here by hand
  (TensorFlow layouts HWIO / [H, W, C, 1], unfolded BatchNorm, the eps constant TF adds).
* ``write_tflite``: a float TFLite model (CONV_2D / DEPTHWISE_CONV_2D with fused ReLU6, SAME
  padding, AVERAGE_POOL_2D, the 1x1 logits conv, RESHAPE) packed with the TFLite schema classes that
  ship in ``ai-edge-litert``, so TFLite's own interpreter can run it.
* ``randomize_batchnorm``: random BatchNorm scales and shifts with statistics measured on data, so
  a converter that drops or misorders any of them fails the comparisons.
* ``models_built``: records every ``MobileNetV1`` that allocates its tensors (shape checks build
  theirs on the meta device, which costs nothing and is not counted).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

from mobilenet.model import MobileNetV1


def models_built(monkeypatch) -> list:
    """From now on (for the test), the architecture of every MobileNetV1 built with real tensors."""
    built: list = []
    original = MobileNetV1.__init__

    def init(self: MobileNetV1, *args, **kwargs) -> None:
        original(self, *args, **kwargs)
        if next(self.parameters()).device.type != "meta":
            built.append(self.arch_cfg)

    monkeypatch.setattr(MobileNetV1, "__init__", init)
    return built


def randomize_batchnorm(module: torch.nn.Module, inputs: torch.Tensor, seed: int = 0) -> None:
    """Random BatchNorm scales and shifts, then running statistics measured on ``inputs``.

    Measured statistics keep every layer's output at a healthy spread, so the logits depend on the
    input all the way through: with made-up statistics the signal of a 28-layer network with random
    weights fades to nothing and any two images give the same logits, which would let a wrong
    converter pass."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one pass sets the statistics of that pass
        module.train()
        module(inputs)
        module.eval()


# ------------------------------------------------------------------------------------ GraphDef


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _tensor_proto(array: np.ndarray) -> bytes:
    shape = b"".join(_field(2, _varint(1 << 3 | 0) + _varint(int(d))) for d in array.shape)
    body = _varint(1 << 3 | 0) + _varint(1)  # dtype DT_FLOAT
    body += _field(2, shape)
    if array.size == 1 and array.ndim == 0:
        body += _varint(5 << 3 | 5) + struct.pack("<f", float(array))  # float_val, as TF stores scalars
    else:
        body += _field(4, np.ascontiguousarray(array, "<f4").tobytes())
    return body


def _const_node(name: str, array: np.ndarray) -> bytes:
    value_attr = _field(1, b"value") + _field(2, _field(8, _tensor_proto(array)))
    dtype_attr = _field(1, b"dtype") + _field(2, _varint(6 << 3 | 0) + _varint(1))
    return _field(1, name.encode()) + _field(2, b"Const") + _field(5, dtype_attr) + _field(5, value_attr)


def _op_node(name: str, op: str, inputs: list[str]) -> bytes:
    return _field(1, name.encode()) + _field(2, op.encode()) + b"".join(_field(3, i.encode()) for i in inputs)


def write_tf_graphdef(model: MobileNetV1, path: Path, eps: float = 1e-3) -> None:
    """The model's weights as TF-slim names them in a frozen graph (plus noise a reader must skip)."""
    nodes = [_op_node("input", "Placeholder", [])]
    for (_, module), name in zip(model.conv_layers(), _slim_names(model)):
        w = module.conv.weight.detach().numpy()
        if module.conv.groups > 1:  # (C*m, 1, H, W) -> [H, W, C, m]
            c = module.conv.groups
            kernel = w[:, 0].reshape(c, -1, w.shape[2], w.shape[3]).transpose(2, 3, 0, 1)
            nodes.append(_const_node(f"MobilenetV1/{name}/depthwise_weights", kernel))
        else:
            nodes.append(_const_node(f"MobilenetV1/{name}/weights", w.transpose(2, 3, 1, 0)))
        bn = module.bn
        for part, value in (("gamma", bn.weight), ("beta", bn.bias), ("moving_mean", bn.running_mean),
                            ("moving_variance", bn.running_var)):
            nodes.append(_const_node(f"MobilenetV1/{name}/BatchNorm/{part}", value.detach().numpy()))
            nodes.append(_op_node(f"MobilenetV1/{name}/BatchNorm/{part}/read", "Identity",
                                  [f"MobilenetV1/{name}/BatchNorm/{part}"]))
        nodes.append(_const_node(f"MobilenetV1/MobilenetV1/{name}/BatchNorm/batchnorm/add/y",
                                 np.array(eps, np.float32)))
    fc = model.classifier
    nodes.append(_const_node("MobilenetV1/Logits/Conv2d_1c_1x1/weights",
                             fc.weight.detach().numpy().T.reshape(1, 1, fc.in_features, fc.out_features)))
    nodes.append(_const_node("MobilenetV1/Logits/Conv2d_1c_1x1/biases", fc.bias.detach().numpy()))
    # A transfer-learning head, as in retrained graphs: not MobileNet, must be ignored.
    nodes.append(_const_node("final_training_ops/weights/final_weights", np.ones((fc.in_features, 2), np.float32)))
    path.write_bytes(b"".join(_field(1, n) for n in nodes) + _field(4, _varint(1 << 3 | 0) + _varint(26)))


def _slim_names(model: MobileNetV1) -> list[str]:
    names = ["Conv2d_0"]
    for i in range(len(model.blocks)):
        names += [f"Conv2d_{i + 1}_depthwise", f"Conv2d_{i + 1}_pointwise"]
    return names


# -------------------------------------------------------------------------------------- TFLite


def write_tflite(model: MobileNetV1, path: Path) -> None:
    """A float32 TFLite file of a BatchNorm-folded model (NHWC, batch 1), runnable by TFLite."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    assert model.stem.folded, "fold the BatchNorm first: TFLite stores folded conv biases"
    h, w = model.arch_cfg.resolution
    buffers = [tfl.BufferT()]  # buffer 0 is the conventional empty one
    tensors: list = []

    def tensor(name: str, shape: tuple[int, ...], data: np.ndarray | None = None, ttype: int = 0) -> int:
        t = tfl.TensorT()
        t.name, t.shape, t.type = name, list(shape), ttype
        if data is None:
            t.buffer = 0
        else:
            buf = tfl.BufferT()
            buf.data = list(np.ascontiguousarray(data).tobytes())
            buffers.append(buf)
            t.buffer = len(buffers) - 1
        tensors.append(t)
        return len(tensors) - 1

    codes = {}
    for code in (tfl.BuiltinOperator.CONV_2D, tfl.BuiltinOperator.DEPTHWISE_CONV_2D,
                 tfl.BuiltinOperator.AVERAGE_POOL_2D, tfl.BuiltinOperator.RESHAPE):
        codes[code] = len(codes)
    ops = []

    def op(code: int, inputs: list[int], outputs: list[int], options_type: int, options) -> None:
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = codes[code], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        ops.append(o)

    x = tensor("input", (1, h, w, model.arch_cfg.in_channels))
    graph_input = x
    size = (h, w)
    for name, module in model.conv_layers():
        conv = module.conv
        wt = conv.weight.detach().numpy().astype("<f4")
        bias = tensor(f"{name}/bias", (conv.out_channels,), conv.bias.detach().numpy().astype("<f4"))
        stride = conv.stride[0]
        size = tuple(-(-s // stride) for s in size)
        out = tensor(f"{name}/out", (1, *size, conv.out_channels))
        if conv.groups > 1:
            kernel = tensor(f"{name}/depthwise_weights", (1, 3, 3, conv.out_channels),
                            wt[:, 0].transpose(1, 2, 0)[None])
            opts = tfl.DepthwiseConv2DOptionsT()
            opts.depthMultiplier = conv.out_channels // conv.groups
            options_type, code = tfl.BuiltinOptions.DepthwiseConv2DOptions, tfl.BuiltinOperator.DEPTHWISE_CONV_2D
        else:
            k = conv.kernel_size[0]
            kernel = tensor(f"{name}/weights", (conv.out_channels, k, k, conv.in_channels), wt.transpose(0, 2, 3, 1))
            opts = tfl.Conv2DOptionsT()
            options_type, code = tfl.BuiltinOptions.Conv2DOptions, tfl.BuiltinOperator.CONV_2D
        opts.padding, opts.strideH, opts.strideW = tfl.Padding.SAME, stride, stride
        opts.fusedActivationFunction = tfl.ActivationFunctionType.RELU6
        op(code, [x, kernel, bias], [out], options_type, opts)
        x = out
    pooled = tensor("pool", (1, 1, 1, model.num_features))
    pool = tfl.Pool2DOptionsT()
    pool.padding, pool.strideH, pool.strideW, pool.filterHeight, pool.filterWidth = tfl.Padding.VALID, 1, 1, *size
    op(tfl.BuiltinOperator.AVERAGE_POOL_2D, [x], [pooled], tfl.BuiltinOptions.Pool2DOptions, pool)
    fc = model.classifier
    classes = fc.out_features
    logits_w = tensor("Logits/weights", (classes, 1, 1, fc.in_features),
                      fc.weight.detach().numpy().astype("<f4")[:, None, None, :])
    logits_b = tensor("Logits/biases", (classes,), fc.bias.detach().numpy().astype("<f4"))
    logits4 = tensor("Logits/out", (1, 1, 1, classes))
    conv_opts = tfl.Conv2DOptionsT()
    conv_opts.padding, conv_opts.strideH, conv_opts.strideW = tfl.Padding.SAME, 1, 1
    op(tfl.BuiltinOperator.CONV_2D, [pooled, logits_w, logits_b], [logits4], tfl.BuiltinOptions.Conv2DOptions,
       conv_opts)
    shape = tensor("shape", (2,), np.array([1, classes], "<i4"), ttype=tfl.TensorType.INT32)
    logits = tensor("logits", (1, classes))
    op(tfl.BuiltinOperator.RESHAPE, [logits4, shape], [logits], tfl.BuiltinOptions.NONE, None)

    graph = tfl.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, ops, [graph_input], [logits]
    m = tfl.ModelT()
    m.version, m.subgraphs, m.buffers, m.description = 3, [graph], buffers, "mobilenet test model"
    m.operatorCodes = []
    for code in codes:
        oc = tfl.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        m.operatorCodes.append(oc)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def run_tflite(path: Path, inputs_nhwc: np.ndarray) -> np.ndarray:
    """Outputs of TFLite's own interpreter, one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for image in inputs_nhwc:
        interpreter.set_tensor(inp["index"], image[None].astype(inp["dtype"]))
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)

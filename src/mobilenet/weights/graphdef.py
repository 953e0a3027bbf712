"""Read a TF-slim MobileNet v1 frozen GraphDef (``.pb``) without TensorFlow.

A frozen graph stores every variable as a ``Const`` node whose ``value`` attribute is a
TensorProto. TF-slim names them ``MobilenetV1/Conv2d_{i}[_depthwise|_pointwise]/...``::

    Conv2d_0/weights                           HWIO          the stem
    Conv2d_{i}_depthwise/depthwise_weights     [H, W, C, 1]  (times the depth multiplier)
    Conv2d_{i}_pointwise/weights               HWIO
    .../BatchNorm/{gamma, beta, moving_mean, moving_variance}
    Logits/Conv2d_1c_1x1/{weights, biases}     the 1x1 logits conv, 1001 classes

BatchNorm's epsilon is read from the graph (the ``.../batchnorm/add/y`` constant TF adds to the
variance), not assumed. Nodes outside ``MobilenetV1/`` (e.g. a transfer-learning head such as
``final_training_ops`` in retrained graphs) are ignored. Message layouts (``graph.proto``,
``node_def.proto``, ``attr_value.proto``, ``tensor.proto``) are decoded by ``protowire``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from mobilenet.weights.protowire import LENGTH_DELIMITED, ProtoError, as_str, iter_fields
from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

DT_FLOAT, DT_INT32 = 1, 3
_DTYPES = {DT_FLOAT: np.dtype("<f4"), DT_INT32: np.dtype("<i4")}
_CONV = re.compile(r"(?:^|/)Conv2d_(\d+)(?:_(depthwise|pointwise))?/(weights|depthwise_weights)$")
_BN = re.compile(r"(?:^|/)Conv2d_(\d+)(?:_(depthwise|pointwise))?/BatchNorm/(gamma|beta|moving_mean|moving_variance)$")
_EPS = re.compile(r"(?:^|/)Conv2d_\d+(?:_depthwise|_pointwise)?/BatchNorm/batchnorm(?:_\d+)?/add/y$")
_LOGITS = re.compile(r"(?:^|/)Logits/Conv2d_1c_1x1/(weights|biases)$")
SCOPE = "MobilenetV1/"


def _parse_tensor(data: memoryview) -> np.ndarray:
    dtype, shape, content = DT_FLOAT, [], None
    floats: list[float] = []
    ints: list[int] = []
    for number, wire, value in iter_fields(data):
        if number == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif number == 2:
            for n2, _, dim in iter_fields(value):  # type: ignore[arg-type]
                if n2 == 2:
                    size = next((int(v) for n3, _, v in iter_fields(dim) if n3 == 1), 0)  # type: ignore[arg-type]
                    shape.append(size)
        elif number == 4:
            content = bytes(value)  # type: ignore[arg-type]
        elif number == 5:  # float_val: packed or one fixed32 per entry
            if wire == LENGTH_DELIMITED:
                floats.extend(np.frombuffer(bytes(value), "<f4").tolist())  # type: ignore[arg-type]
            else:
                floats.append(float(np.array([value], "<u4").view("<f4")[0]))
        elif number == 7:  # int_val: packed varints or one varint per entry
            if wire == LENGTH_DELIMITED:
                ints.extend(int(v) for _, _, v in iter_fields(_as_packed_varints(value)))  # type: ignore[arg-type]
            else:
                ints.append(int(value))  # type: ignore[arg-type]
    if dtype not in _DTYPES:
        return np.zeros(0, np.float32)  # strings and other types are never weights
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        array = np.frombuffer(content, _DTYPES[dtype])
        if array.size != count:
            raise WeightFormatError(f"tensor content has {array.size} values for shape {shape}")
        return array.reshape(shape).copy()
    values = floats if dtype == DT_FLOAT else ints
    if not values:
        return np.zeros(shape, _DTYPES[dtype])
    # TF stores a constant filled with one value as that value once.
    out = np.array(values, _DTYPES[dtype])
    return np.broadcast_to(out[-1], shape).copy() if out.size == 1 else out.reshape(shape)


def _as_packed_varints(value: memoryview) -> bytes:
    """Re-key a packed varint array as repeated field 1 so ``iter_fields`` can walk it."""
    out = bytearray()
    pos = 0
    raw = bytes(value)
    while pos < len(raw):
        start = pos
        while raw[pos] & 0x80:
            pos += 1
        pos += 1
        out += b"\x08" + raw[start:pos]
    return bytes(out)


def read_graph_constants(data: bytes) -> dict[str, np.ndarray]:
    """{node name: value} of every float/int ``Const`` node of a GraphDef."""
    constants: dict[str, np.ndarray] = {}
    nodes = 0
    try:
        for number, _, node in iter_fields(data):
            if number != 1 or not isinstance(node, memoryview):
                continue
            nodes += 1
            name = op = ""
            tensor = None
            for n2, _, value in iter_fields(node):
                if n2 == 1:
                    name = as_str(value)
                elif n2 == 2:
                    op = as_str(value)
                elif n2 == 5 and isinstance(value, memoryview):  # map<string, AttrValue> entry
                    key, attr = "", None
                    for n3, _, v3 in iter_fields(value):
                        if n3 == 1:
                            key = as_str(v3)
                        elif n3 == 2:
                            attr = v3
                    if key == "value" and isinstance(attr, memoryview):
                        tensor = next((v for n4, _, v in iter_fields(attr) if n4 == 8), None)
            if op == "Const" and isinstance(tensor, memoryview):
                constants[name] = _parse_tensor(tensor)
    except (ProtoError, UnicodeDecodeError) as err:
        raise WeightFormatError(f"not a TensorFlow GraphDef, or truncated ({err})") from None
    if nodes == 0:
        raise WeightFormatError("not a TensorFlow GraphDef (no nodes)")
    return constants


def read_graphdef(path: str | os.PathLike[str]) -> SourceWeights:
    path = Path(path)
    constants = read_graph_constants(path.read_bytes())
    ours = {name: value for name, value in constants.items() if SCOPE in name or name.startswith("Conv2d_")}
    layers: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    names: dict[tuple[int, str], str] = {}
    logits: dict[str, np.ndarray] = {}
    eps_values = []
    for name, value in ours.items():
        if m := _CONV.search(name):
            key = (int(m[1]), m[2] or "")
            layers.setdefault(key, {})["weights"] = value
            names[key] = name
        elif m := _BN.search(name):
            layers.setdefault((int(m[1]), m[2] or ""), {})[m[3]] = value
        elif m := _LOGITS.search(name):
            logits[m[1]] = value
        elif _EPS.search(name) and value.size == 1:
            eps_values.append(float(value.reshape(-1)[0]))
    if not layers or "weights" not in logits:
        raise WeightFormatError(
            f"{path.name}: no TF-slim MobileNet v1 variables found (expected MobilenetV1/Conv2d_0/weights "
            "and MobilenetV1/Logits/Conv2d_1c_1x1/weights)"
        )
    # Network order: Conv2d_0, then Conv2d_1_depthwise, Conv2d_1_pointwise, Conv2d_2_depthwise ...
    order = {"": 0, "depthwise": 0, "pointwise": 1}
    convs = []
    for key in sorted(layers, key=lambda k: (k[0], order[k[1]])):
        parts = layers[key]
        name = names.get(key, f"Conv2d_{key[0]}_{key[1]}")
        if "weights" not in parts:
            raise WeightFormatError(f"{path.name}: BatchNorm of {name} found but not its weights")
        missing = [p for p in ("beta", "moving_mean", "moving_variance") if p not in parts]
        if missing:
            raise WeightFormatError(f"{name}: BatchNorm {', '.join(missing)} missing (is BatchNorm folded?)")
        w = parts["weights"]
        if w.ndim != 4:
            raise WeightFormatError(f"{name}: expected a 4-d kernel, got shape {w.shape}")
        if key[1] == "depthwise":  # [H, W, C, mult] -> (C * mult, 1, H, W), channel-major as TF orders it
            weight = w.reshape(w.shape[0], w.shape[1], -1).transpose(2, 0, 1)[:, None]
        else:  # HWIO -> OIHW
            weight = w.transpose(3, 2, 0, 1)
        channels = weight.shape[0]
        gamma = parts.get("gamma", np.ones(channels, np.float32))  # slim's scale=False leaves gamma out
        bn = (gamma, parts["beta"], parts["moving_mean"], parts["moving_variance"])
        convs.append(ConvParams(name, "depthwise" if key[1] == "depthwise" else "conv", weight, bn=bn))
    if len(set(eps_values)) > 1:
        raise WeightFormatError(f"{path.name}: BatchNorm epsilons differ between layers: {sorted(set(eps_values))}")
    w = logits["weights"]
    return SourceWeights(
        format="tf-graphdef",
        convs=convs,
        classifier_weight=w.reshape(w.shape[-2], w.shape[-1]).T,  # [1, 1, in, out] -> (out, in)
        classifier_bias=logits.get("biases"),
        classifier_name="MobilenetV1/Logits/Conv2d_1c_1x1/weights",
        folded=False,
        bn_eps=float(f"{eps_values[0]:.7g}") if eps_values else 1e-3,  # stored as float32
        arch_hints={"padding": "tf"},
    )

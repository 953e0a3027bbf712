"""Core ML ``.mlpackage`` (an ML Program) through coremltools, fp32 or fp16.

coremltools converts on any OS, but **Core ML predictions run only on Apple platforms** (macOS,
iOS): off them a package can be written and checked structurally, never run. ``check_structure``
does that check: the input and output names and shapes, and the operations the architecture
implies (``arch.layers(model.arch_cfg)``: one ``conv`` per convolution, one activation per conv, one
``pad`` per strided conv with a nonzero TF or Keras pad, one ``reduce_mean``, one ``linear``), and
fp16 weights where fp16 was asked for. On macOS the export verifies numerically too
(``mobilenet.deploy.runtimes.coreml``).

The model is traced with ``torch.jit.trace`` after its TF 'SAME' pads were made constants
(``prepare.fixed_padding_copy``): the run-time pad computation cannot be converted through that
path. Input: NCHW by default (a Core ML MultiArray in PyTorch's order, what coremltools users
expect) or NHWC. The labels, the normalisation and the architecture travel in the package's
user-defined metadata (JSON strings under ``mobilenet.*`` keys, read with ``read_metadata``).
An ``.mlpackage`` is a directory: ``write`` creates it at ``path``, and ``is_output`` tells one (a
folder an export may replace) from any other folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mobilenet import arch
from mobilenet.deploy.formats.mobile import BATCH, InputLayout, check_layout, example_input, model_description
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError, MobileNetError
from mobilenet.model import MobileNetV1
from mobilenet.prepare import fixed_padding_copy

NAME = "coreml"
SUFFIXES = (".mlpackage",)
PRECISIONS = ("fp32", "fp16")
RUNTIME = "coreml"
DEFAULT_LAYOUT = "nchw"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
METADATA_PREFIX = "mobilenet."
PREDICTIONS_NEED_APPLE = "Core ML predictions run only on Apple platforms (macOS, iOS)"


class CoreMlStructureError(MobileNetError, RuntimeError):
    """The package does not hold the network the architecture describes."""


def write(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    layout: str = DEFAULT_LAYOUT,
    io_dtype: str = "float32",
) -> list[Path]:
    """Write ``model`` as an ``.mlpackage`` directory at ``path`` (fp32 or fp16 compute and
    weights). ``calibration`` is not used (no int8 here). Unverified: see the module docstring."""
    del calibration
    if precision not in PRECISIONS:
        raise InputError(f"Core ML export offers {', '.join(PRECISIONS)}, not {precision!r}")
    check_layout(layout)
    if io_dtype != "float32":
        raise InputError(f"a Core ML package here takes float32 input; got io_dtype={io_dtype!r}")
    ct = require("coremltools")
    path = Path(path)
    module = InputLayout(fixed_padding_copy(model), layout).eval()
    example = example_input(model, layout, BATCH)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example)
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape))],
            outputs=[ct.TensorType(name=OUTPUT_NAME)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS15,
        )
    for key, value in _metadata(model, precision, layout).items():
        mlmodel.user_defined_metadata[METADATA_PREFIX + key] = value
    classes = model.arch_cfg.num_classes
    mlmodel.short_description = f"MobileNet v1 {model.arch_cfg.name} ({precision}), logits for {classes} classes"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        mlmodel.save(str(path))
    return [path]


def is_output(path: Path) -> bool:
    """Whether ``path`` is a Core ML package: a folder whose ``Manifest.json`` names a root model
    (by its content, not its name: a package set aside as ``.NAME.mlpackage.old`` is one too)."""
    try:
        manifest = json.loads((path / "Manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "rootModelIdentifier" in manifest


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``mobilenet.*`` entries of a package's user-defined metadata, JSON-decoded."""
    spec = _spec(path)
    return {
        key[len(METADATA_PREFIX):]: json.loads(value)
        for key, value in spec.description.metadata.userDefined.items()
        if key.startswith(METADATA_PREFIX)
    }


def check_structure(path: str | os.PathLike[str], model: MobileNetV1) -> str:
    """Check a package against the network ``arch.layers(model.arch_cfg)`` describes, on any OS;
    returns a one-line summary, raises ``CoreMlStructureError`` on the first thing that differs.
    This is not a numerical check: Core ML predictions run only on Apple platforms."""
    spec = _spec(path)
    meta = read_metadata(path)
    layout = meta.get("layout", "nchw")
    precision = meta.get("precision", "fp32")
    want_input = list(example_input(model, layout).shape)
    inputs = list(spec.description.input)
    outputs = list(spec.description.output)
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
        raise CoreMlStructureError(
            f"{Path(path).name}: inputs {[i.name for i in inputs]} / outputs {[o.name for o in outputs]}, "
            f"expected [{INPUT_NAME!r}] / [{OUTPUT_NAME!r}]"
        )
    got_input = list(inputs[0].type.multiArrayType.shape)
    if got_input != want_input:
        raise CoreMlStructureError(f"{Path(path).name}: input shape {got_input}, expected {want_input} ({layout})")
    got_output = list(outputs[0].type.multiArrayType.shape)
    if got_output and got_output[-1] != model.arch_cfg.num_classes:
        raise CoreMlStructureError(
            f"{Path(path).name}: output shape {got_output}, expected [1, {model.arch_cfg.num_classes}]"
        )
    ops = operation_counts(spec)
    expected = expected_operations(model)
    for op, count in expected.items():
        if ops.get(op, 0) != count:
            raise CoreMlStructureError(
                f"{Path(path).name}: {ops.get(op, 0)} {op!r} operations, the architecture implies {count} "
                f"({', '.join(f'{k} {v}' for k, v in expected.items())})"
            )
    if precision == "fp16" and ops.get("cast", 0) == 0:
        raise CoreMlStructureError(f"{Path(path).name}: fp16 package without the casts of an fp16 program")
    counted = ", ".join(f"{v} {k}" for k, v in expected.items())
    return (
        f"{Path(path).name}: input {INPUT_NAME} {want_input}, output {OUTPUT_NAME} [1, {model.arch_cfg.num_classes}], "
        f"{counted} as arch.layers implies, {precision}; structure only ({PREDICTIONS_NEED_APPLE})"
    )


def expected_operations(model: MobileNetV1) -> dict[str, int]:
    """The ML Program operations the architecture implies, counted from ``arch.layers`` (and, for
    the pads, from the modules ``model`` builds for them)."""
    cfg = model.arch_cfg
    layers = arch.layers(cfg)
    convs = [layer for layer in layers if layer.kind in ("conv", "depthwise", "pointwise")]
    activation = "clip" if cfg.activation == "relu6" else "relu"
    # Which convs pad in a module of their own is the model's decision (``model.ConvBNAct``: the
    # strided ones under tf and keras padding; the rest pad inside the conv), so it is read from the
    # model rather than restated here; how much they pad is arch.layers'. A pad that is zero at this
    # resolution is no operation at all (``fixed_padding_copy`` drops it before tracing).
    own_pad = {name for name, module in model.conv_layers() if not isinstance(module.pad, torch.nn.Identity)}
    padded = [layer for layer in convs if layer.name in own_pad and any(p for pair in layer.pad for p in pair)]
    return {"conv": len(convs), activation: len(convs), "pad": len(padded), "reduce_mean": 1, "linear": 1}


def operation_counts(spec: Any) -> Counter[str]:
    """Operation types in the package's main function (ML Program)."""
    function = spec.mlProgram.functions["main"]
    block = function.block_specializations[function.opset]
    return Counter(op.type for op in block.operations)


# ---------------------------------------------------------------------------------------------


def _spec(path: str | os.PathLike[str]) -> Any:
    ct = require("coremltools")
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no such .mlpackage directory")
    with _quiet():
        return ct.models.MLModel(str(path), skip_model_load=True).get_spec()


@contextlib.contextmanager
def _quiet() -> Any:
    """coremltools prints progress bars and, off macOS, that its native runtime is missing (we
    know: predictions need Apple platforms); warnings about untested torch versions too."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _metadata(model: MobileNetV1, precision: str, layout: str) -> dict[str, str]:
    from mobilenet.version import __version__  # noqa: PLC0415

    values = {"producer": f"mobilenet {__version__}", **model_description(model, precision, layout)}
    return {key: json.dumps(value, separators=(",", ":")) for key, value in values.items()}

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

What travels in the file: a TFLite metadata entry named ``mobilenet`` holding JSON: the
architecture settings, class names, the preprocessing (resize, crop, mean, std), the layout, the
input's dtype and quantization. ``formats.tflite_flatbuffer.read_metadata(path)`` returns it (that
module also does the FlatBuffer surgery on the graph's interface); any FlatBuffer reader finds it
under ``Model.metadata`` (interpreters ignore it).

The writer runs no verification: ``mobilenet.deploy.export`` loads the file in the LiteRT
interpreter and compares it with PyTorch before keeping it.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.deploy.execution import Execution
from mobilenet.deploy.formats.mobile import BATCH, InputLayout, check_layout, example_input, model_description
from mobilenet.deploy.formats.tflite_flatbuffer import LiteRtConversionError, set_interface, with_metadata
from mobilenet.deploy.optional import package_version, require
from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1
from mobilenet.prepare import fixed_padding_copy, int8_rounded_copy
from mobilenet.preprocess import preprocess_for

NAME = "tflite"
SUFFIXES = (".tflite",)
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIME = "litert"
# Options of ``write`` that only an int8 file has: a float file takes and returns float32, so
# ``export.check_export`` refuses them for fp32 and fp16 rather than ignore them.
INT8_OPTIONS = ("io_dtype", "output_dtype")
DEFAULT_LAYOUT = "nhwc"
IO_DTYPES = ("uint8", "int8", "float32")
METADATA_VERSION = 1

__all__ = ["LiteRtConversionError", "full_integer", "write"]


def write(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
    layout: str = DEFAULT_LAYOUT,
    io_dtype: str = "uint8",
    output_dtype: str = "float32",
) -> list[Path]:
    """Write ``model`` as one ``.tflite`` file at ``path`` (unverified; see the module docstring).

    ``precision``: fp32 | fp16 | int8 (int8 needs ``calibration``, an NCHW float32 batch of real
    images, preprocessed as for the model). ``layout``: nhwc | nchw input. ``io_dtype``: the int8
    file's input dtype, uint8 | int8 | float32 (fp32 and fp16 files take float32: ``export`` refuses it for them).
    ``output_dtype``: float32 logits (default) or the int8 file's quantized logits, int8 | uint8.
    """
    _check_options(model, precision, calibration, layout, io_dtype, output_dtype)
    path = Path(path)
    quantizing = precision == "int8"
    prepared = int8_rounded_copy(model, calibration) if quantizing else fixed_padding_copy(model)  # type: ignore[arg-type]
    data = _convert(InputLayout(prepared, layout), example_input(model, layout, BATCH))
    input_quant = None
    if precision == "fp16":
        data = _float16_weights(data)
    elif quantizing:
        assert calibration is not None
        data = full_integer(data, _to_layout(calibration, layout), _pixel_range(model))
        data, input_quant = set_interface(data, io_dtype, output_dtype)
    output = output_dtype if quantizing else "float32"
    data = with_metadata(data, _metadata(model, precision, layout, input_quant, output))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return [path]


# ---------------------------------------------------------------------------------------------


def execution_problem(
    execution: Execution, *, layout: str = DEFAULT_LAYOUT, precision: str = "fp32", io_dtype: str = "uint8",
    **options: Any,
) -> str | None:
    """What keeps a written file from its promise (None: nothing): no TRANSPOSE in an NHWC file,
    and every op in XNNPACK but one, said when the file runs: the QUANTIZE that turns an int8 file's
    uint8 pixels into int8 (XNNPACK requantizes within a type only; ``io_dtype="int8"`` or
    ``"float32"`` has it delegated)."""
    del options
    if layout == "nhwc" and execution.transposes:
        return f"{execution.transposes} TRANSPOSE op(s) in an NHWC file"
    allowed = ["QUANTIZE"] if precision == "int8" and io_dtype == "uint8" else []
    if list(execution.outside) not in ([], allowed):
        return f"op(s) outside XNNPACK ({', '.join(execution.outside)})"
    return None


def _check_options(
    model: MobileNetV1, precision: str, calibration: torch.Tensor | None, layout: str, io_dtype: str,
    output_dtype: str,
) -> None:
    if precision not in PRECISIONS:
        raise InputError(f".tflite export offers {', '.join(PRECISIONS)}, not {precision!r}")
    check_layout(layout)
    if io_dtype not in IO_DTYPES:
        raise InputError(f"{option('io_dtype')} must be one of {IO_DTYPES}, got {io_dtype!r}")
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
    pre = preprocess_for(model)
    mean, std = tuple(pre.mean), tuple(pre.std)
    if len(set(mean)) != 1 or len(set(std)) != 1:
        return None
    scale = 1.0 / (255.0 * std[0])
    zero = round(255.0 * mean[0])
    return (0 - zero) * scale, (255 - zero) * scale


def full_integer(data: bytes, calibration: np.ndarray, input_range: tuple[float, float] | None = None) -> bytes:
    """A converted fp32 file with int8 weights and activations, the classifier dynamic-range (then
    a QUANTIZE of its float logits); int8 in. ``calibration``: inputs in the file's layout, one
    sample per row; ``input_range``: the input's (min, max) where it is known (the pixels')."""
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


def _metadata(
    model: MobileNetV1, precision: str, layout: str, input_quant: dict[str, Any] | None, output_dtype: str
) -> dict[str, Any]:
    from mobilenet.version import __version__  # noqa: PLC0415

    return {
        "format": "mobilenet-tflite-metadata",
        "version": METADATA_VERSION,
        "producer": f"mobilenet {__version__}, litert-torch {package_version('litert-torch') or 'unknown'}",
        **model_description(model, precision, layout),
        "input": input_quant or {"dtype": "float32", "scale": None, "zero_point": None},
        "output": {"dtype": output_dtype, "meaning": "logits"},
    }


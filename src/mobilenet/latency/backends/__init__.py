"""Running a probe in each runtime, as the project's predictors run a whole network.

A probe becomes a small PyTorch module (``probe_module``: the network's own layers, BatchNorm
folded), which a backend builds in its runtime once (``load``) and
then makes a ``Cell`` of at each input shape: the runtime's call as a predictor makes it, and,
where the predictor converts its input in Python before the call (the NHWC mobile runtimes),
that conversion on its own (``feed``). A probe's call leaves the conversion out, so that its time
is its layers'; the network's call pays it once, for the image (``model.call_seconds``), as it
pays what handing its input and output over costs where a backend measures that
(``Backend.handover_precisions``).

What it costs to build decides how: PyTorch, ONNX Runtime and OpenVINO export a probe in
milliseconds, so each shape is exported on its own, static as the network's files are (OpenVINO's
int8 probe is quantized by NNCF in seconds, once, kept, and reshaped). LiteRT and
ExecuTorch convert in seconds, so a probe is converted once and resized: LiteRT's interpreter
resizes its input, ExecuTorch's program is exported with dynamic height and width. Both run a
batch as that many single-image calls, as their predictors do (``fixed_batch``).
"""

from mobilenet.latency.backends.base import (
    MAX_SIDE,
    PROBE_FOLDER,
    Backend,
    Call,
    Cell,
    Shaper,
    kept_build,
    kept_predictor,
    onnx_bytes,
    probe_module,
)
from mobilenet.latency.backends.executorch import ExecuTorchBackend
from mobilenet.latency.backends.litert import LiteRtBackend
from mobilenet.latency.backends.ort import OnnxRuntimeBackend
from mobilenet.latency.backends.ov import OpenVinoBackend
from mobilenet.latency.backends.pytorch import TorchBackend

BACKENDS: dict[str, type[Backend]] = {
    b.runtime: b for b in (TorchBackend, OnnxRuntimeBackend, OpenVinoBackend, LiteRtBackend, ExecuTorchBackend)
}

__all__ = [
    "BACKENDS", "MAX_SIDE", "PROBE_FOLDER", "Backend", "Call", "Cell", "ExecuTorchBackend", "LiteRtBackend",
    "OnnxRuntimeBackend", "OpenVinoBackend", "Shaper", "TorchBackend", "kept_build", "kept_predictor", "onnx_bytes",
    "probe_module",
]

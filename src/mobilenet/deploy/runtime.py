"""One way to run MobileNet, whatever the backend: ``make_predictor(model, runtime, precision)``.

A predictor takes an NCHW float32 batch, already preprocessed (torch tensor or numpy array), and
returns float32 logits as a torch tensor. Its ``description`` says which backend and precision run
and, for ``runtime="auto"``, why that one was picked.

=============  ==========================================  ============================================
runtime        fp32 / bf16                                 int8
=============  ==========================================  ============================================
torch          folded, channels_last, TorchScript-frozen   not offered (use onnxruntime or openvino)
               (oneDNN conv + ReLU6 fused); bf16 casts
               weights and activations
onnxruntime    folded ONNX export; bf16 not offered (ORT   QDQ static quantization, per-channel weights
               has no bf16 kernels on x86 CPUs)
openvino       folded ONNX -> OpenVINO, INFERENCE_         NNCF, per-channel weights, bias correction
               PRECISION_HINT set explicitly (OpenVINO
               runs bf16 by default on CPUs that have it,
               so an unset "fp32" would really be bf16)
=============  ==========================================  ============================================

``auto`` follows ``AUTO_PREFERENCE``, an order measured on this project's machine (2-core Zen 4, see
docs/performance.md), restricted to what is installed and what the CPU supports.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.deploy.optional import available, require
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1

RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
SUPPORTED: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "openvino": ("fp32", "bf16", "int8"),
}
# Fastest first, per precision, as measured by `mobilenet bench` on the project's 2-core Zen 4
# (docs/performance.md): the reason is printed in the predictor's description.
AUTO_PREFERENCE: dict[str, tuple[tuple[str, str], ...]] = {
    "fp32": (
        ("onnxruntime", "ONNX Runtime fp32 measured fastest on small models and within about 25% of the "
                        "fastest at 1.0-224 (PyTorch's per-call overhead makes it 4x slower at 0.25-224)"),
        ("openvino", "OpenVINO fp32 measured close to ONNX Runtime"),
        ("torch", "PyTorch is the runtime that is always installed"),
    ),
    "bf16": (
        ("openvino", "OpenVINO bf16 measured about 2x faster than fp32 on AVX512-BF16 CPUs"),
        ("torch", "PyTorch bf16 runs through oneDNN"),
    ),
    "int8": (
        ("openvino", "OpenVINO+NNCF int8 measured about 2x faster than ONNX Runtime int8 at batch 1 and 32"),
        ("onnxruntime", "ONNX Runtime int8 measured faster than fp32 at batch 32"),
    ),
}


class Predictor:
    """NCHW float32 batch (torch or numpy) -> float32 logits (torch). Subclasses run one backend.

    ``micro_batch``: the most images one runtime call gets; larger batches run in slices of this
    size. None (the default) runs every batch whole: slicing a batch of 32 into single images
    measured no faster at 0.25-224 and 25% slower at 1.0-224 (docs/performance.md).
    """

    runtime: str = "?"
    precision: str = "fp32"
    description: str = ""
    micro_batch: int | None = None

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        step = self.micro_batch
        if step is None or len(x) <= step:
            return self._run(x)
        return torch.cat([self._run(x[i : i + step]) for i in range(0, len(x), step)])

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(self, model: MobileNetV1, precision: str = "fp32", threads: int | None = None) -> None:
        from mobilenet.deploy.prepare import prepare_for_inference  # noqa: PLC0415

        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-module thread count
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.precision = precision
        self.module = prepare_for_inference(model, graph="jit", channels_last=True, dtype=dtype)
        self.description = (
            f"PyTorch {torch.__version__} {precision}, BatchNorm folded, channels_last, TorchScript frozen "
            f"(oneDNN conv+ReLU6 fused), {torch.get_num_threads()} threads"
        )

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        with torch.inference_mode():
            return self.module(x)


class OnnxRuntimePredictor(Predictor):
    runtime = "onnxruntime"

    def __init__(self, model_bytes: bytes, precision: str = "fp32", threads: int | None = None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.precision = precision
        kind = "QDQ static int8, per-channel weights" if precision == "int8" else "fp32, BatchNorm folded"
        self.description = (
            f"ONNX Runtime {ort.__version__} {kind}, {threads or 'default (all cores)'} intra-op threads"
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], precision: str = "fp32", threads: int | None = None):
        return cls(Path(path).read_bytes(), precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        from mobilenet.deploy.export import as_numpy  # noqa: PLC0415

        return torch.from_numpy(self.session.run(None, {self.input_name: as_numpy(x)})[0])


class OpenVinoPredictor(Predictor):
    runtime = "openvino"

    def __init__(self, ov_model: Any, precision: str = "fp32", threads: int | None = None) -> None:
        ov = require("openvino")
        # int8 layers run int8 whatever the hint; the hint decides the rest (the first conv, the
        # pool, the classifier), which we keep at f32 for int8 so only quantization costs accuracy.
        hint = "bf16" if precision == "bf16" else "f32"
        # No thread pinning: on a shared machine a pinned worker waits for its core while another
        # is idle (measured: fp32 batch 1 at 49 ms pinned against 32 ms unpinned under load 7).
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(ov_model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision = precision
        used = self.compiled.get_property("INFERENCE_NUM_THREADS")
        kind = "NNCF int8, per-channel weights" if precision == "int8" else f"{precision}, BatchNorm folded"
        self.description = (
            f"OpenVINO {ov.get_version().split('-')[0]} {kind}, INFERENCE_PRECISION_HINT={hint}, "
            f"{used or 'all'} threads"
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], precision: str = "fp32", threads: int | None = None):
        return cls(require("openvino").Core().read_model(str(path)), precision, threads)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        from mobilenet.deploy.export import as_numpy  # noqa: PLC0415

        self.request.infer({0: as_numpy(x)}, share_inputs=True)
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def bf16_supported(runtime: str) -> bool:
    """Whether ``runtime`` has native bf16 kernels on this CPU (emulated bf16 is slower than fp32)."""
    if runtime == "openvino":
        return available("openvino") and "BF16" in require("openvino").Core().get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        )
    if runtime == "torch":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def choose_runtime(precision: str) -> tuple[str, str]:
    """``auto``: (runtime, reason) for a precision: the first of ``AUTO_PREFERENCE`` that is
    installed and, for bf16, has native support on this CPU."""
    skipped = []
    for runtime, reason in AUTO_PREFERENCE[precision]:
        if runtime != "torch" and not available(runtime):
            skipped.append(f"{runtime} not installed")
        elif precision == "bf16" and not bf16_supported(runtime):
            skipped.append(f"{runtime} has no bf16 on this CPU")
        else:
            return runtime, reason + (f" ({'; '.join(skipped)})" if skipped else "")
    extras = "pip install 'mobilenet[openvino]' or 'mobilenet[onnx]'"
    raise InputError(f"no runtime here can run {precision}: {'; '.join(skipped)}; {extras}")


def make_predictor(
    model: MobileNetV1,
    runtime: str = "auto",
    precision: str = "fp32",
    *,
    preprocess: Any = None,
    calibration_images: Sequence[Path] | None = None,
    threads: int | None = None,
) -> Predictor:
    """A predictor for ``model`` on ``runtime`` (torch | onnxruntime | openvino | auto) at
    ``precision`` (fp32 | bf16 | int8). The model itself is not modified.

    int8 needs ``calibration_images`` (a few hundred real images; the first 300 are used), which
    are loaded with ``preprocess`` (a ``mobilenet.preprocess.Preprocess``; default: TF's [-1, 1]
    scaling at the model's resolution). ``threads``: intra-op threads (default: the runtime's own,
    all physical cores). A runtime that is not installed raises ``MissingRuntimeError`` naming the
    pip extra.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}")
    if precision == "int8" and not calibration_images:
        raise InputError(
            "int8 needs calibration images: pass a folder of a few hundred real images from the "
            "domain you will run on (never the images you evaluate on)"
        )
    why = ""
    if runtime == "auto":
        runtime, reason = choose_runtime(precision)
        why = f"; auto picked {runtime}: {reason}"
    if precision not in SUPPORTED[runtime]:
        offered = [r for r, p in SUPPORTED.items() if precision in p]
        raise InputError(f"{runtime} does not offer {precision}; use --runtime {' or '.join(offered)}")
    if runtime == "openvino":
        require("openvino")
    model = model.eval()
    predictor = _build(model, runtime, precision, preprocess, calibration_images, threads)
    predictor.description += why
    predictor.preprocess = preprocess  # type: ignore[attr-defined]
    return predictor


def _build(
    model: MobileNetV1, runtime: str, precision: str, preprocess: Any,
    calibration_images: Sequence[Path] | None, threads: int | None,
) -> Predictor:
    if runtime == "torch":
        return TorchPredictor(model, precision, threads)
    from mobilenet.deploy import export, quantize  # noqa: PLC0415

    calibration = None
    if precision == "int8":
        from mobilenet.preprocess import Preprocess  # noqa: PLC0415

        calibration = quantize.calibration_tensor(
            list(calibration_images or ()), preprocess or Preprocess(resolution=model.cfg.resolution)
        )
    with tempfile.TemporaryDirectory(prefix="mobilenet-") as tmp:
        onnx_path = export.export_onnx(model, Path(tmp) / "model.onnx")
        if runtime == "onnxruntime":
            if calibration is not None:
                onnx_path = quantize.quantize_onnx(onnx_path, Path(tmp) / "model_int8.onnx", calibration)
            return OnnxRuntimePredictor.from_file(onnx_path, precision, threads)
        ov_model = export.convert_to_openvino(onnx_path)
        if calibration is not None:
            ov_model = quantize.quantize_openvino(ov_model, calibration)
        return OpenVinoPredictor(ov_model, precision, threads)

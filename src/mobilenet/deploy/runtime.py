"""One way to run MobileNet, whatever the backend: ``make_predictor(model, runtime, precision)``.

A predictor takes an NCHW float32 batch, already preprocessed (torch tensor or numpy array), and
returns float32 logits as a torch tensor. Its ``precision`` and ``description`` say what really
runs — read back from the runtime where it can tell — and, for ``runtime="auto"``, why that one
was picked (``mobilenet.deploy.auto``: measured on this machine, cached).

=============  ==========================================  ============================================
runtime        fp32 / bf16 / fp16                          int8
=============  ==========================================  ============================================
torch          folded, channels_last, TorchScript-frozen   not offered (use onnxruntime or openvino)
               (oneDNN conv + ReLU6 fused); bf16 only
               with native bf16 (or asked-for emulation)
onnxruntime    folded ONNX export                          QDQ static, per-channel weights
openvino       folded ONNX -> OpenVINO, precision hint     NNCF, per-channel weights, bias correction
               set and read back; bf16 only where native
litert         .tflite through litert-torch (fp32, fp16)   full-integer int8
executorch     .pte with the XNNPACK delegate (fp32)       PT2E int8 for XNNPACK
=============  ==========================================  ============================================

Each runtime module declares what it offers and where the CPU matters (``mobilenet.deploy.runtimes``;
the table above summarises them). A request is checked once, before anything is built, against
that runtime's own rule (``runtimes.check_precision``), and what runs is read back from the runtime
after: a request that would run another precision than asked — bf16 on a CPU without it — is
refused with a ``PrecisionUnavailableError`` that says what to use instead. int8 built here keeps
to 7-bit weights on CPUs without VNNI (``mobilenet.deploy.quantize``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mobilenet.deploy import auto
from mobilenet.deploy.formats import format_for_path, format_module
from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes import (
    PRECISIONS,
    RUNTIME_CHOICES,
    RUNTIME_MODULES,
    check_precision,
    predictor_class,
    runtime_format,
)
from mobilenet.errors import InputError, option
from mobilenet.model import MobileNetV1
from mobilenet.predictor import Predictor
from mobilenet.threads import check_threads

__all__ = ["make_predictor", "predictor_from_file"]

# Writers with a choice of int8 weight width take this option; in-process predictors quantize for
# this CPU (7-bit weights only where it lacks VNNI).
PORTABLE_INT8_FORMATS = ("onnx", "openvino")


def make_predictor(
    model: MobileNetV1,
    runtime: str = "auto",
    precision: str = "fp32",
    *,
    preprocess: Any = None,
    calibration_images: Sequence[Path] | None = None,
    threads: int | None = None,
    batch_size: int = 1,
    allow_emulation: bool = False,
    auto_mode: str | None = None,
) -> Predictor:
    """A predictor for ``model`` on ``runtime`` (torch | onnxruntime | openvino | litert |
    executorch | auto) at ``precision`` (fp32 | fp16 | bf16 | int8). The model is not modified.

    int8 needs ``calibration_images`` (a few hundred real images; the first 300 are used), loaded
    with ``preprocess`` (a ``mobilenet.preprocess.Preprocess``; default: the model's own,
    ``preprocess_for(model)``). ``threads``: intra-op threads (default: the runtime's own).
    ``batch_size``: the batch the predictor will be called with: PyTorch compiles its program for
    it (``BUILT_PER_BATCH``; other batches run in slices of it) and ``auto`` measures at it.
    ``allow_emulation``: run bf16 on a CPU without it anyway (PyTorch only; many times slower).
    ``auto_mode``: see ``mobilenet.deploy.auto``.
    A runtime that is not installed raises ``MissingRuntimeError`` naming the pip extra.
    """
    if runtime not in RUNTIME_CHOICES:
        raise InputError(f"{option('runtime')} must be one of {RUNTIME_CHOICES}, got {runtime!r}")
    check_threads(threads)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be an int >= 1, got {batch_size!r}")
    if runtime == "auto":  # each candidate's own rule decides whether it is one (auto.candidates)
        if precision not in PRECISIONS:
            raise InputError(f"{option('precision')} must be one of {PRECISIONS}, got {precision!r}")
    else:
        check_precision(runtime, precision, allow_emulation=allow_emulation)
    if precision == "int8" and not calibration_images:
        raise InputError(
            "int8 needs calibration images: pass a folder of a few hundred real images from the "
            "domain you will run on (never the images you evaluate on)"
        )
    model = model.eval()
    calibration = int8_calibration(model, calibration_images, preprocess) if precision == "int8" else None

    def build(name: str) -> Predictor:
        return _build(model, name, precision, calibration, threads, batch_size)

    if runtime == "auto":
        import torch  # noqa: PLC0415

        from mobilenet.deploy.verify import photo_batch  # noqa: PLC0415
        from mobilenet.preprocess import repeat_to_batch  # noqa: PLC0415

        photos = photo_batch(model, preprocess=_preprocess_for(model, preprocess))
        example = repeat_to_batch(photos, batch_size)
        reference = None
        if precision == "int8" and auto.candidates("fp32"):  # int8 is not faster everywhere: timed beside fp32
            reference = lambda: _build(model, auto.candidates("fp32")[0], "fp32", None, threads, batch_size)  # noqa: E731
        with torch.inference_mode():
            predictor, reason = auto.choose(model.arch_cfg, precision, batch_size, threads, build, example,
                                            mode=auto_mode, reference=reference)
        predictor.description += f"; auto picked {predictor.runtime}: {reason}"
    else:
        predictor = build(runtime)
    predictor.preprocess = preprocess  # type: ignore[attr-defined]
    return predictor


def int8_calibration(model: MobileNetV1, images: Sequence[Path] | None, preprocess: Any = None) -> Any:
    """The calibration batch an int8 file is quantized on: ``images`` (the first 300) loaded with
    ``preprocess`` (default: the model's own)."""
    from mobilenet.deploy.quantize import calibration_tensor  # noqa: PLC0415

    return calibration_tensor(list(images or ()), _preprocess_for(model, preprocess))


def _preprocess_for(model: MobileNetV1, preprocess: Any) -> Any:
    if preprocess is not None:
        return preprocess
    from mobilenet.preprocess import preprocess_for  # noqa: PLC0415

    return preprocess_for(model)


def _build(model: MobileNetV1, runtime: str, precision: str, calibration: Any, threads: int | None,
           batch_size: int) -> Predictor:
    """The predictor of a checked request (``check_precision``); it reads back what runs."""
    cls = predictor_class(runtime)
    if runtime == "torch":
        return cls(model, precision, threads, batch_size=batch_size)
    with tempfile.TemporaryDirectory(prefix="mobilenet-") as tmp:
        return cls.from_file(write_runtime_file(model, runtime, precision, calibration, Path(tmp)), precision, threads)


def file_precision(precision: str) -> str:
    """The precision of the file a runtime runs ``precision`` from: bf16 is a runtime setting on an fp32 file."""
    return "fp32" if precision == "bf16" else precision


def write_runtime_file(model: MobileNetV1, runtime: str, precision: str, calibration: Any, folder: Path) -> Path:
    """Write the file ``runtime`` (one that reads files: not torch) runs ``model`` from at
    ``precision`` into ``folder`` (int8: quantized on ``calibration``, ``int8_calibration``);
    returns its main path (``from_file``'s argument)."""
    fmt = runtime_format(runtime)
    if fmt is None:
        raise InputError(f"{runtime} runs the model in process, from no file")
    writer = format_module(fmt)
    options: dict[str, Any] = {"portable_int8": None} if fmt in PORTABLE_INT8_FORMATS else {}
    path = folder / f"model{writer.SUFFIXES[0]}"
    writer.write(model, path, precision=file_precision(precision), calibration=calibration, **options)
    return path


def predictor_from_file(
    path: str | os.PathLike[str], precision: str | None = None, threads: int | None = None
) -> Predictor:
    """A predictor for an exported file (.onnx, .xml, .tflite, .pte), in the runtime that reads
    its format; ``precision`` None takes the file's own (read back from it). The file is checked
    against the checksums its export wrote beside it (``NAME.sha256``) before it is read: a damaged
    one raises ``integrity.DamagedFileError``, as does one the runtime cannot parse. The
    predictor's ``execution`` (in its description too) says what the file runs there."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    check_threads(threads)
    fmt = format_for_path(path)
    runtime = next((r for r, (_, _, f) in RUNTIME_MODULES.items() if f == fmt), None)
    if runtime is None:
        raise InputError(f"no runtime here reads {fmt} files")
    if fmt == "onnx":
        require("onnxruntime")
    return predictor_class(runtime).from_file(path, precision, threads)

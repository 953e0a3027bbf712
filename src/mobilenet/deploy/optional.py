"""The optional runtimes: imports that fail with the pip extra that installs them, and the
installed version of a package (the one lookup every description, metadata entry and cache key uses).
Importing OpenVINO or NNCF here also keeps their usage reports on the machine (``keep_openvino_offline``)."""

from __future__ import annotations

import importlib
from importlib import metadata
from types import ModuleType

from mobilenet.errors import InputError

# Import name -> (what it is, the extra of this package that installs it).
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("ONNX", "onnx"),
    "onnxruntime": ("ONNX Runtime", "onnx"),
    "onnxscript": ("onnxscript (needed by torch.onnx.export)", "onnx"),
    "openvino": ("OpenVINO", "openvino"),
    "nncf": ("NNCF (OpenVINO's quantizer)", "openvino"),
    "litert_torch": ("litert-torch (PyTorch -> .tflite converter)", "litert"),
    "ai_edge_quantizer": ("ai-edge-quantizer (.tflite fp16 and int8)", "litert"),
    "ai_edge_litert": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "ai_edge_litert.interpreter": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "ai_edge_litert.schema_py_generated": ("LiteRT (the .tflite interpreter, ai-edge-litert)", "litert"),
    "flatbuffers": ("flatbuffers (writes .tflite metadata)", "litert"),
    "executorch": ("ExecuTorch", "executorch"),
    "executorch.runtime": ("ExecuTorch's runtime", "executorch"),
    "torchao": ("torchao (PT2E quantization for ExecuTorch)", "executorch"),
    "coremltools": ("coremltools (Core ML)", "coreml"),
}


class MissingRuntimeError(InputError, ImportError):
    """An optional runtime is not installed. A ``ValueError`` too, so the command line reports it
    in one line (the fix is the user's: install the extra)."""


def keep_openvino_offline() -> None:
    """Decline OpenVINO's telemetry in this process unless the user has opted in.

    OpenVINO's converter (``openvino.convert_model``) and NNCF (at import and in ``nncf.quantize``)
    send usage events to Google Analytics unless the user has opted out with OpenVINO's
    ``opt_in_out --opt_out``: each event from a child process forked from the caller, a copy of a
    process that may hold gigabytes and JAX's threads, and a client ID written under the home
    directory. This project makes no network request at run time, so its process answers their
    consent check with "declined" where no choice was made. A user's explicit opt-in (the consent
    file holds 1) still stands. Idempotent; nothing to do where ``openvino_telemetry`` is absent
    or laid out differently."""
    try:
        from openvino_telemetry import Telemetry  # noqa: PLC0415
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker  # noqa: PLC0415
    except ImportError:
        return
    asked = OptInChecker.check
    if getattr(asked, "offline", False):
        return

    def check(self: OptInChecker, *args: object, **kwargs: object) -> ConsentCheckResult:
        answer = asked(self, *args, **kwargs)
        return answer if answer == ConsentCheckResult.ACCEPTED else ConsentCheckResult.DECLINED

    check.offline = True  # type: ignore[attr-defined]
    OptInChecker.check = check
    # A Telemetry made before this (NNCF imported first) has decided already: it decides again.
    made = getattr(Telemetry, "_SingletonMetaClass__single_instance", None)
    if getattr(made, "consent", False) and OptInChecker().check(False) != ConsentCheckResult.ACCEPTED:
        made.consent = False


# Imported only with keep_openvino_offline in force (see there).
OFFLINE_FIRST = ("openvino", "nncf")


def require(module: str) -> ModuleType:
    """Import an optional dependency or raise ``MissingRuntimeError`` naming the extra to install."""
    if module.split(".")[0] in OFFLINE_FIRST:
        keep_openvino_offline()
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what, extra = EXTRAS.get(module, (module, "all"))
        raise MissingRuntimeError(
            f"{what} is not installed (import {module!r} failed: {err}); install it with "
            f"pip install 'mobilenet[{extra}]'"
        ) from err


def available(module: str) -> bool:
    """Whether an optional dependency can be imported."""
    try:
        require(module)
    except MissingRuntimeError:
        return False
    return True


def package_version(distribution: str) -> str | None:
    """The installed version of a distribution (``ai-edge-litert``, ``openvino``), as pip names
    it; None if it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None

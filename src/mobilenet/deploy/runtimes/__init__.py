"""Runtimes (predictors): one module per backend, each running a model file and returning logits.

Every runtime module declares what it runs, and nothing else repeats it:

* ``PRECISIONS``: the precisions it can run;
* ``not_native(precision) -> str | None``, where the CPU matters (PyTorch, OpenVINO): why a
  precision would not run as asked on this CPU (emulated, or silently replaced by another), with
  what to use instead; ``EMULATES``: what it can run emulated when the caller insists;
* a ``Predictor`` subclass with ``from_file(path, precision, threads)`` (PyTorch's runs the model
  itself) whose ``precision`` is read back from the runtime: the one check that measures.

What is derived from them lives here: who offers what (``offered_precisions``,
``runtimes_offering``), the one check of a request before anything is built
(``check_precision``; a thread count's is ``mobilenet.threads.check_threads``). Runtimes may use format
writers; they never import ``export``. ``mobilenet.deploy.runtime`` (``make_predictor``) stands
above them.

A predictor may be called from several threads at once (the explorer keeps one per weights and
runtime and calls it from its thread pool): each caller gets its own input's logits. Where the
runtime's object is not safe to share (OpenVINO's infer request, LiteRT's interpreter, ExecuTorch's
method: each holds its input and output buffers), the predictor runs one call at a time under a
lock; ONNX Runtime's ``InferenceSession.run`` and the compiled PyTorch module are safe to call
concurrently as they are.

This module imports no runtime until asked: the command line builds its parser from
``RUNTIME_CHOICES`` and ``PRECISIONS`` and must stay quick.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

from mobilenet.errors import InputError, option, to_run

# Runtime -> (module, predictor class, the format it reads). PyTorch reads no file.
RUNTIME_MODULES: dict[str, tuple[str, str, str | None]] = {
    "torch": ("mobilenet.deploy.runtimes.pytorch", "TorchPredictor", None),
    "onnxruntime": ("mobilenet.deploy.runtimes.ort", "OnnxRuntimePredictor", "onnx"),
    "openvino": ("mobilenet.deploy.runtimes.ov", "OpenVinoPredictor", "openvino"),
    "litert": ("mobilenet.deploy.runtimes.litert", "LiteRtPredictor", "tflite"),
    "executorch": ("mobilenet.deploy.runtimes.executorch", "ExecuTorchPredictor", "executorch"),
    "coreml": ("mobilenet.deploy.runtimes.coreml", "CoreMlPredictor", "coreml"),
}
# What a command line may ask for: every runtime that runs here ("auto": the fastest, measured).
# Core ML predicts only on Apple platforms, so it runs exported packages, never a request.
RUNTIME_CHOICES: tuple[str, ...] = ("auto", *(name for name in RUNTIME_MODULES if name != "coreml"))
# The precision names, in the order the command line lists them. Each runtime module says which of
# them it runs, and together they run every one (tests/test_deploy_runtime.py checks): named here
# rather than gathered from the modules, which import torch, so that the parser stays light.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8")
# Runtimes whose predictor is built for the batch size it will be called with (PyTorch compiles its
# program for one: ``mobilenet.optimize``); other batches run in slices of it, so a caller timing
# several batch sizes builds one predictor for each. The others serve any batch from one file.
BUILT_PER_BATCH: tuple[str, ...] = ("torch",)


def runtime_module(runtime: str) -> ModuleType:
    if runtime not in RUNTIME_MODULES:
        raise InputError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIME_MODULES)}")
    return importlib.import_module(RUNTIME_MODULES[runtime][0])


def predictor_class(runtime: str) -> type:
    return getattr(runtime_module(runtime), RUNTIME_MODULES[runtime][1])


def runtime_format(runtime: str) -> str | None:
    return RUNTIME_MODULES[runtime][2]


def offered_precisions(runtime: str) -> tuple[str, ...]:
    """The precisions ``runtime`` can run (on some CPU): its module's ``PRECISIONS``."""
    return runtime_module(runtime).PRECISIONS


def runtimes_offering(precision: str) -> list[str]:
    """The runtimes a command line may ask for ``precision``, in ``RUNTIME_CHOICES`` order."""
    return [r for r in RUNTIME_CHOICES if r != "auto" and precision in offered_precisions(r)]


def not_native(runtime: str, precision: str) -> str | None:
    """Why ``runtime`` would not run ``precision`` as asked on this CPU (None: it would): the
    runtime's own rule, where it has one."""
    rule = getattr(runtime_module(runtime), "not_native", None)
    return rule(precision) if rule else None


def check_precision(runtime: str, precision: str, *, allow_emulation: bool = False) -> None:
    """The one check of a request, before anything is built: ``runtime`` offers ``precision`` and
    runs it natively on this CPU, or can emulate it and ``allow_emulation`` says to (with a
    warning). Raises ``InputError`` naming the runtimes that offer it, or
    ``PrecisionUnavailableError`` with the runtime's own reason and what to use instead."""
    from mobilenet.predictor import PrecisionUnavailableError  # noqa: PLC0415 - imports torch

    if precision not in PRECISIONS:
        raise InputError(f"{option('precision')} must be one of {PRECISIONS}, got {precision!r}")
    if precision not in offered_precisions(runtime):
        # (named as runtimes, not as one command's flag: cost --predict, choose and Python callers hear it too)
        offering = ", ".join(runtimes_offering(precision))
        raise InputError(f"{runtime} does not offer {precision}; the runtimes that do: {offering}")
    reason = not_native(runtime, precision)
    if reason is None:
        return
    emulates = precision in getattr(runtime_module(runtime), "EMULATES", ())
    if allow_emulation and emulates:
        warnings.warn(f"running {precision} emulated, as asked: {reason}", stacklevel=3)
        return
    # int8 is not faster everywhere (slower than fp32 at 0.25-224 in LiteRT and ExecuTorch on an
    # AVX2 CPU): offered with the way to measure it, never as the fast choice.
    measure = to_run("mobilenet bench --precision fp32 int8",
                     'mobilenet.deploy.bench.bench(model, BenchOptions(precisions=("fp32", "int8")))')
    advice = (f"Use fp32, or int8 ({option('runtime')} {' or '.join(runtimes_offering('int8'))}) where "
              f"{measure} measures it faster")
    if emulates:
        advice += f"; to run it emulated anyway, ask for it explicitly ({option('allow_emulation', True)})"
    raise PrecisionUnavailableError(f"{reason}. {advice}")

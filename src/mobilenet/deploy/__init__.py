"""Fast inference and deployment of MobileNet v1.

``prepare``   BatchNorm folded into the convolutions, channels_last, TorchScript freezing (which
              fuses conv + ReLU6 into oneDNN primitives) or ``torch.compile``.
``formats/``  writers: ONNX (dynamic or fixed batch), OpenVINO IR, LiteRT ``.tflite``, ExecuTorch
              ``.pte``, Core ML ``.mlpackage``.
``runtimes/`` predictors that run those files (and PyTorch itself), saying what precision runs; each
              declares the precisions it offers and where the CPU matters (bf16 only where native).
``verify``    logits against the PyTorch model on real photos, relative to the logits' spread.
``export``    above the three: write, run in its own runtime, verify, then move into place with
              its checksums beside it (an ``ExportResult``); a mismatch raises
              ``ExportMismatchError`` and writes nothing.
``integrity`` ``NAME.sha256`` beside every export, checked by every predictor before its runtime
              reads the file: a damaged file is refused in one line, never run.
``execution`` what a file really runs, read back from its runtime: ops inside and outside the
              delegate, TRANSPOSE ops, stored weight dtypes (printed by export and evaluate).
``quantize``  int8 post-training quantization (per-channel weights, 7-bit where the CPU needs it)
              calibrated on real images, through ONNX Runtime's static quantizer or NNCF.
``runtime``   ``make_predictor(model, runtime, precision)``: one callable over every runtime, with
              ``auto`` (``auto.py``) measuring the fastest on this machine and caching the choice.
``bench/``    ``bench()``: latency and throughput per backend, precision and batch size, measured
              interleaved in one process, set against the cost model (achieved GFLOP/s, per-layer
              shares, memory).

Every runtime but PyTorch is optional (``pip install 'mobilenet[onnx]'``, ``[openvino]``, ``[litert]``,
``[executorch]``, ``[coreml]``);
the modules import them only when used.
"""

from types import ModuleType

from mobilenet.deploy.optional import MissingRuntimeError
from mobilenet.lazy import submodule

__all__ = ["MissingRuntimeError"]


def __getattr__(name: str) -> ModuleType:
    return submodule(__name__, name)  # mobilenet.deploy.export, .bench...: imported when first named

"""Fast inference and deployment of MobileNet v1.

``prepare``   BatchNorm folded into the convolutions, channels_last, TorchScript freezing (which
              fuses conv + ReLU6 into oneDNN primitives) or ``torch.compile``.
``export``    ONNX (dynamic batch) and OpenVINO IR, each verified against the PyTorch model on
              real photos on export: a mismatch raises ``ExportMismatchError``.
``quantize``  int8 post-training quantization (per-channel weights) calibrated on real images,
              through ONNX Runtime's static quantizer or OpenVINO's NNCF.
``runtime``   ``make_predictor(model, runtime, precision)``: one callable over torch, ONNX Runtime
              and OpenVINO, with ``auto`` picking the fastest for the precision on this machine.
``bench``     latency and throughput per backend, precision and batch size, measured interleaved in
              one process, set against the cost model (achieved GFLOP/s, per-layer shares, memory).

ONNX Runtime and OpenVINO are optional (``pip install 'mobilenet[onnx]'`` / ``'mobilenet[openvino]'``);
the modules import them only when used.
"""

from mobilenet.deploy.optional import MissingRuntimeError

__all__ = ["MissingRuntimeError"]

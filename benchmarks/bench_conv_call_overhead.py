"""What one convolution call costs beyond its arithmetic, in PyTorch's oneDNN op and in ONNX Runtime.

A 1x16x4x4 input and a 1x1 conv (work: nanoseconds), so what is timed is the call itself:

* ``torch.ops.mkldnn._convolution_pointwise``, the op AOTInductor's code calls for every fused
  conv (bias and ReLU6), with plain and with prepacked weights;
* a whole ONNX Runtime ``run()`` of a graph holding the same conv and ReLU6.

docs/pytorch.md uses it to explain the batch-1 gap. Run with nothing else running (add
``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0`` to see what oneDNN's primitive cache saves)::

    .venv/bin/python benchmarks/bench_conv_call_overhead.py [--threads 2]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import torch


def per_call_us(call: Callable[[], object], calls: int = 1000, rounds: int = 5) -> float:
    for _ in range(100):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - start) / calls)
    return sorted(samples)[rounds // 2] * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 16, 4, 4).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(16, 16, 1, 1), torch.randn(16)
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(), [0, 0], [1, 1], [1, 1], 1, list(x.shape))

    def torch_call(weight: torch.Tensor) -> Callable[[], object]:
        return lambda: torch.ops.mkldnn._convolution_pointwise(
            x, weight, b, [0, 0], [1, 1], [1, 1], 1, "hardtanh", [0.0, 6.0], "")

    print(f"torch {torch.__version__}, {args.threads} threads")
    print(f"mkldnn._convolution_pointwise, plain weights:     {per_call_us(torch_call(w)):7.1f} us per call")
    print(f"mkldnn._convolution_pointwise, prepacked weights: {per_call_us(torch_call(packed)):7.1f} us per call")

    import onnxruntime as ort  # noqa: PLC0415

    conv = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 1), torch.nn.ReLU6())
    data = io.BytesIO()
    torch.onnx.export(conv, (torch.randn(1, 16, 4, 4),), data, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(data.getvalue(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: torch.randn(1, 16, 4, 4).numpy()}
    run_us = per_call_us(lambda: session.run(None, feed))
    print(f"ONNX Runtime {ort.__version__}, whole run():          {run_us:7.1f} us per call")


if __name__ == "__main__":
    main()

"""The pointwise convs of the compiled training step, each product timed alone: oneDNN's forward,
input gradient and weight gradient, and the weight gradient in the two other forms PyTorch offers
(docs/training.md, "The pointwise convs' weight gradient").

    .venv/bin/python benchmarks/bench_pointwise_gradients.py --json docs/bench/pointwise_gradients_zen4.json

Every distinct pointwise layer of the network (from ``mobilenet.arch``; default 1.0-224) at the
training batch (default 32), fp32, 2 threads, freed memory kept and OpenMP's wait policy the
environment's (as ``mobilenet train`` runs). Rows per layer:

* forward, input gradient, weight gradient: ``convolution_backward`` as the compiled step calls it
  (channels_last, oneDNN);
* weight gradient NCHW: the same call on contiguous tensors;
* weight gradient as a matrix product: (output gradient)ᵀ @ input on the channels_last views
  ((N·H·W) × C), in ATen's ``mm`` (MKL's sgemm), which inductor also calls for it.

All rows of all layers are timed in settled blocks in one random order per round
(``mobilenet.deploy.timing``). The totals count each layer as often as the network has it.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row (default 1)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under: one pool

    import torch

    from mobilenet.arch import ArchConfig, layers
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_rounds
    from mobilenet.files import write_text

    torch.set_num_threads(args.threads)
    arch = ArchConfig(alpha=args.alpha, resolution=args.resolution)
    shapes = Counter((layer.in_channels, layer.out_channels, layer.in_size)
                     for layer in layers(arch) if layer.kind == "pointwise")

    def convolution_backward(grad, x, weight, mask):  # noqa: ANN001, ANN202 - as the step's graph calls it
        return lambda: torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    rows: list[tuple[tuple[int, int, tuple[int, int]], str]] = []
    calls = []
    for shape in shapes:
        cin, cout, (h, w) = shape
        for layout, memory_format in (("channels_last", torch.channels_last), ("NCHW", torch.contiguous_format)):
            x = torch.randn(args.batch_size, cin, h, w).contiguous(memory_format=memory_format)
            weight = torch.randn(cout, cin, 1, 1).contiguous(memory_format=memory_format)
            grad = torch.randn(args.batch_size, cout, h, w).contiguous(memory_format=memory_format)
            if layout == "channels_last":
                rows += [(shape, "forward"), (shape, "input gradient"), (shape, "weight gradient")]
                calls += [lambda x=x, weight=weight: torch.nn.functional.conv2d(x, weight),
                          convolution_backward(grad, x, weight, [True, False, False]),
                          convolution_backward(grad, x, weight, [False, True, False])]
                x_rows = x.permute(0, 2, 3, 1).reshape(-1, cin)  # views: channels_last is (N·H·W) × C
                grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, cout)
                rows.append((shape, "weight gradient as a matrix product"))
                calls.append(lambda g=grad_rows, x=x_rows: g.t() @ x)
            else:
                rows.append((shape, "weight gradient NCHW"))
                calls.append(convolution_backward(grad, x, weight, [False, True, False]))
    rounds = time_rounds(calls, seconds=args.seconds, min_runs=5, warmup=1)

    print(f"{cpu_info().summary()}; {args.threads} threads; {arch.name}, batch {args.batch_size}, fp32; "
          f"the machine's pace moved {rounds.drift():.2f}x while timing")
    results, totals = [], Counter()
    for (shape, row), times in zip(rows, rounds.samples, strict=True):
        cin, cout, (h, w) = shape
        median = sorted(times)[len(times) // 2]
        gflops = 2 * args.batch_size * h * w * cin * cout / median / 1e9
        totals[row] += median * 1e3 * shapes[shape]
        results.append({"in_channels": cin, "out_channels": cout, "size": [h, w], "count": shapes[shape],
                        "row": row, "median_ms": median * 1e3, "gflop_per_s": gflops})
        print(f"  {cin:5d} -> {cout:5d} at {h:3d} x {w:3d} (x{shapes[shape]})  {row:38s} "
              f"{median * 1e3:7.2f} ms  {gflops:6.1f} GFLOP/s")
    print("the network's pointwise layers together:")
    for row, total in totals.items():
        print(f"  {row:38s} {total:7.1f} ms")
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().summary(), "arch": arch.to_dict(),
                                          "batch_size": args.batch_size, "threads": args.threads,
                                          "torch": torch.__version__, "machine_drift": rounds.drift(),
                                          "rows": results, "totals_ms": dict(totals)}, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

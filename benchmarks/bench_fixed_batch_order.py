"""A fixed-batch file's batch, converted a slice at a time before each call (what LiteRT's and
ExecuTorch's predictors do, ``NativeInput.fixed_batches``) against converted whole before the
calls (what they did until 2026-12-06), and against as many calls of one image (what the latency
model, calibrated at batch 1, composes), in one interleaved run (docs/latency.md, LiteRT int8 at
batch 8 on the Zen 4).

    .venv/bin/python benchmarks/bench_fixed_batch_order.py --runtime litert --precision int8 --threads 1 \\
        --archs 0.3-240 1.1-240 --batch-size 8

"Converted whole first" is the predictor called on its batch already converted
(``predictor.native_input``), which it passes through slice by slice: the old order, through
the same calls. Networks have random weights, kept across runs (``latency.backends.kept_predictor``).
"""

from __future__ import annotations

import argparse

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", choices=("litert", "executorch"), default="litert")
    p.add_argument("--precision", default="int8")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--archs", nargs="+", default=["0.3-240", "1.1-240"], metavar="ALPHA-RES")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (default 3)")
    args = p.parse_args()
    restart_keeping_freed_memory()

    import torch

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.latency.backends import BACKENDS, kept_predictor
    from mobilenet.preprocess import sample_photos

    rows = []
    for name in args.archs:
        alpha, resolution = name.split("-")
        cfg = ArchConfig(alpha=float(alpha), resolution=int(resolution)).workload()
        predictor = kept_predictor(cfg, args.runtime, args.precision, threads=args.threads,
                                   calibration_images=sample_photos() if args.precision == "int8" else None,
                                   distributions=BACKENDS[args.runtime].distributions)
        batch = torch.rand(args.batch_size, cfg.in_channels, *cfg.resolution)
        images = [batch[i : i + 1].clone() for i in range(args.batch_size)]
        rows += [
            (name, "each slice converted before its call", lambda p=predictor, b=batch: p(b)),
            (name, "converted whole first, then the calls", lambda p=predictor, b=batch: p(p.native_input(b))),
            (name, f"{args.batch_size} calls of one image", lambda p=predictor, i=images: [p(x) for x in i]),
        ]
    samples = time_interleaved([call for *_, call in rows], seconds=args.seconds, min_runs=5)
    print(f"{cpu_info().summary()}; {args.runtime} {args.precision}, {args.threads} thread(s), "
          f"batch {args.batch_size}")
    for (name, what, _), times in zip(rows, samples, strict=True):
        print(f"  {name:8s} {what:40s} {sorted(times)[len(times) // 2] * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()

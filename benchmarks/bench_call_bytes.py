"""What a runtime's call costs per byte handed over, by op, channels and size.

The latency model fits ExecuTorch fp32's cost per byte of input and output from its call probe,
one 1x1 conv on a 3-channel image at 8, 56 and 112 px (docs/latency.md §2, §4). Taken off every
probe at that rate, the stem, strided depthwise and pool probes fit with 61-70% error. This
times, interleaved in one run (settled blocks, random order), ops that do next to no arithmetic
per byte, each on 3, 32 and 256 channels at inputs of about 37 KB to 2.4 MB:

* ``relu6``: its output as large as its input;
* ``pool``: a global average pool, its output C floats (an input handed over, next to nothing back);
* ``conv1x1``: the call probe's 1x1 conv, C to C channels.

Each built as the latency model's probes are (``Backend.load``: NHWC in and out, kept under the
cache directory), in every runtime named. Per MB of input: a cost that follows the input alone
shows as ``pool`` equal to ``relu6``; one that follows the channels, as 3 channels apart.

    .venv/bin/python benchmarks/bench_call_bytes.py [--runtimes executorch litert] [--json F]

Run it with nothing else running; converting the ops takes about a minute the first time.
"""

from __future__ import annotations

import argparse
import json
import sys

OPS = ("relu6", "pool", "conv1x1")
CHANNELS = (3, 32, 256)
INPUT_KB = (37, 150, 600, 2400)


def op_module(op: str, channels: int):  # noqa: ANN201 - torch is imported late
    from torch import nn

    if op == "relu6":
        return nn.ReLU6()
    if op == "pool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU6())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", nargs="+", default=["executorch", "litert"])
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per cell")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import Timing, time_interleaved
    from mobilenet.latency.backends import BACKENDS

    torch.manual_seed(0)
    cells, rows = [], []
    for runtime in args.runtimes:
        backend = BACKENDS[runtime]("fp32", 1)
        for op in OPS:
            for channels in CHANNELS:
                for kb in INPUT_KB:
                    side = round((kb * 1024 / 4 / channels) ** 0.5)
                    shape = (1, channels, side, side)
                    print(f"[call-bytes] building {runtime} {op} on {channels} channels at {side}x{side}",
                          file=sys.stderr, flush=True)
                    at = backend.load(op_module(op, channels).eval(), shape, largest_side=max(side, 8))
                    cells.append(at(shape).run)
                    rows.append({"runtime": runtime, "op": op, "channels": channels, "side": side,
                                 "input_bytes": channels * side * side * 4})
    print(f"[call-bytes] timing {len(cells)} cells interleaved, {args.seconds} s each", file=sys.stderr, flush=True)
    for row, seconds in zip(rows, time_interleaved(cells, seconds=args.seconds, min_runs=20), strict=True):
        row["median_us"] = Timing.from_seconds(seconds).median_ms * 1e3
        row["us_per_mb_input"] = row["median_us"] / (row["input_bytes"] / 1e6)
    print(f"{'runtime':10s} {'op':8s} {'C':>4s} {'side':>5s} {'input KB':>9s} {'us':>8s} {'us/MB in':>9s}")
    for r in rows:
        print(f"{r['runtime']:10s} {r['op']:8s} {r['channels']:4d} {r['side']:5d} {r['input_bytes'] / 1e3:9.1f} "
              f"{r['median_us']:8.1f} {r['us_per_mb_input']:9.1f}")
    if args.json:
        from mobilenet.files import write_text

        report = {"command": " ".join(["benchmarks/bench_call_bytes.py", *sys.argv[1:]]),
                  "cpu": cpu_info().summary(), "rows": rows}
        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

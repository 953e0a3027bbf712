"""Which channel counts a runtime's fp32 convs run fast on: single 1x1 convs by input and output
channels, and depthwise convs by channels, per mult-add.

The latency model gives a conv kind a blocked and an unblocked twin where the runtime runs whole
blocks of channels faster (``Backend.channel_blocks``). This finds the block, in one interleaved
run (settled blocks, random order), each op built as the latency model's probes are
(``Backend.load``: NHWC in and out, kept under the cache directory):

* ``--pairs``: one 1x1 conv + ReLU6 per input x output pair at ``--size``, so that input and
  output channels are told apart (XNNPACK on the Zen 5: the output channels decide, in whole
  32s; docs/latency.md §4, 2026-12-05);
* ``--depthwise``: chains of 12 and of 4 depthwise 3x3 convs + ReLU6 at ``--depthwise-size``,
  differenced, so that the call and what it hands over cancel: a layer's own cost.

    .venv/bin/python benchmarks/bench_channel_blocks.py --runtime executorch \\
        --pairs 352x352 352x368 368x352 368x368 360x360 384x384 --depthwise 176 179 184 192 [--json F]

Run it with nothing else running; converting the ops takes a few seconds each the first time.
"""

from __future__ import annotations

import argparse
import json
import sys

CHAINS = (4, 12)  # the differenced chain lengths


def pair(text: str) -> tuple[int, int]:
    c_in, _, c_out = text.partition("x")
    return int(c_in), int(c_out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtime", default="executorch", help="a runtime with a latency backend (executorch, litert…)")
    p.add_argument("--pairs", nargs="*", type=pair, default=[], help="1x1 convs, INxOUT channels")
    p.add_argument("--size", type=int, default=14, help="the 1x1 convs' map side")
    p.add_argument("--depthwise", nargs="*", type=int, default=[], help="depthwise channels, chains differenced")
    p.add_argument("--depthwise-size", type=int, default=28, help="the depthwise chains' map side")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.5, help="timed seconds per cell")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import numpy as np
    import torch
    from torch import nn

    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.latency.backends import BACKENDS

    torch.manual_seed(0)
    backend = BACKENDS[args.runtime]("fp32", args.threads)
    cells, keys = [], []

    def add(key: tuple, module: nn.Module, channels: int, size: int) -> None:
        for m in module.modules():  # the probes' scale of weights: no denormals, no saturation
            if isinstance(m, nn.Conv2d):
                nn.init.uniform_(m.weight, -0.1, 0.1)
                nn.init.uniform_(m.bias, -0.1, 0.1)
        shape = (1, channels, size, size)
        print(f"building {key}", file=sys.stderr)
        cells.append(backend.load(module.eval(), shape, size)(shape).run)
        keys.append(key)

    for c_in, c_out in args.pairs:
        add(("pointwise", c_in, c_out), nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU6()), c_in, args.size)
    for channels in args.depthwise:
        for length in CHAINS:
            chain = [nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.ReLU6())
                     for _ in range(length)]
            add(("depthwise", channels, length), nn.Sequential(*chain), channels, args.depthwise_size)
    medians = dict(zip(keys, (float(np.median(s)) for s in time_interleaved(cells, seconds=args.seconds,
                                                                            min_runs=10)), strict=True))

    rows = []
    print(f"CPU: {cpu_info().summary()}\n{args.runtime} fp32, {args.threads} thread(s), batch 1")
    for c_in, c_out in args.pairs:
        seconds = medians["pointwise", c_in, c_out]
        ps = seconds * 1e12 / (c_in * c_out * args.size**2)
        rows.append({"op": "pointwise", "in": c_in, "out": c_out, "size": args.size, "us": seconds * 1e6,
                     "ps_per_mult_add": ps})
        print(f"  1x1 {c_in:5d} -> {c_out:5d} at {args.size}x{args.size}: {seconds * 1e6:8.1f} us, "
              f"{ps:6.2f} ps a mult-add")
    short, long = CHAINS
    for channels in args.depthwise:
        per_layer = (medians["depthwise", channels, long] - medians["depthwise", channels, short]) / (long - short)
        ps = per_layer * 1e12 / (9 * channels * args.depthwise_size**2)
        rows.append({"op": "depthwise", "channels": channels, "size": args.depthwise_size,
                     "chains_us": {str(n): medians["depthwise", channels, n] * 1e6 for n in CHAINS},
                     "layer_us": per_layer * 1e6, "ps_per_mult_add": ps})
        side = f"{args.depthwise_size}x{args.depthwise_size}"
        print(f"  depthwise {channels:5d} at {side}: a layer {per_layer * 1e6:7.1f} us, "
              f"{ps:6.2f} ps a mult-add (chains of {long} and {short} differenced)")
    if args.json:
        from mobilenet.files import write_text

        report = {"command": " ".join(["benchmarks/bench_channel_blocks.py", *sys.argv[1:]]),
                  "cpu": cpu_info().summary(), "runtime": args.runtime, "threads": args.threads, "rows": rows}
        write_text(args.json, json.dumps(report, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

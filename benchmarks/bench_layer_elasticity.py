"""How much each layer slows when the machine does: the guest's slow spells, layer by layer.

One network, built as the latency calibration builds its networks (``probe_module`` and the
runtime's latency backend), is timed (the median of a block of calls) and then profiled layer by
layer (the backend's own profile, as the calibration reads it), round after round. Across rounds
the machine's speed drifts. A layer's *elasticity* is the slope of its log time against the
call's log time: 1 if it slows as the network does, under 1 if it slows less (compute-bound
layers), over 1 if more (layers waiting on memory). On the Zen 5 guest (PyTorch, 0.6-240) the memory-bound layers
(stem, pool, classifier) came out at 1.3–2.9 and the compute-bound pointwise convs at 0.3–0.6: the
guest's slow spells are on the memory side, and they move the layers' time shares between two
measurements minutes apart (docs/latency.md §4, "PyTorch's shares, looked into")::

    .venv/bin/python benchmarks/bench_layer_elasticity.py --runtime torch --alpha 0.6 --resolution 240 \
        --rounds 30 [--json F]

Runtimes: those whose latency backend profiles networks (torch where it runs oneDNN Graph's
program, onnxruntime, openvino, executorch), fp32.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from mobilenet.cpu import cpu_info
from mobilenet.deploy.timing import time_interleaved
from mobilenet.files import write_text
from mobilenet.latency import RUNTIMES
from mobilenet.latency.backends import BACKENDS, probe_module
from mobilenet.latency.model import kernel_of
from mobilenet.latency.probes import NetworkProbe


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    backend = BACKENDS[args.runtime]("fp32", args.threads)
    probe = NetworkProbe(args.alpha, (args.resolution,))
    shape = probe.input_shape(args.resolution)
    cell = backend.load(probe_module(probe, args.resolution, fixed_pads=backend.fixed_pads), shape)(shape)
    if cell.profile is None:
        print(f"{args.runtime}'s latency backend does not profile networks here", file=sys.stderr)
        return 2
    calls, layers = [], []
    for i in range(args.rounds):
        calls.append(float(np.median(time_interleaved([cell.run], seconds=args.seconds, min_runs=10)[0])))
        layers.append(list(cell.profile(args.seconds)))
        print(f"round {i + 1}/{args.rounds}: call {calls[-1] * 1e3:.3f} ms", file=sys.stderr)
    rows = elasticities(probe, args.resolution, np.array(calls), np.array(layers), backend.channel_blocks)
    name = probe.arch_cfg(args.resolution).name
    print(f"{cpu_info().summary()}; {args.runtime} fp32, {args.threads} thread(s), {name}")
    print(f"the call ranged {min(calls) * 1e3:.3f}-{max(calls) * 1e3:.3f} ms over {args.rounds} rounds")
    for row in rows:
        print(f"  {row['layer']:<14} {row['kernel']:<24} {row['median_us']:8.1f} us  "
              f"elasticity {row['elasticity']:+.2f}")
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().to_dict(), "runtime": args.runtime,
                                          "threads": args.threads, "model": name,
                                          "call_ms": [c * 1e3 for c in calls], "layers": rows}, indent=1))
    return 0


def elasticities(probe: NetworkProbe, size: int, calls: np.ndarray, layers: np.ndarray,
                 channel_blocks: dict[str, int]) -> list[dict[str, object]]:
    """Per layer of ``probe`` at ``size``: its kernel, median time and elasticity (the slope of
    its log time on the log of the call's time, one row of ``layers`` per call)."""
    out = []
    for j, layer in enumerate(probe.layers(size)):
        slope = np.polyfit(np.log(calls), np.log(np.maximum(layers[:, j], 1e-9)), 1)[0]
        out.append({"layer": layer.name, "kernel": kernel_of(layer, channel_blocks),
                    "median_us": float(np.median(layers[:, j]) * 1e6), "elasticity": float(slope)})
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.add_argument("--alpha", type=float, default=0.6)
    p.add_argument("--resolution", type=int, default=240)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.7, help="timed and profiled seconds per round")
    p.add_argument("--json", help="write the rounds and the layers' elasticities here")
    args = p.parse_args(argv)
    if args.rounds < 3:
        p.error(f"--rounds must be at least 3 to fit a slope, got {args.rounds}")
    return args


if __name__ == "__main__":
    sys.exit(main())

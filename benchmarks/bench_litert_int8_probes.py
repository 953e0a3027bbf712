"""LiteRT's int8 and fp32 probe chains side by side: what the latency model's roofline cannot fit.

The LiteRT int8 calibration fits its pointwise probes with 43-44% error where the fp32 ones fit
within a few percent (docs/latency.md). This times the calibration's own pointwise (or
depthwise, or stem...) chains at each of their sizes, int8 then fp32, one thread, interleaved
per probe in settled blocks, and prints each one's mult-add rate and bytes per second: a kernel
the roofline describes shows one rate where it computes and one bandwidth where it waits on
memory.

    .venv/bin/python benchmarks/bench_litert_int8_probes.py pointwise --json docs/bench/litert_probes.json

Probes are converted once and kept (``latency.backends.kept_build``); a first run converts them.
"""

from __future__ import annotations

import argparse
import json
import statistics

from mobilenet.deploy.timing import time_interleaved
from mobilenet.latency.backends import LiteRtBackend, probe_module
from mobilenet.latency.probes import NetworkProbe, Probe

CHAINS = ((16, (28, 56, 112)), (40, (28, 56, 112)), (120, (14, 28, 56)), (300, (7, 14, 28)), (1000, (4, 7, 10)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kernel", nargs="?", default="pointwise", help="pointwise, depthwise, conv, or network (0.3)")
    p.add_argument("--json", help="write {precision/kernel/channels/size: median ms} here")
    args = p.parse_args()
    out = {}
    for precision in ("int8", "fp32"):
        backend = LiteRtBackend(precision, 1)
        if args.kernel == "network":
            probes: list[Probe | NetworkProbe] = [NetworkProbe(0.3, (112, 144, 176, 208, 240))]
        else:
            probes = [Probe(args.kernel, c, sizes) for c, sizes in CHAINS]
        for probe in probes:
            first = probe.sizes[0]
            shaper = backend.load(probe_module(probe, first, fixed_pads=True), probe.input_shape(first),
                                  largest_side=max(probe.sizes))
            cells = [shaper(probe.input_shape(s)) for s in probe.sizes]
            samples = time_interleaved([c.run for c in cells], seconds=1.0, min_runs=10)
            for size, times in zip(probe.sizes, samples):
                layers = probe.layers(size, 1, 1 if precision == "int8" else 4)
                macs = sum(x.mult_adds for x in layers)
                moved = sum(x.in_bytes + x.out_bytes for x in layers)
                ms = statistics.median(times) * 1e3
                print(f"{precision} {probe.describe()[:40]:40s} size {size:4d}: {ms:8.3f} ms  "
                      f"{macs / ms / 1e6:8.2f} GMAC/s  {moved / ms / 1e6:7.2f} GB/s", flush=True)
                channels = probe.channels if isinstance(probe, Probe) else probe.alpha
                out[f"{precision}/{probe.kernel}/{channels}/{size}"] = ms
    if args.json:
        from mobilenet.files import write_text

        write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()

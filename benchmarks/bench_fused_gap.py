"""How steady is the gap between ``optimize``'s compiled program and its calls made from Python?

The latency model times PyTorch's probes as the compiled program's calls made from Python
(``mobilenet.fused_ops``) and takes off a gap, ``per call + fraction of the time``, fitted on two
compiled reference networks (``fused_ops.References.gap``). This script times six networks both
ways, interleaved in settled blocks, over several rounds, and fits the same line to all six in
each round: if the fitted line moves between rounds as much as the two-reference line does, more
references would not steady it, and longer timing would.

    .venv/bin/python benchmarks/bench_fused_gap.py --threads 1 [--backend onednn-graph] --json docs/bench/fused_gap.json

(``--backend onednn-graph``: against oneDNN Graph's program, optimize's default on AVX-512 CPUs
since 2026-12-04, docs/pytorch.md.)

The first run compiles the six networks (about 20 s each; cached after). Run it with nothing
else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from functools import partial

import numpy as np

NETWORKS = ((0.25, 128), (0.25, 224), (0.5, 160), (0.75, 192), (1.0, 128), (1.0, 224))
# The two the calibration compiles (fused_ops.REFERENCES).
REFERENCES = ((0.25, 128), (1.0, 224))


def line(fused: np.ndarray, gap: np.ndarray) -> tuple[float, float]:
    """(intercept ms, slope) of gap = intercept + slope * fused, by least squares."""
    design = np.stack([np.ones_like(fused), fused], axis=1)
    intercept, slope = np.linalg.lstsq(design, gap, rcond=None)[0]
    return float(intercept), float(slope)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--backend", default="inductor", choices=("inductor", "onednn-graph"),
                   help="the program the fused ops are held against (optimize's backend)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per call and round")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()

    import torch

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.fused_ops import _bare as bare  # the call the calibration times, as it times it
    from mobilenet.fused_ops import fused_ops, reference_network
    from mobilenet.optimized import DTYPES, optimize
    from mobilenet.prepare import inference_copy

    torch.set_num_threads(args.threads)

    calls, names = [], []
    for alpha, size in NETWORKS:
        model = reference_network(ArchConfig(alpha=alpha, resolution=size, padding="tf"))
        compiled = optimize(model, precision=args.precision, batch_size=1, backend=args.backend,
                            log=lambda line: print(line, file=sys.stderr))
        shape = (1, 3, size, size)
        program = fused_ops(inference_copy(model), shape, DTYPES[args.precision])
        x = torch.rand(shape)
        calls += [partial(bare, compiled.net, x), partial(bare, program, x)]
        names.append(f"{alpha:g}-{size}")
    rounds = []
    for at in range(args.rounds):
        samples = time_interleaved(calls, seconds=args.seconds, min_runs=10)
        medians = [statistics.median(s) * 1e3 for s in samples]
        compiled_ms, fused_ms = np.array(medians[0::2]), np.array(medians[1::2])
        gap = fused_ms - compiled_ms
        refs = [names.index(f"{a:g}-{s}") for a, s in REFERENCES]
        all_six, two = line(fused_ms, gap), line(fused_ms[refs], gap[refs])
        print(f"round {at}: all six: gap = {all_six[0]:.3f} ms + {all_six[1]:.3f} x fused; "
              f"the two references: {two[0]:.3f} ms + {two[1]:.3f} x fused")
        for name, c, f, g in zip(names, compiled_ms, fused_ms, gap):
            print(f"  {name:9s} compiled {c:7.3f} ms  fused {f:7.3f} ms  gap {g:6.3f} ms ({g / f:5.1%})")
        rounds.append({"networks": [{"model": n, "compiled_ms": c, "fused_ms": f}
                                    for n, c, f in zip(names, compiled_ms.tolist(), fused_ms.tolist())],
                       "all_six": {"intercept_ms": all_six[0], "slope": all_six[1]},
                       "two_references": {"intercept_ms": two[0], "slope": two[1]}})
    if args.json:
        from mobilenet.files import write_text

        report = {"command": " ".join(["benchmarks/bench_fused_gap.py", *sys.argv[1:]]),
                  "cpu": cpu_info().summary(), "threads": args.threads, "precision": args.precision,
                  "backend": args.backend,
                  "torch": torch.__version__, "seconds_per_call": args.seconds, "rounds": rounds}
        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

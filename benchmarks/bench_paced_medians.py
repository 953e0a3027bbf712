"""Each call read at the rounds' typical pace, against its plain median (``timing.Rounds.paced_medians``).

The held-out grid of ``bench_latency_model.py`` (ONNX Runtime fp32 by default, batch 1) timed as a
calibration times its probes (settled blocks of a quarter of ``--seconds``, five at the least, every
network in every round), ``--repeats`` times over. Each network's time is read twice from the same
blocks: the plain median of its calls, and the median of its blocks each divided by the machine's
pace in the second it ran. A reading that follows the network rather than the machine's luck

* varies less between repeats (each repeat's overall level taken out: the machine may run slower
  in one repeat than in the next, and no reading of one repeat can know it);
* never has a larger network (a wider α or a larger resolution) measure faster than a smaller one.

Run it on a machine whose speed moves (``bench_machine_drift.py`` says so) to see the two apart; on
a steady one they agree. docs/latency.md §2 records a run::

    .venv/bin/python benchmarks/bench_paced_medians.py [--runtime onnxruntime] [--repeats 4] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.timing import time_rounds
from mobilenet.files import write_text
from mobilenet.latency import RUNTIMES
from mobilenet.latency.calibrate import SECONDS_PER_SHAPE
from mobilenet.model import MobileNetV1

ALPHAS = (0.3, 0.45, 0.6, 0.85, 1.1)
RESOLUTIONS = (112, 144, 176, 208, 240)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seconds", type=float, default=SECONDS_PER_SHAPE,
                   help=f"timed seconds per network and repeat (default {SECONDS_PER_SHAPE:g}, a calibration's)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.repeats < 2:
        p.error(f"--repeats must be at least 2 (the spread is between repeats), got {args.repeats}")
    print(f"CPU: {cpu_info().summary()}")
    print(f"command: {' '.join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}")
    grid = [ArchConfig(alpha=a, resolution=r) for a in ALPHAS for r in RESOLUTIONS]
    calls = []
    for cfg in grid:
        torch.manual_seed(0)
        predictor = make_predictor(MobileNetV1(cfg).eval(), args.runtime, "fp32", threads=args.threads)
        x = torch.rand(1, 3, *cfg.resolution)
        calls.append(lambda p=predictor, x=x: p(x))
    plain, paced, drifts = [], [], []
    for repeat in range(args.repeats):
        rounds = time_rounds(calls, seconds=args.seconds, min_runs=5, warmup=2, block_s=args.seconds / 4)
        plain.append([float(np.median(s)) for s in rounds.samples])
        paced.append(rounds.paced_medians())
        drifts.append(rounds.drift())
        print(f"repeat {repeat + 1}: the machine's pace moved {drifts[-1]:.2f}x, "
              f"{len(rounds.blocks) / len(calls):.1f} blocks a network", flush=True)
    result = {"runtime": args.runtime, "threads": args.threads, "seconds": args.seconds, "drifts": drifts,
              "models": [cfg.name for cfg in grid], "plain_s": plain, "paced_s": paced}
    for name, medians in (("plain", plain), ("paced", paced)):
        result[f"{name}_spread"] = spread(medians)
        result[f"{name}_inversions"] = inversions(medians)
        print(f"{name:>5}: spread between repeats {result[f'{name}_spread']:.1%}, "
              f"a larger network measured faster {result[f'{name}_inversions']} times")
    if args.json:
        write_text(args.json, json.dumps(result, indent=1) + "\n")
        print(f"written: {args.json}")
    return 0


def spread(medians: list[list[float]]) -> float:
    """The root mean square, over the networks, of each one's standard deviation of log time between
    repeats, each repeat's mean log time taken out first."""
    logs = np.log(np.array(medians))
    logs -= logs.mean(axis=1, keepdims=True)
    return float(np.sqrt(np.mean(logs.var(axis=0, ddof=1))))


def inversions(medians: list[list[float]]) -> int:
    """How often, over the repeats, a network measured faster than its neighbour one step smaller in
    α or resolution."""
    count = 0
    for repeat in medians:
        times = np.array(repeat).reshape(len(ALPHAS), len(RESOLUTIONS))
        count += int((np.diff(times, axis=0) < 0).sum() + (np.diff(times, axis=1) < 0).sum())
    return count


if __name__ == "__main__":
    sys.exit(main())

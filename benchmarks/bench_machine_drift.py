"""Is this machine steady enough to judge a latency model? The same work, timed again and again.

A latency model predicts one time per network; if the machine itself runs the same network at
different speeds from one few-second spell to the next (a virtual machine whose host shares its
caches and memory with other guests), no model can be within ±10% of every measurement, and a
calibration made in one spell mispredicts the next. This times, every few seconds for a while:

* two networks in ONNX Runtime, 1 thread (a thin one, 0.3-112, whose depthwise layers wait on
  memory, and 0.5-128), each the median of a short settled block;
* a 512x512 float32 matrix product in PyTorch, 1 thread (compute-bound: it stays in the caches).

and prints each sample, then each one's spread (the slowest median over the quickest). Run it
with nothing else running::

    .venv/bin/python benchmarks/bench_machine_drift.py [--seconds 120] [--every 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.timing import time_interleaved
from mobilenet.files import write_text
from mobilenet.model import MobileNetV1

NETWORKS = ((0.3, 112), (0.5, 128))
GEMM = 512


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="how long to keep sampling")
    p.add_argument("--every", type=float, default=3.0, help="seconds between samples")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    print(f"CPU: {cpu_info().summary()}")
    print(f"command: {' '.join(sys.argv)}")
    torch.set_num_threads(1)
    names, calls = [], []
    for alpha, size in NETWORKS:
        cfg = ArchConfig(alpha=alpha, resolution=size)
        predictor = make_predictor(MobileNetV1(cfg).eval(), "onnxruntime", "fp32", threads=1)
        x = torch.rand(1, 3, size, size)
        names.append(f"onnxruntime {cfg.name}")
        calls.append(lambda predictor=predictor, x=x: predictor(x))
    a = torch.rand(GEMM, GEMM)
    names.append(f"sgemm {GEMM} (GFLOP/s)")
    samples: list[list[float]] = [[] for _ in names]
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        medians = [float(np.median(s)) * 1e3 for s in time_interleaved(calls, seconds=0.5, min_runs=5)]
        gemm_s = min(_timed(lambda: a @ a) for _ in range(20))
        values = [*medians, 2 * GEMM**3 / gemm_s / 1e9]
        for column, value in zip(samples, values):
            column.append(value)
        print(f"{time.monotonic() - started:5.0f} s  " + "  ".join(f"{n} {v:.3f}" for n, v in zip(names, values)),
              flush=True)
        time.sleep(args.every)
    print("\nspread (slowest / quickest sample):")
    summary = {}
    for name, column in zip(names, samples):
        slowest, quickest = (min(column), max(column)) if "GFLOP" in name else (max(column), min(column))
        summary[name] = {"samples": column, "spread": slowest / quickest if "GFLOP" not in name else quickest / slowest}
        print(f"  {name:32} {summary[name]['spread']:.2f}x  (median {np.median(column):.3f})")
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().summary(), "series": summary}, indent=1))
    return 0


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())

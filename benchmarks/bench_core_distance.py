"""Why two threads run at two speeds on a small virtual machine: how far apart its two vCPUs are.

A parallel network call synchronises its threads at every layer, and each synchronisation moves
cache lines from one core to the other. On a 2-vCPU guest the host may run the two vCPUs on
cores that share a cache (a cache line's round trip of tens of nanoseconds) or on cores that do
not (hundreds), and move them between the two placements. Independent single-thread work does
not notice; a 2-thread call of a small network, with dozens of layers, does.

Every window this times, in turn:

* a lone ONNX Runtime session of 0.25-128 at 2 threads, then at 1 thread (the median of a short
  block each);
* the round trip of one cache line between two threads pinned to two of the process's CPUs
  (a small C program, compiled here with the system's C compiler: Python is too slow to see it).

and prints each window, then the 2-thread times split by the round trip (below and above the
geometric mean of its fastest and slowest windows) and their rank correlation. Run it with
nothing else running::

    .venv/bin/python benchmarks/bench_core_distance.py [--minutes 10] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.formats.onnx import export_onnx
from mobilenet.deploy.runtimes.ort import OnnxRuntimePredictor
from mobilenet.files import write_text
from mobilenet.model import MobileNetV1

PING_PONG = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static _Atomic int flag __attribute__((aligned(64)));
static int rounds, cpu_a, cpu_b;
static void pin(int cpu) {
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}
static void *pong(void *unused) {
    pin(cpu_b);
    for (int i = 0; i < rounds; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 1) {}
        atomic_store_explicit(&flag, 0, memory_order_release);
    }
    return unused;
}
int main(int argc, char **argv) {
    rounds = atoi(argv[1]); cpu_a = atoi(argv[2]); cpu_b = atoi(argv[3]);
    pthread_t other; pin(cpu_a); pthread_create(&other, 0, pong, 0);
    struct timespec start, end; clock_gettime(CLOCK_MONOTONIC, &start);
    for (int i = 0; i < rounds; i++) {
        atomic_store_explicit(&flag, 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 0) {}
    }
    clock_gettime(CLOCK_MONOTONIC, &end); pthread_join(other, 0);
    printf("%.1f\n", ((end.tv_sec - start.tv_sec) * 1e9 + (end.tv_nsec - start.tv_nsec)) / rounds);
    return 0;
}
"""
ROUNDS = 200_000  # about 20-80 ms a window


def compiled_ping_pong(folder: Path) -> Path:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench_core_distance: needs a C compiler (cc or gcc, or CC=...) for its ping-pong probe")
    source, binary = folder / "ping_pong.c", folder / "ping_pong"
    source.write_text(PING_PONG)
    subprocess.run([compiler, "-O2", "-pthread", "-o", str(binary), str(source)], check=True)
    return binary


def median_ms(predictor: OnnxRuntimePredictor, x: torch.Tensor, seconds: float) -> float:
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        predictor(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="how long to watch (the spells last minutes)")
    p.add_argument("--window", type=float, default=1.5, help="seconds of 2-thread calls a window")
    p.add_argument("--json", metavar="FILE", help="also write every window as JSON")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("bench_core_distance: this process may run on one CPU only; two threads need two")
    cfg = ArchConfig(alpha=0.25, resolution=128)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="mobilenet-core-distance-") as tmp:
        ping_pong = compiled_ping_pong(Path(tmp))
        data = export_onnx(MobileNetV1(cfg).eval(), Path(tmp) / "model.onnx").read_bytes()
        two, one = OnnxRuntimePredictor(data, None, 2), OnnxRuntimePredictor(data, None, 1)
        x = torch.rand(1, 3, *cfg.resolution)
        for predictor in (two, one):
            median_ms(predictor, x, 0.5)
        print(f"CPU: {cpu_info().summary()}; ping-pong between CPUs {cpus[0]} and {cpus[1]}")
        print(f"command: {' '.join(sys.argv)}")
        print(f"{'window':>6} {'2 threads ms':>12} {'1 thread ms':>11} {'round trip ns':>13}")
        windows = []
        end = time.time() + args.minutes * 60
        while time.time() < end:
            row = {"at_s": round(args.minutes * 60 - (end - time.time()), 1),
                   "two_threads_ms": median_ms(two, x, args.window), "one_thread_ms": median_ms(one, x, 0.3)}
            out = subprocess.run([str(ping_pong), str(ROUNDS), str(cpus[0]), str(cpus[1])], capture_output=True,
                                 text=True, check=True)
            row["round_trip_ns"] = float(out.stdout)
            windows.append(row)
            print(f"{len(windows):>6} {row['two_threads_ms']:>12.3f} {row['one_thread_ms']:>11.3f} "
                  f"{row['round_trip_ns']:>13.0f}", flush=True)
    summary = summarize(windows)
    print(json.dumps(summary, indent=2))
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().summary(), "command": " ".join(sys.argv),
                                          "summary": summary, "windows": windows}, indent=2))
    return 0


def summarize(windows: list[dict[str, float]]) -> dict[str, object]:
    """The 2-thread and 1-thread medians of the windows whose round trip was short against those
    whose round trip was long, and the rank correlation of round trip and 2-thread time."""
    trips = np.array([w["round_trip_ns"] for w in windows])
    two = np.array([w["two_threads_ms"] for w in windows])
    one = np.array([w["one_thread_ms"] for w in windows])
    split = float(np.sqrt(trips.min() * trips.max()))
    near, far = trips < split, trips >= split

    def ranks(a: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(a)).astype(float)

    def side(mask: np.ndarray) -> dict[str, float | int | None]:
        if not mask.any():
            return {"windows": 0, "round_trip_ns": None, "two_threads_ms": None, "one_thread_ms": None}
        return {"windows": int(mask.sum()), "round_trip_ns": float(np.median(trips[mask])),
                "two_threads_ms": float(np.median(two[mask])), "one_thread_ms": float(np.median(one[mask]))}

    return {"split_ns": split, "near": side(near), "far": side(far),
            "spearman_round_trip_vs_two_threads": float(np.corrcoef(ranks(trips), ranks(two))[0, 1])}


if __name__ == "__main__":
    sys.exit(main())

"""Does a runtime's latency depend on which runtime ran before it? Evidence for the settled-block
timing of ``mobilenet.deploy.timing`` (issue 15, item 0).

Why: each runtime's thread pool keeps spinning for a while after a call returns (libgomp under
PyTorch, ONNX Runtime's and OpenVINO's spin-then-sleep pools). Timed one call per slice, every call
ran beside its neighbour's spin, so each figure measured the neighbour as much as the runtime.
``time_interleaved`` now times settled blocks (untimed calls, then a timed block). This script shows,
per runtime, the median call time at batch 1 (default 1.0-224, ``--threads`` intra-op threads):

* alone: only this runtime timed, in settled blocks (every predictor is built, the others idle);
* after X (old way): one call of X, then one timed call of this runtime, over and over;
* after X (settled): ``time_interleaved([X, this])``, this runtime's figure;
* after X (X before each block): one call of X right before each of this runtime's settled blocks;
* all interleaved: ``time_interleaved`` over every runtime, as ``mobilenet bench`` does.

The settled columns should match 'alone'; the old-way ones need not. Every cell is measured in
``--rounds`` pieces, the cells in a random order each round, so slow drift in the machine's load
spreads over all cells instead of landing on the ones measured last. Weights are random (speed
does not depend on them). Leave ``OMP_WAIT_POLICY`` unset to see PyTorch's default spin.

    .venv/bin/python benchmarks/bench_timing_neighbours.py [--threads 2] [--seconds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import sys
import time
from collections.abc import Callable

import torch

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.bench.common import input_batch
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.timing import BLOCK_S, SETTLE_CALLS, SETTLE_S, BlockPlan, Timing, run_block, time_interleaved
from mobilenet.files import write_text
from mobilenet.model import MobileNetV1

RUNTIMES = ["torch", "onnxruntime", "openvino"]
SHORT = {"torch": "torch", "onnxruntime": "ort", "openvino": "ov"}  # keeps the table's columns narrow
Call = Callable[[], object]


def old_way(me: Call, neighbour: Call, seconds: float, min_runs: int) -> list[float]:
    """The biased timing: each timed call of ``me`` starts while ``neighbour``'s pool may still spin."""
    for _ in range(3):  # untimed pairs: the same state the timed pairs see
        neighbour()
        me()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < min_runs:
        neighbour()
        start = time.perf_counter()
        me()
        samples.append(time.perf_counter() - start)
    return samples


def before_each_block(me: Call, neighbour: Call, seconds: float, min_runs: int) -> list[float]:
    """Settled blocks of ``me`` (as time_interleaved runs them), each right after one call of
    ``neighbour``: the worst case for a block, its warm-up alone stands between it and the spin."""
    for _ in range(3):  # sized as time_interleaved sizes them: a few warm-up calls, then one timed
        me()
    start = time.perf_counter()
    me()
    plan = BlockPlan.for_call(time.perf_counter() - start, block_s=BLOCK_S, settle_calls=SETTLE_CALLS,
                              settle_s=SETTLE_S)
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < min_runs:
        neighbour()
        run_block(me, plan, samples)
    return samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per cell, all rounds together")
    p.add_argument("--rounds", type=int, default=3, help="pieces each cell is measured in, cells shuffled per round")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated, of " + ", ".join(RUNTIMES))
    p.add_argument("--json", help="also write every figure to this file")
    p.add_argument("--tiny", action="store_true", help="0.25-96, 0.3 s a cell, one round: checks the script works")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.tiny:
        args.seconds, args.rounds = 0.3, 1
    alpha, resolution = (0.25, 96) if args.tiny else (1.0, 224)
    min_runs = 5 if args.tiny else 20
    print(f"cpu: {cpu_info().summary()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"MOBILENET_TORCH_BACKEND={os.environ.get('MOBILENET_TORCH_BACKEND', '(unset)')}")

    wanted = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in RUNTIMES]
    if unknown:
        p.error(f"unknown runtimes {unknown}; choose from {RUNTIMES}")
    # The predictor's runtime module is the import to check: torch is always there.
    runtimes = [r for r in wanted if r == "torch" or available(r)]
    for r in sorted(set(wanted) - set(runtimes)):
        print(f"skipping {r}: not installed")
    torch.set_num_threads(args.threads)  # as bench does: the input's preparation runs on the same threads
    model = MobileNetV1(ArchConfig(alpha=alpha, resolution=resolution)).eval()
    x = input_batch(model, 1, None)
    calls: dict[str, Call] = {}
    descriptions: dict[str, str] = {}
    for r in runtimes:  # all built first, so that 'alone' runs in the same process state as the rest
        print(f"building {r} ...", flush=True)
        predictor = make_predictor(model, r, "fp32", threads=args.threads, batch_size=1)
        xr = predictor.native_input(x)  # converted once: the runtime is timed, not a conversion
        calls[r] = lambda predictor=predictor, xr=xr: predictor(xr)
        descriptions[r] = predictor.description
        print(f"  {predictor.description}")

    # Every measurement is a job adding samples to named cells; a pair timed settled gives two cells.
    piece = args.seconds / args.rounds
    jobs: list[tuple[list[str], Callable[[], list[list[float]]]]] = []
    for me in runtimes:
        jobs.append(([f"{me}|alone"], lambda me=me: time_interleaved([calls[me]], seconds=piece, min_runs=min_runs)))
        for n in runtimes:
            if n != me:
                jobs.append(([f"{me}|old {n}"], lambda me=me, n=n: [old_way(calls[me], calls[n], piece, min_runs)]))
                jobs.append(([f"{me}|block {n}"],
                             lambda me=me, n=n: [before_each_block(calls[me], calls[n], piece, min_runs)]))
    for i, a in enumerate(runtimes):
        for b in runtimes[i + 1 :]:  # each pair once: a after b and b after a come from the same run
            jobs.append(([f"{a}|settled {b}", f"{b}|settled {a}"],
                         lambda a=a, b=b: time_interleaved([calls[a], calls[b]], seconds=piece, min_runs=min_runs)))
    jobs.append(([f"{r}|all" for r in runtimes],
                 lambda: time_interleaved([calls[r] for r in runtimes], seconds=piece, min_runs=min_runs)))
    samples: dict[str, list[float]] = {}
    shuffle = random.Random(args.seed).shuffle
    for k in range(args.rounds):
        print(f"round {k + 1}/{args.rounds}: {len(jobs)} measurements", flush=True)
        shuffle(jobs)
        for names, job in jobs:
            for name, got in zip(names, job()):
                samples.setdefault(name, []).extend(got)
    timings = {name: Timing.from_seconds(s) for name, s in samples.items()}

    # The table: median ms per cell, '-' where the neighbour would be the runtime itself.
    kinds = [("alone", [""])] + [(k, runtimes) for k in ("old", "settled", "block")] + [("all", [""])]
    abbrev = {"alone": "alone", "old": "old", "settled": "set", "block": "blk", "all": "all", "": ""} | SHORT
    columns = [(f"{k} {n}".strip(), f"{abbrev[k]} {abbrev[n]}".strip()) for k, ns in kinds for n in ns]
    print(f"\nmedian ms per call, batch 1, {alpha:g}-{resolution}, {args.threads} threads\n"
          "  old X: one call of X, then one timed call (one call per slice, the old way)\n"
          "  set X: time_interleaved([X, me]); blk X: X called right before each settled block\n"
          "  all: time_interleaved over all runtimes (mobilenet bench)")
    print(f"{'runtime':<12}" + "".join(f"{title:>11}" for _, title in columns))
    for r in runtimes:
        cells = [f"{timings[f'{r}|{c}'].median_ms:11.2f}" if f"{r}|{c}" in timings else f"{'-':>11}"
                 for c, _ in columns]
        print(f"{r:<12}" + "".join(cells))

    # Per runtime: the largest relative difference from 'alone', settled columns vs old-way ones.
    print("\nlargest difference from 'alone' (signed, % of alone)")
    worst: dict[str, dict[str, list]] = {}
    for r in runtimes:
        alone = timings[f"{r}|alone"].median_ms
        worst[r] = {}
        for group, prefixes in (("settled", ("settled", "block", "all")), ("old", ("old",))):
            diffs = [(100 * (t.median_ms - alone) / alone, name.split("|")[1]) for name, t in timings.items()
                     if name.startswith(f"{r}|") and name.split("|")[1].split(" ")[0] in prefixes]
            worst[r][group] = list(max(diffs, key=lambda d: abs(d[0])))
        s, o = worst[r]["settled"], worst[r]["old"]
        print(f"{r:<12} settled: {s[0]:+6.1f}% ({s[1]})   old way: {o[0]:+6.1f}% ({o[1]})")

    if args.json:
        report = {
            "cpu": cpu_info().to_dict(), "command": sys.argv, "model": f"{alpha:g}-{resolution}", "batch_size": 1,
            "threads": args.threads, "seconds": args.seconds, "rounds": args.rounds, "seed": args.seed,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "descriptions": descriptions,
            "cells": {name: vars(t) for name, t in sorted(timings.items())}, "largest_difference_pct": worst,
        }
        write_text(args.json, json.dumps(report, indent=1) + "\n")  # atomic: a temporary beside it, then os.replace
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""Are the calibration's networks the networks users run?

The latency model learns from the calibration's 15 whole networks, built as its probes are built
(each backend's own export or conversion, timed as a predictor calls it) and predicts what a
predictor made by ``make_predictor`` takes. If the two builds of one architecture run at
different speeds, the model learns a difference that no user sees, and no fit can take it out.
For each runtime and precision, this builds every calibration network both ways, times them all
interleaved in settled blocks in one run, and prints each network's two times and their ratio
(user's over calibration's; 1 where they agree).

What it found on the Zen 5 (docs/latency.md §4, 2026-12-05): LiteRT int8 networks timed apart
from their input's conversion ran up to a third slower than as a predictor calls them, and
ONNX Runtime's int8 probes kept each 'SAME' pad as a float op the writer's files fold into the
conv (users' files 9-18% faster). Run on a quiet machine::

    .venv/bin/python benchmarks/bench_calibration_networks.py --runtimes onnxruntime litert \\
        --precisions fp32 int8 [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.timing import time_interleaved
from mobilenet.files import write_text
from mobilenet.latency import RUNTIMES
from mobilenet.latency.backends import Cell, probe_module
from mobilenet.latency.calibrate import as_called, backend_for
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import sample_photos


def calls_both_ways(runtime: str, precision: str, threads: int) -> tuple[list[str], list[Cell],
                                                                          list[Callable[[], Any]]]:
    """(names, the calibration's cells, the users' calls) of the calibration's networks, batch 1."""
    from mobilenet.latency.probes import default_networks  # noqa: PLC0415

    backend = backend_for(runtime, precision, threads)
    backend.prepare(lambda line: print(line, file=sys.stderr))
    images = sample_photos() if precision == "int8" else None
    names, calibration, users = [], [], []
    for probe in default_networks():
        module = probe_module(probe, probe.sizes[0], fixed_pads=backend.fixed_pads)
        shaped = backend.load(module, probe.input_shape(probe.sizes[0]), largest_side=max(probe.sizes))
        for size in probe.sizes:
            cfg = probe.arch_cfg(size)
            print(f"building {runtime} {precision} {cfg.name}", file=sys.stderr)
            torch.manual_seed(0)
            predictor = make_predictor(MobileNetV1(cfg).eval(), runtime, precision, threads=threads, batch_size=1,
                                       calibration_images=images)
            x = torch.rand(1, 3, *cfg.resolution)
            names.append(cfg.name)
            calibration.append(shaped(probe.input_shape(size)))
            users.append(lambda p=predictor, x=x: p(x))
    return names, calibration, users


def compare(runtime: str, precision: str, threads: int, seconds: float) -> dict[str, Any]:
    names, cells, users = calls_both_ways(runtime, precision, threads)
    samples = time_interleaved([as_called(c) for c in cells] + users, seconds=seconds, min_runs=10)
    medians = [float(np.median(s)) for s in samples]
    # (as the calibration reads them: a probe that runs something close to the runtime's own path
    # is corrected to it, Cell.to_path)
    calibration_ms = [1e3 * (m if c.to_path is None else c.to_path(m)) for c, m in zip(cells, medians, strict=False)]
    rows = [{"model": name, "calibration_ms": c, "users_ms": u * 1e3, "ratio": u * 1e3 / c}
            for name, c, u in zip(names, calibration_ms, medians[len(names):], strict=True)]
    ratios = [r["ratio"] for r in rows]
    return {"runtime": runtime, "precision": precision, "threads": threads, "rows": rows,
            "median_ratio": float(np.median(ratios)), "min_ratio": min(ratios), "max_ratio": max(ratios)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=["onnxruntime"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=0.5, help="timed seconds per network and build, interleaved")
    p.add_argument("--json", metavar="FILE", help="also write every figure as JSON")
    args = p.parse_args(argv)
    print(f"CPU: {cpu_info().summary()}")
    print("command: " + " ".join(["bench_calibration_networks.py", *(argv if argv is not None else sys.argv[1:])]))
    results = []
    for runtime in args.runtimes:
        for precision in args.precisions:
            result = compare(runtime, precision, args.threads, args.seconds)
            results.append(result)
            print(f"\n{runtime} {precision}, {args.threads} thread(s), batch 1: users' over calibration's, median "
                  f"{result['median_ratio']:.3f} ({result['min_ratio']:.3f} to {result['max_ratio']:.3f})")
            for r in result["rows"]:
                print(f"  {r['model']:<24} calibration {r['calibration_ms']:7.3f} ms  users {r['users_ms']:7.3f} ms"
                      f"  {r['ratio']:.3f}")
    if args.json:
        write_text(args.json, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PyTorch's fast path against the fastest runtimes, for issue 16's targets.

``mobilenet.optimize``'s default program (oneDNN Graph on AVX-512 CPUs, inductor's AOTInductor
package elsewhere: each says what it is) beside the frozen TorchScript it replaces, ONNX Runtime
and OpenVINO, at batch 1 and 32, fp32 and, where this CPU has it natively, bf16. Latencies come
from settled blocks in random order (``mobilenet.deploy.timing``: untimed calls first, so no
runtime times another's spinning threads), on real photos. The compile cost is measured in fresh
processes: cold (empty cache) and warm (a second process, same cache), each as the ``optimize()``
call and as the whole process.

    .venv/bin/python benchmarks/bench_pytorch.py --json docs/bench/pytorch.json   # 1.0-224, ~15 min
    .venv/bin/python benchmarks/bench_pytorch.py --tiny                           # a smoke run, ~3 min

Targets (1.0-224, 2 threads): fp32 PyTorch at most 1.25x ONNX Runtime's time at batch 1 and 1.10x
at batch 32; bf16 at most 1.25x OpenVINO's bf16; the first compile at most 30 s, a second process
at most 5 s. Run it on a quiet machine: the report records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.optional import available
from mobilenet.deploy.timing import Timing, time_interleaved
from mobilenet.factory import mobilenet_v1
from mobilenet.files import write_text
from mobilenet.model import MobileNetV1
from mobilenet.optimized import optimize
from mobilenet.preprocess import repeat_to_batch

# Ratio targets: (precision, batch) -> (the runtime PyTorch is held against, the most PyTorch may take).
TARGETS = {("fp32", 1): ("onnxruntime", 1.25), ("fp32", 32): ("onnxruntime", 1.10), ("bf16", 1): ("openvino", 1.25),
           ("bf16", 32): ("openvino", 1.25)}
COMPILE_TARGETS_S = {"cold": 30.0, "warm": 5.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--weights", default=None, help="registry name or file (default: random init; speed does "
                   "not depend on the weights)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per candidate and cell")
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="0.25-128, batches 1 and 2, short timing: checks the script")
    p.add_argument("--max-autotune", action="store_true", help="compile PyTorch's programs with inductor's "
                   "autotuning (optimize(max_autotune=True)): longer compiles, each matrix product timed both ways")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--compile-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tiny:
        args.alpha, args.resolution, args.batches, args.seconds, args.min_runs = 0.25, 128, [1, 2], 0.5, 3
    args.precisions = [p for p in args.precisions if p == "fp32" or cpu_info().native_bf16]
    return args


def build_model(args: argparse.Namespace) -> MobileNetV1:
    if args.weights:
        return mobilenet_v1(args.alpha, args.resolution, weights=args.weights).eval()
    torch.manual_seed(0)
    return mobilenet_v1(args.alpha, args.resolution).eval()


# ------------------------------------------------------------------------------------- compile time


def compile_child(args: argparse.Namespace) -> None:
    """In a fresh process: optimize() for every cell, printing what each took as one JSON line."""
    model = build_model(args)
    torch.set_num_threads(args.threads)
    cells = []
    for precision in args.precisions:
        for batch in args.batches:
            said: list[str] = []
            fast = optimize(model, precision, batch, log=said.append, max_autotune=args.max_autotune)
            cells.append({"precision": precision, "batch": batch, "seconds": round(fast.compile_seconds, 2),
                          "backend": fast.backend, "said": said})
    print(json.dumps(cells))


def measure_compile(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Two fresh processes on one empty cache: the first compiles, the second should only load."""
    argv = [sys.executable, __file__, "--compile-child", "--alpha", str(args.alpha), "--resolution",
            str(args.resolution), "--threads", str(args.threads), "--batches", *map(str, args.batches),
            "--precisions", *args.precisions] + (["--weights", args.weights] if args.weights else []) \
        + (["--max-autotune"] if args.max_autotune else [])
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {"MOBILENET_CACHE": str(cache)}
    runs = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
        runs[label] = {"process_s": round(time.perf_counter() - start, 1),
                       "cells": json.loads(done.stdout.strip().splitlines()[-1])}
        print(f"[compile] {label}: process {runs[label]['process_s']} s; optimize() "
              + ", ".join(f"{c['precision']} b{c['batch']} {c['seconds']} s" for c in runs[label]["cells"]),
              file=sys.stderr, flush=True)
    return runs


# ------------------------------------------------------------------------------------------ latency


def candidates(model: MobileNetV1, precision: str, batch: int, threads: int,
               max_autotune: bool = False) -> dict[str, Any]:
    """Every way to run ``precision`` at ``batch`` here, by name."""
    from mobilenet.deploy.runtime import make_predictor  # noqa: PLC0415

    quiet = lambda line: None  # compile times are measured in their own processes
    runs: dict[str, Any] = {"torch optimized": optimize(model, precision, batch, log=quiet, max_autotune=max_autotune)}
    if precision == "fp32":
        runs["torch TorchScript"] = optimize(model, precision, batch, backend="torchscript", log=quiet)
        if available("onnxruntime"):
            runs["onnxruntime"] = make_predictor(model, "onnxruntime", "fp32", threads=threads)
    if available("openvino"):
        runs["openvino"] = make_predictor(model, "openvino", precision, threads=threads)
    return runs


def measure_latency(args: argparse.Namespace, model: MobileNetV1) -> list[dict[str, Any]]:
    from mobilenet.deploy.verify import photo_batch  # noqa: PLC0415

    photos = photo_batch(model)
    rows = []
    for precision in args.precisions:
        for batch in args.batches:
            runs = candidates(model, precision, batch, args.threads, args.max_autotune)
            x = repeat_to_batch(photos, batch)
            calls = [(lambda run=run, x=x: run(x)) for run in runs.values()]
            samples = time_interleaved(calls, seconds=args.seconds, min_runs=args.min_runs, seed=0)
            for (name, run), seconds in zip(runs.items(), samples):
                timing = Timing.from_seconds(seconds)
                rows.append({"precision": precision, "batch": batch, "runtime": name, "median_ms": timing.median_ms,
                             "p10_ms": timing.p10_ms, "p90_ms": timing.p90_ms, "runs": timing.runs,
                             "images_per_s": batch * 1e3 / timing.median_ms,
                             "description": getattr(run, "description", "")})
                print(f"[latency] {precision} b{batch} {name}: {timing.median_ms:.2f} ms", file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------- report


def verdicts(rows: list[dict[str, Any]], compile_runs: dict[str, Any]) -> list[str]:
    lines = []
    by_cell = {(r["precision"], r["batch"], r["runtime"]): r["median_ms"] for r in rows}
    for (precision, batch), (peer, most) in TARGETS.items():
        ours, theirs = by_cell.get((precision, batch, "torch optimized")), by_cell.get((precision, batch, peer))
        if ours and theirs:
            ratio = ours / theirs
            lines.append(f"{precision} batch {batch}: PyTorch {ours:.2f} ms / {peer} {theirs:.2f} ms = {ratio:.2f}x "
                         f"(target <= {most}x: {'met' if ratio <= most else 'MISSED'})")
    for label, most in COMPILE_TARGETS_S.items():
        worst = max(c["seconds"] for c in compile_runs[label]["cells"])
        lines.append(f"compile {label}: slowest optimize() {worst:.1f} s, process {compile_runs[label]['process_s']} s "
                     f"(target <= {most:.0f} s: {'met' if worst <= most else 'MISSED'})")
    return lines


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'precision':9s} {'batch':>5s}  {'runtime':18s} {'median ms':>10s} {'img/s':>8s}  p10-p90 ms"]
    for r in rows:
        lines.append(f"{r['precision']:9s} {r['batch']:5d}  {r['runtime']:18s} {r['median_ms']:10.2f} "
                     f"{r['images_per_s']:8.1f}  {r['p10_ms']:.2f}-{r['p90_ms']:.2f}")
    return "\n".join(lines)


BUSY_CORES = 0.2  # other processes using more than this, on average, make the run a busy one


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux's /proc/stat; None elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process and its finished children (the compile runs) have used."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile_child:
        compile_child(args)
        return 0
    load_before = os.getloadavg()
    # Busy is judged by what *other* processes used while this ran: the load average after it
    # counts the benchmark's own threads and compile children, and flagged every quiet run before.
    machine_before, own_before, start = busy_cpu_seconds(), own_cpu_seconds(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-pytorch-") as tmp:
        compile_runs = measure_compile(args, Path(tmp))
        os.environ["MOBILENET_CACHE"] = tmp  # the latency cells load what the compile runs built
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        torch.set_num_threads(args.threads)
        rows = measure_latency(args, build_model(args))
    machine_after = busy_cpu_seconds()
    others = (None if machine_before is None or machine_after is None else
              max(machine_after - machine_before - (own_cpu_seconds() - own_before), 0.0) / (time.monotonic() - start))
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "cpu": cpu_info().to_dict(), "torch": torch.__version__, "threads": args.threads,
        "model": f"{args.alpha}-{args.resolution}", "weights": args.weights or "random init",
        "load_before": load_before, "load_after": os.getloadavg(), "other_processes_cores": others,
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GLIBC_TUNABLES")},
        "compile": compile_runs, "latency": rows, "verdicts": verdicts(rows, compile_runs),
    }
    print(f"{cpu_info().summary()}; torch {torch.__version__}; {args.threads} threads; "
          f"MobileNet {report['model']}; load {load_before[0]:.1f} -> {report['load_after'][0]:.1f}"
          + ("" if others is None else f"; other processes used {others:.2f} cores on average while it ran"))
    if (load_before[0] if others is None else others) > BUSY_CORES:
        print("BUSY MACHINE: other processes held the cores; these figures do not measure the targets")
    print(format_table(rows))
    print("\n".join(report["verdicts"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.json, json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

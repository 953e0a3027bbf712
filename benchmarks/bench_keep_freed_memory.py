"""What keeping freed memory (``mobilenet.allocator.keep_freed_memory``, which ``mobilenet train``
applies on a CPU) is worth to a training step: our three steps of ``mobilenet bench --train``
(default, compiled fp32 NCHW, eager fp32 NCHW; 1.0-224, batch 32, 2 threads) timed in fresh
processes, with glibc's allocator as it comes and with freed memory kept, alternating process by
process for ``--rounds`` rounds. Each process also reports its peak resident size: what keeping
costs.

    .venv/bin/python benchmarks/bench_keep_freed_memory.py --rounds 2 --seconds 6 \\
        --json docs/bench/keep_freed_memory_zen5.json

glibc hands every freed buffer above 32 MiB (its largest mmap threshold) back to the OS, and the
next step faults it in again a page at a time; at batch 32, 224 px the fp32 activations of the
first layers are 51-103 MB each. The "as it comes" processes switch the run's own setting off
(``ExecutionPlan.apply_to_process``) and start without ``GLIBC_TUNABLES``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

MODES = ("as it comes", "kept")


def child(mode: str, seconds: float, tiny: bool) -> None:
    from mobilenet.arch import ArchConfig
    from mobilenet.train.step import ExecutionPlan
    from mobilenet.train.throughput import bench_training

    if mode == MODES[0]:
        ExecutionPlan.apply_to_process = lambda self: None  # what train did before it kept memory
    arch = ArchConfig(alpha=0.25, resolution=32) if tiny else ArchConfig()
    report = bench_training(arch, batch_size=8 if tiny else 32, threads=2, seconds=seconds, peers=False)
    rows = {row.name: {"median_ms": row.median_ms, "steps": row.steps} for row in report.rows}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "rows": rows, "peak_rss_mib": peak_mib, "cpu": report.cpu}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0, help="timed seconds per step kind in each process")
    p.add_argument("--tiny", action="store_true", help="0.25-32, batch 8: checks that the script works")
    p.add_argument("--json", default=None, metavar="FILE")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.seconds, args.tiny)
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"OMP_WAIT_POLICY": "PASSIVE"}
    runs: list[dict] = []
    for round_ in range(args.rounds):
        for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
            command = [sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds),
                       *(["--tiny"] if args.tiny else [])]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.splitlines()[-1]))
            print(f"[round {round_ + 1}] {mode}: " + ", ".join(
                f"{name} {row['median_ms']:.0f} ms" for name, row in runs[-1]["rows"].items())
                + f"; peak RSS {runs[-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    summary = {}
    for name in runs[0]["rows"]:
        median = {mode: statistics.median(r["rows"][name]["median_ms"] for r in runs if r["mode"] == mode)
                  for mode in MODES}
        summary[name] = median | {"kept speed-up": median[MODES[0]] / median[MODES[1]]}
        print(f"{name}: {median[MODES[0]]:.0f} ms as it comes, {median[MODES[1]]:.0f} ms kept: "
              f"{summary[name]['kept speed-up']:.2f}x")
    for mode in MODES:
        print(f"peak RSS, {mode}: {statistics.median(r['peak_rss_mib'] for r in runs if r['mode'] == mode):.0f} MiB")
    if args.json:
        from mobilenet.files import write_text

        command = "benchmarks/bench_keep_freed_memory.py " + " ".join(sys.argv[1:])
        write_text(args.json, json.dumps({"command": command, "cpu": runs[0]["cpu"], "summary": summary,
                                          "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

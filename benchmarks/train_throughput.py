"""Training throughput (images/s of a full step) of our defaults, our compiled and eager fp32
NCHW steps and timm's ``mobilenetv1_100`` (eager fp32, SGD), in one interleaved run, at the
issue-16 setting (1.0-224, batch 32, 2 threads); it prints each target (our default at least 2x
timm, our compiled fp32 NCHW step at least 1.5x) as met or missed, and what the fast settings
gain over our eager step. ``mobilenet.train.throughput.
bench_training`` does the work (``mobilenet bench --train`` runs the same).

    .venv/bin/python benchmarks/train_throughput.py --json docs/bench/train_throughput.json
    .venv/bin/python benchmarks/train_throughput.py --tiny          # checks the script (0.25-32)

It restarts itself under the malloc settings ``mobilenet bench`` uses (glibc otherwise returns
and re-faults the activation buffers of every step), keeping the environment's OpenMP wait policy
(``mobilenet train``'s; the module docstring of ``mobilenet.train.throughput`` says why).
"""

from __future__ import annotations

import argparse
import sys

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per step kind (default 20)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="0.25-32, batch 8, 0.5 s: checks that the script works")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under

    from mobilenet.arch import ArchConfig
    from mobilenet.train.throughput import DEFAULT, EAGER_FP32, TARGETS, TIMM, bench_training, save

    if args.tiny:
        args.alpha, args.resolution, args.batch_size, args.seconds = 0.25, 32, 8, 0.5
    arch = ArchConfig(alpha=args.alpha, resolution=args.resolution, num_classes=1000)
    report = bench_training(arch, batch_size=args.batch_size, device=args.device, threads=args.threads,
                            seconds=args.seconds, log=lambda line: print(f"[train_throughput] {line}", file=sys.stderr))
    print(report.format())
    speed = {row.name: row.images_per_s for row in report.rows}
    timm = speed[TIMM]
    for row, (target, what) in TARGETS.items():
        ratio = speed[row] / timm
        verdict = ("met" if ratio >= target else "MISSED") if args.alpha == 1.0 else "not judged: timm is width 1.0"
        print(f"target: {row} >= {target:g}x timm ({what}): {ratio:.2f}x, {verdict}")
    print(f"the fast settings over our eager step: {speed[DEFAULT] / speed[EAGER_FP32]:.2f}x")
    if args.json:
        save(report, args.json)
        print(f"report: {args.json}")


if __name__ == "__main__":
    main()

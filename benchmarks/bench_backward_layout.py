"""What forcing inductor's layout optimization (``mobilenet.train.step.compile_options``) gains in
a compiled CPU training step: each of three settings compiled twice, with inductor's own layout
choice (the step's other options kept) and with the step's options, the six steps timed in
settled blocks in a random order (``mobilenet.deploy.timing``) in one process. The settings: our
default (bf16 autocast where native, channels_last), fp32 channels_last (the default on a CPU
without native bf16) and fp32 NCHW (the ``bench --train`` row that the 1.5x-timm target judges).

    .venv/bin/python benchmarks/bench_backward_layout.py --seconds 30 --json docs/bench/backward_layout.json
    .venv/bin/python benchmarks/bench_backward_layout.py --tiny      # checks the script (0.25-32)

Restarts itself under the malloc settings ``mobilenet bench`` uses and the environment's OpenMP
wait policy, as ``benchmarks/train_throughput.py`` does (its runs recorded before 2026-12-06, night,
were under OMP_WAIT_POLICY=PASSIVE). Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick

SETTINGS = {
    "default": {},
    "fp32 channels_last": {"amp": "none"},
    "fp32 NCHW": {"amp": "none", "channels_last": False},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds per step (default 30)")
    p.add_argument("--tiny", action="store_true", help="0.25-32, batch 8, 0.5 s: checks that the script works")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under: one pool

    import torch
    from torch import nn

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import METHOD, Timing, time_interleaved
    from mobilenet.files import write_text
    from mobilenet.model import MobileNetV1
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.optim import build_optimizer
    from mobilenet.train.step import build_step, compile_options, plan_execution
    from mobilenet.train.throughput import synthetic_batch, training_step

    if args.tiny:
        args.alpha, args.resolution, args.batch_size, args.seconds = 0.25, 32, 8, 0.5
    torch.set_num_threads(args.threads)
    arch = ArchConfig(alpha=args.alpha, resolution=args.resolution, num_classes=1000)
    device = torch.device("cpu")
    log = lambda line: print(f"[backward_layout] {line}", file=sys.stderr, flush=True)  # noqa: E731
    log(cpu_info().summary())
    names, steps, plans = [], [], {}
    for setting, change in SETTINGS.items():
        config = TrainConfig(arch=arch, batch_size=args.batch_size, compile=True, device="cpu", **change)
        plan = plan_execution(config, device, 10**6)
        plan.apply_to_process()
        plans[setting] = plan.to_dict()
        if not plan.compile:
            raise SystemExit(f"cannot compile here: {plan.compile_why}")
        images, labels = synthetic_batch(arch, args.batch_size, device, plan.memory_format)
        forced = compile_options(device)
        own = {key: value for key, value in forced.items() if key != "force_layout_optimization"}
        for layout, options in (("inductor's own", own), ("forced", forced)):
            torch.manual_seed(0)
            model = MobileNetV1(arch).to(memory_format=plan.memory_format).train()
            optimizer = build_optimizer(model, config)
            loss_of = build_step(model, nn.CrossEntropyLoss(), plan, inductor_options=options)
            step = training_step(lambda loss_of=loss_of, images=images, labels=labels: loss_of(images, labels),
                                 optimizer, device)

            start = time.perf_counter()
            step()
            log(f"{setting}, {layout}: first step (the compile) {time.perf_counter() - start:.1f} s")
            names.append((setting, layout))
            steps.append(step)
    log(f"timing {len(steps)} steps in settled blocks, about {args.seconds:g} s each")
    samples = time_interleaved(steps, seconds=args.seconds, min_runs=5, warmup=1)
    results = {f"{setting}, {layout}": Timing.from_seconds(runs) for (setting, layout), runs in zip(names, samples)}
    print(f"training step, {arch.alpha}-{arch.resolution[0]}, batch {args.batch_size}, {args.threads} threads, "
          f"{METHOD}; torch {torch.__version__}; {cpu_info().summary()}")
    for name, timing in results.items():
        print(f"  {name:<38} {timing.median_ms:8.1f} ms/step  (p10 {timing.p10_ms:.1f}, p90 {timing.p90_ms:.1f}, "
              f"{timing.runs} steps)")
    ratios = {setting: results[f"{setting}, inductor's own"].median_ms / results[f"{setting}, forced"].median_ms
              for setting in SETTINGS}
    for setting, ratio in ratios.items():
        print(f"{setting}: forced is {ratio:.3f}x inductor's own")
    if args.json:
        report = {"arch": arch.to_dict(), "batch_size": args.batch_size, "threads": args.threads, "method": METHOD,
                  "torch": torch.__version__, "cpu": cpu_info().to_dict(), "command": " ".join(sys.argv),
                  "plans": plans, "options": compile_options(device),
                  "results": {name: vars(timing) for name, timing in results.items()},
                  "speedup_forced_over_own": ratios}
        write_text(args.json, json.dumps(report, indent=1) + "\n")
        print(f"results: {args.json}")


if __name__ == "__main__":
    main()

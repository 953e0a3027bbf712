"""The compiled training steps with BatchNorm's sums in stages (``mobilenet.kernels``, what they
run) against the same steps with inductor's own BatchNorm, and timm's eager step, in one
interleaved run at the issue-16 setting (1.0-224, batch 32, 2 threads): what the staged sums gain
in a whole step (docs/training.md, "BatchNorm's sums in stages").

    .venv/bin/python benchmarks/train_staged_batchnorm.py --seconds 40 --json docs/bench/train_staged_batchnorm.json

A row "inductor's BatchNorm" trains a model whose BatchNorm layers are a subclass of
``nn.BatchNorm2d`` that adds nothing: ``kernels.batch_norm`` stages only ``nn.BatchNorm2d`` itself,
so inductor lowers those layers as it does without this project. Restarts itself under the malloc
settings ``mobilenet bench`` uses and the environment's OpenMP wait policy, as
``train_throughput.py`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per row (default 20)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="0.25-32, batch 8, 0.5 s: checks that the script works")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under

    import torch
    from torch import nn

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import Timing, time_interleaved
    from mobilenet.files import write_text
    from mobilenet.model import MobileNetV1
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.optim import build_optimizer
    from mobilenet.train.step import build_step, plan_execution
    from mobilenet.train.throughput import A_LONG_RUN, synthetic_batch, timm_step, training_step

    class InductorsBatchNorm(nn.BatchNorm2d):
        """nn.BatchNorm2d under another name, which kernels.batch_norm leaves to inductor."""

    alpha, resolution, batch = (0.25, 32, 8) if args.tiny else (1.0, 224, 32)
    seconds = 0.5 if args.tiny else args.seconds
    torch.set_num_threads(args.threads)
    arch = ArchConfig(alpha=alpha, resolution=resolution, num_classes=1000)
    device = torch.device("cpu")
    config = TrainConfig(arch=arch, batch_size=batch, compile=True, device="cpu")

    def our_step(fp32_nchw: bool, staged: bool):  # noqa: ANN202 - a step to time
        row_config = dataclasses.replace(config, amp="none", channels_last=False) if fp32_nchw else config
        plan = plan_execution(row_config, device, A_LONG_RUN)
        if not plan.compile:
            sys.exit(f"the steps cannot compile here: {plan.compile_why}")
        plan.apply_to_process()
        torch.manual_seed(0)
        model = MobileNetV1(arch).to(memory_format=plan.memory_format).train()
        if not staged:
            for module in model.modules():
                if type(module) is nn.BatchNorm2d:
                    module.__class__ = InductorsBatchNorm
        step = build_step(model, nn.CrossEntropyLoss(), plan)
        images, labels = synthetic_batch(arch, batch, device, plan.memory_format)
        return training_step(lambda: step(images, labels), build_optimizer(model, row_config), device)

    rows = {
        "compiled fp32 NCHW, inductor's BatchNorm": our_step(True, staged=False),
        "compiled fp32 NCHW, sums in stages (ours)": our_step(True, staged=True),
        "default (bf16, channels_last), inductor's BatchNorm": our_step(False, staged=False),
        "default (bf16, channels_last), sums in stages (ours)": our_step(False, staged=True),
        "timm mobilenetv1_100, eager fp32 NCHW, SGD": timm_step(arch, batch, device),
    }
    first = {}
    for name, step in rows.items():
        start = time.perf_counter()
        step()
        first[name] = time.perf_counter() - start
        print(f"first step (compiles) of {name}: {first[name]:.1f} s", file=sys.stderr)
    samples = time_interleaved(list(rows.values()), seconds=seconds, min_runs=5, warmup=1)
    timings = {name: Timing.from_seconds(runs) for name, runs in zip(rows, samples, strict=True)}
    timm = timings["timm mobilenetv1_100, eager fp32 NCHW, SGD"].median_ms
    policy = os.environ.get("OMP_WAIT_POLICY")
    print(f"{cpu_info().summary()}; {args.threads} threads; {alpha}-{resolution}, batch {batch}; "
          f"OMP_WAIT_POLICY {policy or 'unset (OpenMP default)'}")
    for name, timing in timings.items():
        print(f"  {name:54s} {timing.median_ms:8.1f} ms/step (p10 {timing.p10_ms:.1f}, p90 {timing.p90_ms:.1f}, "
              f"{timing.runs} steps)  {timm / timing.median_ms:.2f}x timm")
    names = list(rows)
    for plain, staged in ((names[0], names[1]), (names[2], names[3])):
        print(f"sums in stages: {timings[plain].median_ms / timings[staged].median_ms:.3f}x the step with "
              f"inductor's BatchNorm ({plain.split(',')[0]})")
    if args.json:
        write_text(args.json, json.dumps({
            "cpu": cpu_info().to_dict(), "threads": args.threads, "arch": arch.to_dict(), "batch_size": batch,
            "torch": torch.__version__, "omp_wait_policy": policy, "first_step_s": first,
            "rows": {name: dataclasses.asdict(timing) for name, timing in timings.items()}}, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

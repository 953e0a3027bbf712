"""How much of the compiled fp32 NCHW training step its depthwise convs cost: the step as committed
against the same step with every depthwise conv made nearly free, and timm's, in one interleaved
run (docs/training.md, "What a depthwise conv of any speed could give").

    .venv/bin/python benchmarks/bench_train_depthwise_bound.py --seconds 30 [--json FILE]

"Nearly free": each depthwise conv becomes the strided slice of its input that gives its output's
size, times a per-channel scale from its filters, with no gradient for the filters. inductor folds
the scale into the BatchNorm kernels around it, so no conv and no pass of its own is left; the
difference between the two rows bounds what any faster depthwise conv could save in this step.
The numbers of the second row are not a model anyone would train. The process keeps freed memory
as ``mobilenet train`` does, under the environment's ``OMP_WAIT_POLICY`` (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds per row (default 30)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="0.25-64, batch 4, 0.5 s: checks that the script works")
    p.add_argument("--json", metavar="FILE", help="also write the results here")
    args = p.parse_args()

    import torch
    from torch import nn

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import Timing, time_rounds
    from mobilenet.files import write_text
    from mobilenet.kernels import batch_norm
    from mobilenet.model import ConvBNAct, MobileNetV1
    from mobilenet.optimized import compiled_cache_dir
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.optim import build_optimizer
    from mobilenet.train.step import build_step, compile_options, plan_execution
    from mobilenet.train.throughput import synthetic_batch, timm_step, training_step

    def nearly_free_depthwise(self: ConvBNAct, x: torch.Tensor) -> torch.Tensor:
        x, conv = self.pad(x), self.conv
        stride = conv.stride[0]
        if stride > 1:  # the positions a stride-s conv of an odd kernel centres on: its output's size
            x = x[:, :, 0:(x.shape[2] - 1) // stride * stride:stride, 0:(x.shape[3] - 1) // stride * stride:stride]
        x = x * conv.weight.detach().sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return self.act(batch_norm(self.bn, x))

    compiled_cache_dir()  # inductor's caches under the project's
    torch.set_num_threads(args.threads)
    arch = ArchConfig(alpha=0.25, resolution=64) if args.tiny else ArchConfig()
    batch, seconds = (4, 0.5) if args.tiny else (32, args.seconds)
    config = TrainConfig(arch=arch, batch_size=batch, compile=True, amp="none", channels_last=False)
    plan = plan_execution(config, torch.device("cpu"), 10_000)
    plan.apply_to_process()
    names, steps = [], []
    for name in ("as committed", "depthwise convs nearly free"):
        torch.manual_seed(0)
        model = MobileNetV1(arch).train()
        if name != "as committed":
            for module in model.modules():
                if isinstance(module, ConvBNAct) and module.conv.groups > 1:
                    module.forward = nearly_free_depthwise.__get__(module)
        optimizer = build_optimizer(model, config)
        step = build_step(model, nn.CrossEntropyLoss(), plan, inductor_options=compile_options(plan.device))
        images, labels = synthetic_batch(arch, batch, plan.device, plan.memory_format)
        steps.append(training_step(lambda step=step, x=images, y=labels: step(x, y), optimizer, plan.device))
        names.append(name)
    steps.append(timm_step(arch, batch, plan.device))
    names.append("timm")
    for name, step in zip(names, steps):
        start = time.perf_counter()
        step()
        print(f"{name}: first step (compiles) {time.perf_counter() - start:.1f} s", flush=True)
    rounds = time_rounds(steps, seconds=seconds, min_runs=5, warmup=1)
    medians = {name: Timing.from_seconds(runs).median_ms for name, runs in zip(names, rounds.samples)}
    print(f"the machine's pace moved {rounds.drift():.2f}x while timing")
    for name in names:
        print(f"{name:<30} {medians[name]:9.1f} ms   x timm {medians['timm'] / medians[name]:.3f}")
    if args.json:
        record = {"cpu": cpu_info().to_dict(), "arch": arch.to_dict(), "batch_size": batch, "threads": args.threads,
                  "torch": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                  "machine_drift": rounds.drift(), "median_ms": medians}
        write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

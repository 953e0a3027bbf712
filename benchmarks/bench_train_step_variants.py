"""The compiled fp32 NCHW training step (issue 16's "identical precision and layout" row) as
committed, against variants of it and timm's eager step, in one interleaved run (docs/training.md:
"inductor's other settings, tried on the same step", "What a depthwise conv of any speed could
give").

    .venv/bin/python benchmarks/bench_train_step_variants.py --seconds 30 \\
        --set aggressive_fusion=True --set memory_planning=True [--json FILE]
    .venv/bin/python benchmarks/bench_train_step_variants.py --seconds 30 --nearly-free-depthwise

Rows besides the step as committed (inductor's options: ``mobilenet.train.step.compile_options``)
and timm's:

* each ``--set NAME=VALUE``: the committed options plus that one (VALUE a Python literal);
* ``--nearly-free-depthwise``: every depthwise conv made the strided slice of its input that gives
  its output's size, times a per-channel scale from its filters, with no gradient for the filters.
  inductor folds the scale into the BatchNorm kernels around it, so no conv and no pass of its own
  is left: the row's gain bounds what any faster depthwise conv could save in this step. It is not
  a model anyone would train.

``--channels-last`` runs our rows channels_last, as the step runs by default on a CPU without
native bf16 (fp32 there: ``mobilenet.train.step.plan_execution``). The process keeps freed memory
as ``mobilenet train`` does (``ExecutionPlan``) and runs under the environment's
``OMP_WAIT_POLICY``, which the JSON records (null: OpenMP's default).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

NEARLY_FREE_DEPTHWISE = "depthwise convs nearly free"


def option_setting(text: str) -> tuple[str, object]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError) as err:
        raise argparse.ArgumentTypeError(f"{value!r} is not a Python literal (True, 8, 'x')") from err


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--set", dest="settings", type=option_setting, action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--nearly-free-depthwise", action="store_true",
                   help="add the row whose depthwise convs cost next to nothing (the bound on a faster one)")
    p.add_argument("--channels-last", action="store_true",
                   help="our rows channels_last: the default step on a CPU without native bf16 (timm's stays NCHW)")
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
    config = TrainConfig(arch=arch, batch_size=batch, compile=True, amp="none", channels_last=args.channels_last)
    plan = plan_execution(config, torch.device("cpu"), 10_000)
    plan.apply_to_process()
    committed = compile_options(plan.device)
    rows = {"as committed": committed} | {f"{name}={value!r}": committed | {name: value}
                                          for name, value in args.settings}
    if args.nearly_free_depthwise:
        rows[NEARLY_FREE_DEPTHWISE] = committed
    names, steps = [], []
    for name, options in rows.items():
        torch.manual_seed(0)
        model = MobileNetV1(arch).train()
        if name == NEARLY_FREE_DEPTHWISE:
            for module in model.modules():
                if isinstance(module, ConvBNAct) and module.conv.groups > 1:
                    module.forward = nearly_free_depthwise.__get__(module)
        optimizer = build_optimizer(model, config)
        step = build_step(model, nn.CrossEntropyLoss(), plan, inductor_options=options)
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
        print(f"{name:<40} {medians[name]:9.1f} ms   x timm {medians['timm'] / medians[name]:.3f}   "
              f"speed-up over committed {medians['as committed'] / medians[name]:.3f}")
    if args.json:
        record = {"cpu": cpu_info().to_dict(), "arch": arch.to_dict(), "batch_size": batch, "threads": args.threads,
                  "torch": torch.__version__, "channels_last": args.channels_last,
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                  "machine_drift": rounds.drift(), "median_ms": medians,
                  "options": {name: rows.get(name) for name in names}}
        write_text(args.json, json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

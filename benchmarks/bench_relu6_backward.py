"""What ``mobilenet.kernels.relu6_from_output`` gains in a compiled training step: our default
step (compiled; bf16 autocast and channels_last where bf16 is native) with it and without it
(a plain ``F.relu6``, whose traced backward reads the BatchNorm output), interleaved two steps at
a time in one process. ``--amp none`` compares the compiled fp32 NCHW steps instead.

    .venv/bin/python benchmarks/bench_relu6_backward.py [--amp none] [--seconds 60]

Restarts itself under the malloc settings ``mobilenet bench`` uses and OMP_WAIT_POLICY=PASSIVE,
as ``benchmarks/train_throughput.py`` does. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import sys
import time

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=60.0, help="timed seconds for both variants together")
    args = p.parse_args()
    restart_keeping_freed_memory()

    import torch
    import torch.nn.functional as F
    from torch import nn

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.model import ConvBNAct, MobileNetV1
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.optim import build_optimizer
    from mobilenet.train.step import build_step, plan_execution

    class PlainReLU6(nn.Module):  # not an nn.ReLU6: ConvBNAct keeps it in the compiled step too
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu6(x)

    torch.set_num_threads(args.threads)
    arch = ArchConfig(alpha=1.0, resolution=args.resolution, num_classes=1000)
    config = TrainConfig(arch=arch, batch_size=args.batch_size, compile=True, device="cpu", amp=args.amp,
                         channels_last=args.amp != "none")
    plan = plan_execution(config, torch.device("cpu"), 10**6)
    print(f"[relu6] {cpu_info().summary()}; {plan.describe()}", file=sys.stderr)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, args.resolution, args.resolution, generator=g)
    images = images.contiguous(memory_format=plan.memory_format)
    labels = torch.randint(0, 1000, (args.batch_size,), generator=g)

    steps = {}
    for name, plain in (("relu6_from_output", False), ("F.relu6", True)):
        torch.manual_seed(0)
        model = MobileNetV1(arch).to(memory_format=plan.memory_format).train()
        if plain:
            for module in model.modules():
                if isinstance(module, ConvBNAct):
                    module.act = PlainReLU6()
        optimizer = build_optimizer(model, config)
        loss_of = build_step(model, nn.CrossEntropyLoss(), plan)

        def step(loss_of: nn.Module = loss_of, optimizer: torch.optim.Optimizer = optimizer) -> None:
            loss_of(images, labels).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        start = time.perf_counter()
        step()
        print(f"[relu6] {name}: first step (the compile) {time.perf_counter() - start:.1f} s", file=sys.stderr)
        step()
        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in steps}
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        for name, step in steps.items():
            for _ in range(2):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    medians = {}
    for name, samples in times.items():
        samples.sort()
        medians[name] = samples[len(samples) // 2]
        print(f"{name:>18}: median {medians[name] * 1e3:.0f} ms a step, {args.batch_size / medians[name]:.1f} img/s "
              f"(p10 {samples[len(samples) // 10] * 1e3:.0f} ms, {len(samples)} steps)")
    print(f"relu6_from_output over F.relu6: {medians['F.relu6'] / medians['relu6_from_output']:.3f}x")


if __name__ == "__main__":
    main()

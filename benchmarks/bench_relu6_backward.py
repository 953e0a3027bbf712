"""Where a compiled training step's ReLU6 backward gets its mask, and what it costs: each
BatchNorm + ReLU6 compiled four ways, the four steps timed in settled blocks in a random order
(``mobilenet.deploy.timing``) in one process.

* **the mask from the saved output**: a ReLU6 whose backward reads its own output, the tensor the
  forward keeps anyway as the next conv's input (what the compiled step did until 2026-12-05);
* **the mask from the BatchNorm's input**: a plain ``F.relu6``, whose traced backward reads its
  input, the BatchNorm's output, which inductor recomputes from the conv's output (kept for the
  BatchNorm's backward) and the batch statistics;

each compiled with inductor's own ``realize_reads_threshold`` and with the step's
(``mobilenet.train.step.compile_options``). The threshold decides whether that recomputation is
written out whole (more reads than the threshold, used twice: by the BatchNorm backward's
reduction and by its gradient) or computed inside both kernels.

    .venv/bin/python benchmarks/bench_relu6_backward.py --seconds 30 --json docs/bench/relu6_backward.json
    .venv/bin/python benchmarks/bench_relu6_backward.py --amp none --channels-first   # bench --train's fp32 NCHW row
    .venv/bin/python benchmarks/bench_relu6_backward.py --tiny                        # checks the script (0.25-32)

``--profile N`` then profiles each step in N alternating rounds of three steps (``torch.profiler``
with inductor's kernel profile, which the compiles then include) and reports, per step, the time
in inductor's generated kernels and in oneDNN's convolutions: the part the variants change, apart
from the convolutions' swings on a guest.

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "none"))
    p.add_argument("--channels-first", action="store_true", help="NCHW input and model (default channels_last)")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=30.0, help="timed seconds per step (default 30)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="then N alternating rounds of profiled steps (default 0: none)")
    p.add_argument("--tiny", action="store_true", help="0.25-32, batch 8, 0.5 s: checks that the script works")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under: one pool

    import torch
    import torch.nn.functional as F
    from torch import nn

    from mobilenet.arch import ArchConfig
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import METHOD, Timing, time_interleaved
    from mobilenet.files import write_text
    from mobilenet.model import ConvBNAct, MobileNetV1
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.optim import build_optimizer
    from mobilenet.train.step import build_step, compile_options, plan_execution
    from mobilenet.train.throughput import synthetic_batch, training_step

    class ReLU6FromOutput(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            y = x.clamp(0, 6)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            (y,) = ctx.saved_tensors
            return grad * ((y > 0) & (y < 6)).to(grad.dtype)

    # Not nn.ReLU6: ConvBNAct calls these as they are, compiled or not.
    class SavedOutputReLU6(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return ReLU6FromOutput.apply(x)

    class PlainReLU6(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu6(x)

    if args.tiny:
        args.alpha, args.resolution, args.batch_size, args.seconds = 0.25, 32, 8, 0.5
        args.profile = min(args.profile, 1)
    if args.profile:
        import torch._inductor.config

        torch._inductor.config.cpp.enable_kernel_profile = True  # each generated kernel a profiler event
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    arch = ArchConfig(alpha=args.alpha, resolution=args.resolution, num_classes=1000)
    config = TrainConfig(arch=arch, batch_size=args.batch_size, compile=True, device="cpu", amp=args.amp,
                         channels_last=not args.channels_first)
    plan = plan_execution(config, device, 10**6)
    plan.apply_to_process()
    if not plan.compile:
        raise SystemExit(f"cannot compile here: {plan.compile_why}")
    log = lambda line: print(f"[relu6_backward] {line}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"{cpu_info().summary()}; {plan.describe()}")
    images, labels = synthetic_batch(arch, args.batch_size, device, plan.memory_format)

    ours = compile_options(device)
    own = {key: value for key, value in ours.items() if key != "realize_reads_threshold"}
    variants = {
        ("saved output", "inductor's threshold"): (SavedOutputReLU6, own),
        ("saved output", "the step's threshold"): (SavedOutputReLU6, ours),
        ("BatchNorm input", "inductor's threshold"): (PlainReLU6, own),
        ("BatchNorm input", "the step's threshold"): (PlainReLU6, ours),
    }
    names, steps = [], []
    for name, (activation, options) in variants.items():
        torch.manual_seed(0)
        model = MobileNetV1(arch).to(memory_format=plan.memory_format).train()
        for module in model.modules():
            if isinstance(module, ConvBNAct):
                module.act = activation()
        optimizer = build_optimizer(model, config)
        loss_of = build_step(model, nn.CrossEntropyLoss(), plan, inductor_options=options)
        step = training_step(lambda loss_of=loss_of: loss_of(images, labels), optimizer, device)

        start = time.perf_counter()
        step()
        log(f"mask from the {name[0]}, {name[1]}: first step (the compile) {time.perf_counter() - start:.1f} s")
        names.append(name)
        steps.append(step)
    log(f"timing {len(steps)} steps in settled blocks, about {args.seconds:g} s each")
    samples = time_interleaved(steps, seconds=args.seconds, min_runs=5, warmup=1)
    results = {f"mask from the {mask}, {threshold}": Timing.from_seconds(runs)
               for (mask, threshold), runs in zip(names, samples)}
    print(f"training step, {arch.alpha}-{arch.resolution[0]}, batch {args.batch_size}, {args.threads} threads, "
          f"{plan.describe()}; {METHOD}; torch {torch.__version__}; {cpu_info().summary()}; the step's options: {ours}")
    for name, timing in results.items():
        print(f"  {name:<52} {timing.median_ms:8.1f} ms/step  (p10 {timing.p10_ms:.1f}, p90 {timing.p90_ms:.1f}, "
              f"{timing.runs} steps)")
    profiles = _profile(names, steps, args.profile) if args.profile else {}
    for name, parts in profiles.items():
        print(f"  {name:<52} profiled: {parts['generated_ms']:6.1f} ms generated kernels, "
              f"{parts['convolutions_ms']:6.1f} ms oneDNN convolutions a step (medians of {args.profile} rounds)")
    before = results["mask from the saved output, inductor's threshold"].median_ms
    speedups = {name: before / timing.median_ms for name, timing in results.items()}
    for name, ratio in speedups.items():
        print(f"{name}: {ratio:.3f}x the saved output at inductor's threshold")
    if args.json:
        report = {"arch": arch.to_dict(), "batch_size": args.batch_size, "threads": args.threads, "method": METHOD,
                  "torch": torch.__version__, "cpu": cpu_info().to_dict(), "command": " ".join(sys.argv),
                  "plan": plan.to_dict(), "options": ours,
                  "results": {name: vars(timing) for name, timing in results.items()},
                  "speedup_over_saved_output_at_inductors_threshold": speedups, "profiled_per_step": profiles}
        write_text(args.json, json.dumps(report, indent=1) + "\n")
        print(f"results: {args.json}")


def _profile(names: list[tuple[str, str]], steps: list, rounds: int) -> dict[str, dict[str, float]]:
    """Per step, the milliseconds in generated kernels and in oneDNN's convolutions: medians over
    ``rounds`` rounds of three profiled steps each, the steps visited in turn, in reverse every
    other round."""
    import statistics

    import torch

    order = list(zip(names, steps))
    parts: dict[str, dict[str, list[float]]] = {}
    for round_ in range(rounds):
        for (mask, threshold), step in order if round_ % 2 == 0 else order[::-1]:
            step()
            with torch.profiler.profile() as profile:
                for _ in range(3):
                    step()
            events = profile.key_averages()
            mine = parts.setdefault(f"mask from the {mask}, {threshold}", {"generated_ms": [], "convolutions_ms": []})
            mine["generated_ms"].append(sum(e.self_cpu_time_total for e in events if "cpp_fused" in e.key) / 3e3)
            mine["convolutions_ms"].append(sum(e.self_cpu_time_total for e in events if e.key in (
                "aten::convolution_backward", "aten::mkldnn_convolution")) / 3e3)
    return {name: {part: statistics.median(ms) for part, ms in values.items()} for name, values in parts.items()}


if __name__ == "__main__":
    main()

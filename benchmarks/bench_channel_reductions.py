"""How fast the compiled training step's per-channel reductions stream one activation, against a
copy of it (docs/training.md, "The generated kernels' reductions"): the lead for issue 16's 1.5x.

    .venv/bin/python benchmarks/bench_channel_reductions.py --json docs/bench/channel_reductions_zen4.json

One channels_last fp32 activation (default 32 x 64 x 112 x 112, the first block's at batch 32,
224 px: 103 MB), 2 threads, freed memory kept and OpenMP's wait policy the environment's (as
``mobilenet train`` runs; the runs recorded before 2026-12-06, night, were under
OMP_WAIT_POLICY=PASSIVE), every row timed in
settled blocks in a random order each round (``mobilenet.deploy.timing``). Each row says how many
times it must at least read or write the activation, and the rate that implies: a row far under
the copy's rate is not held by memory.
"""

from __future__ import annotations

import argparse
import json

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=4, default=(32, 64, 112, 112), metavar=("N", "C", "H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row (default 3)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under: one pool

    import torch
    from torch import nn

    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.files import write_text
    from mobilenet.kernels import batch_norm, staged_channel_sum
    from mobilenet.train.step import REALIZE_READS_THRESHOLD

    torch.set_num_threads(args.threads)
    x = torch.randn(*args.shape).contiguous(memory_format=torch.channels_last)
    out = torch.empty_like(x)
    grad = torch.randn_like(x)
    channels = args.shape[1]
    batchnorm = nn.BatchNorm2d(channels).train()

    def statistics(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.var_mean(z, dim=(0, 2, 3), correction=0)

    def batchnorm_relu6(z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(batchnorm(z))

    def staged_batchnorm_relu6(z: torch.Tensor) -> torch.Tensor:  # as the compiled step has it (mobilenet.kernels)
        return torch.nn.functional.relu6(batch_norm(batchnorm, z))

    def compiled(fn, **options):  # noqa: ANN001, ANN202 - a compiled function, compiled on its first call
        # options with the function, not a patch around its first call: a later call that needs
        # gradients compiles again, and must with the same options
        compiled_fn = torch.compile(fn, options=options)
        compiled_fn(x)
        return compiled_fn

    welford = compiled(statistics)
    two_step = compiled(statistics, **{"cpp.use_two_step_variance_threshold": 2**40})
    channel_sum = compiled(lambda z: z.sum(dim=(0, 2, 3)))
    staged_sum = compiled(lambda z: staged_channel_sum(z.permute(0, 2, 3, 1).reshape(-1, channels)))
    # as the training step compiles them (mobilenet.train.step.compile_options)
    fused = compiled(batchnorm_relu6, realize_reads_threshold=REALIZE_READS_THRESHOLD)
    staged = compiled(staged_batchnorm_relu6, realize_reads_threshold=REALIZE_READS_THRESHOLD)
    x_grad = x.detach().requires_grad_()

    def forward_backward(fn):  # noqa: ANN001, ANN202
        return lambda: torch.autograd.grad(fn(x_grad), x_grad, grad)  # (the input's gradient, not accumulated)

    # (name, call, passes over the activation it needs at the least)
    rows = [
        ("copy", lambda: out.copy_(x), 2),
        ("sum of the whole tensor", lambda: x.sum(), 1),
        ("per-channel sum, eager", lambda: x.sum(dim=(0, 2, 3)), 1),
        ("per-channel sum, compiled", lambda: channel_sum(x), 1),
        ("per-channel sum in stages, compiled", lambda: staged_sum(x), 1),
        ("batch statistics, compiled (inductor's Welford)", lambda: welford(x), 1),
        ("batch statistics, compiled (two-step variance)", lambda: two_step(x), 2),
        ("BatchNorm + ReLU6 forward and backward, eager", forward_backward(batchnorm_relu6), 8),
        ("BatchNorm + ReLU6 forward and backward, compiled", forward_backward(fused), 8),
        ("the same, its sums in stages, compiled", forward_backward(staged), 8),
    ]
    samples = time_interleaved([call for _, call, _ in rows], seconds=args.seconds, min_runs=5)
    size = x.numel() * x.element_size()
    print(f"{cpu_info().summary()}; {args.threads} threads; activation {tuple(args.shape)} channels_last fp32, "
          f"{size / 1e6:.0f} MB")
    results = []
    for (name, _, passes), times in zip(rows, samples, strict=True):
        median = sorted(times)[len(times) // 2]
        rate = passes * size / median / 1e9
        results.append({"row": name, "median_ms": median * 1e3, "passes": passes, "gb_per_s": rate})
        print(f"  {name:52s} {median * 1e3:8.2f} ms  {passes} pass{'es' if passes > 1 else ''}: {rate:5.1f} GB/s")
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().summary(), "shape": list(args.shape),
                                          "threads": args.threads, "rows": results}, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

"""Where BatchNorm's sums in stages start to pay: the activation size that ``MIN_STAGED_ELEMENTS``
(``mobilenet.kernels``) sets, measured (docs/training.md, "BatchNorm's sums in stages").

    .venv/bin/python benchmarks/bench_staged_floor.py --json docs/bench/staged_floor_zen4.json

For activations from 2^16 to 2^23 elements (a quarter of a MiB to 32 MiB in fp32), channels_last,
BatchNorm + ReLU6 forward and the input's gradient compiled as the training step compiles them
(its inductor options), once with inductor's own BatchNorm and once with the sums in stages
(``staged_batch_norm``, whatever the size). Each pair is timed in settled blocks, interleaved
(``mobilenet.deploy.timing``), 2 threads, freed memory kept and OpenMP's wait policy the
environment's (as ``mobilenet train`` runs: a passive policy would put a wake-up at every
barrier, and the stages have more of them). Each
shape is compiled apart (``dynamic=False``): one compiled function over many shapes would turn
dynamic after the second.
"""

from __future__ import annotations

import argparse
import json

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick

# (channels, side): a 64 KiB fp32 image either way, narrow and large or wide and small
LAYERS = ((64, 16), (256, 8))
BATCHES = (4, 8, 16, 32, 64, 128, 256, 512)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32",
                   help="the activation's type (bf16: as under autocast, half the bytes of each shape)")
    p.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per row (default 2)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the wait policy mobilenet train runs under: one pool

    import torch
    from torch import nn

    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.files import write_text
    from mobilenet.kernels import MIN_STAGED_ELEMENTS, staged_batch_norm
    from mobilenet.train.step import compile_options

    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    options = compile_options(torch.device("cpu"))
    print(f"{cpu_info().summary()}; {args.threads} threads; {args.dtype}; the floor now: "
          f"{MIN_STAGED_ELEMENTS / 2**20:g}M elements", flush=True)
    results = []
    for channels, side in LAYERS:
        for batch in args.batches:
            x = torch.randn(batch, channels, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            grad = torch.randn_like(x)
            bn = nn.BatchNorm2d(channels).train()

            def inductors(z: torch.Tensor, bn: nn.BatchNorm2d = bn) -> torch.Tensor:
                return torch.nn.functional.relu6(bn(z))

            def staged(z: torch.Tensor, bn: nn.BatchNorm2d = bn) -> torch.Tensor:
                return torch.nn.functional.relu6(staged_batch_norm(z, bn))

            calls = []
            for fn in (inductors, staged):
                compiled = torch.compile(fn, options=options, dynamic=False)
                calls.append(lambda c=compiled, x=x, grad=grad: torch.autograd.grad(c(x), x, grad))
            samples = time_interleaved(calls, seconds=args.seconds, min_runs=5)
            inductor_ms, staged_ms = (sorted(s)[len(s) // 2] * 1e3 for s in samples)
            size = x.numel() * x.element_size()
            row = {"shape": [batch, channels, side, side], "elements": x.numel(), "mib": size / 2**20,
                   "inductor_ms": inductor_ms,
                   "staged_ms": staged_ms, "staged_speedup": inductor_ms / staged_ms}
            results.append(row)
            print(f"  {tuple(row['shape'])!s:20s} {x.numel() / 2**20:6.3f}M elements {row['mib']:7.2f} MiB  "
                  f"inductor's {inductor_ms:8.3f} ms  staged {staged_ms:8.3f} ms  "
                  f"staged {row['staged_speedup']:.3f}x", flush=True)
            torch._dynamo.reset()  # (each shape's graphs dropped: the next compiles its own)
    if args.json:
        write_text(args.json, json.dumps({"cpu": cpu_info().summary(), "dtype": args.dtype, "threads": args.threads,
                                          "seconds": args.seconds, "floor_elements": MIN_STAGED_ELEMENTS,
                                          "rows": results}, indent=1) + "\n")
        print(f"written: {args.json}")


if __name__ == "__main__":
    main()

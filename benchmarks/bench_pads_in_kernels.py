"""What ``prepare.pads_in_kernels`` gains: PyTorch's inference paths with each strided depthwise
conv's TF 'SAME' pad run as a copy of the activation (``prepare.fixed_padding_copy``, what
``optimize`` compiled before) against the pad folded into a kernel grown by a zero row and column
(``prepare.inference_copy``, what it compiles now), in one interleaved run
(``mobilenet.deploy.timing``: settled blocks, random order).

    .venv/bin/python benchmarks/bench_pads_in_kernels.py [--seconds 8] [--json F]

Cells: ``optimize``'s AOTInductor program (fp32, and bf16 where native) and its eager fallback
(the folded channels_last module), at batch 1 and 32, 1.0-224. The first run compiles eight
programs (tens of seconds each; cached after). Restarts itself under the malloc settings
``mobilenet bench`` uses, as ``bench_pytorch.py`` does. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--backends", nargs="+", default=["inductor", "eager"], choices=("inductor", "eager"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per cell")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if TUNABLES not in os.environ.get("GLIBC_TUNABLES", ""):
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | {"GLIBC_TUNABLES": TUNABLES})

    import torch

    from mobilenet import optimized
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.model import MobileNetV1
    from mobilenet.prepare import InferenceAdapter, fixed_padding_copy, inference_copy

    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    precisions = [p for p in args.precisions if optimized.not_native(p) is None]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"[pads] {cpu.summary()}; {args.threads} threads; precisions {precisions}")
    torch.manual_seed(0)
    model = MobileNetV1().eval()
    variants = {"pads as copies": fixed_padding_copy, "pads in kernels": inference_copy}
    cells: list[tuple[dict[str, object], object]] = []
    for precision in precisions:
        for batch in args.batches:
            x = torch.rand(batch, 3, 224, 224)
            for backend in args.backends:
                outputs = []
                for variant, copy in variants.items():
                    net = InferenceAdapter(copy(model), channels_last=True, dtype=optimized.DTYPES[precision])
                    if backend == "inductor":
                        program = optimized._build_inductor(net, x, log=log, max_autotune=False)[0]
                    else:
                        program = net
                    with torch.inference_mode():
                        outputs.append(program(x).float())

                    def call(program=program, x=x) -> object:  # noqa: ANN001
                        with torch.inference_mode():
                            return program(x)
                    cell = {"precision": precision, "batch": batch, "backend": backend, "variant": variant}
                    cells.append((cell, call))
                tolerance = 1e-3 if precision == "fp32" else 5e-2
                if not torch.allclose(outputs[0], outputs[1], rtol=tolerance, atol=tolerance):
                    raise AssertionError(f"the two variants differ ({precision}, batch {batch}, {backend})")
    log(f"[pads] timing {len(cells)} cells interleaved, about {args.seconds * len(cells):.0f} s")
    samples = time_interleaved([c for _, c in cells], seconds=args.seconds, min_runs=5)
    rows = []
    for (cell, _), times in zip(cells, samples, strict=True):
        times = sorted(times)
        rows.append(cell | {"median_ms": statistics.median(times) * 1e3, "p10_ms": times[len(times) // 10] * 1e3,
                            "calls": len(times)})
    print(f"{'precision':9} {'batch':>5} {'backend':8} {'pads as copies':>15} {'pads in kernels':>15} {'gain':>6}")
    results = []
    for before, after in zip(rows[0::2], rows[1::2], strict=True):
        gain = before["median_ms"] / after["median_ms"]
        print(f"{before['precision']:9} {before['batch']:>5} {before['backend']:8} {before['median_ms']:12.2f} ms "
              f"{after['median_ms']:12.2f} ms {gain:5.2f}x")
        results.append({"before": before, "after": after, "gain": round(gain, 3)})
    if args.json:
        from mobilenet.files import write_text

        report = {"command": " ".join(["benchmarks/bench_pads_in_kernels.py", *sys.argv[1:]]), "cpu": cpu.summary(),
                  "threads": args.threads, "torch": torch.__version__, "seconds_per_cell": args.seconds,
                  "results": results}
        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

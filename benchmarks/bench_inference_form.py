"""What each step of ``prepare.inference_form`` gains on PyTorch's inference paths, in one
interleaved run (``mobilenet.deploy.timing``: settled blocks, random order), 1.0-224:

* ``pads as copies``: each strided depthwise conv's TF 'SAME' pad a copy of the activation
  (``prepare.fixed_padding_copy``, what ``optimize`` compiled before);
* ``pads in kernels``: the pads folded into kernels grown by a zero row and column
  (``prepare.pads_in_kernels``);
* ``pointwise as matmuls``: and each pointwise conv a matrix product on the NHWC activation
  (``prepare.pointwise_as_matmul``; together ``prepare.inference_copy``, what it compiles now);
* ``and max-autotune`` (with ``--max-autotune``, compiled cells only): the same form compiled with
  inductor's autotuning, which on CPU offers its C++ GEMM template for the matrix products (the
  pointwise convs and the classifier; the convs stay oneDNN's). ``optimize`` leaves it off by
  default; this measures whether it should.

    .venv/bin/python benchmarks/bench_inference_form.py [--seconds 8] [--json F]
    .venv/bin/python benchmarks/bench_inference_form.py --backends inductor --max-autotune --batches 1

Cells: ``optimize``'s AOTInductor program (fp32, and bf16 where native) and its eager fallback
(the folded channels_last module), at batch 1 and 32. The first run compiles twelve programs (tens
of seconds each; cached after). Restarts itself under the malloc settings ``mobilenet bench``
uses, as ``bench_pytorch.py`` does. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--backends", nargs="+", default=["inductor", "eager"], choices=("inductor", "eager"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per cell")
    p.add_argument("--max-autotune", action="store_true",
                   help="also time the final form compiled with max-autotune (needs --backends inductor)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if args.max_autotune and args.backends != ["inductor"]:
        p.error("--max-autotune times compiled programs only: add --backends inductor")
    restart_keeping_freed_memory(passive_omp=False)  # the malloc settings mobilenet bench uses

    import torch

    from mobilenet import optimized
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.timing import time_interleaved
    from mobilenet.model import MobileNetV1
    from mobilenet.prepare import InferenceAdapter, fixed_padding_copy, inference_copy, pads_in_kernels

    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    precisions = [p for p in args.precisions if optimized.not_native(p) is None]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    log(f"[form] {cpu.summary()}; {args.threads} threads; precisions {precisions}")
    torch.manual_seed(0)
    model = MobileNetV1().eval()
    # name -> (the copy of the model compiled, whether inductor autotunes it)
    variants = {"pads as copies": (fixed_padding_copy, False),
                "pads in kernels": (lambda m: pads_in_kernels(fixed_padding_copy(m)), False),
                "pointwise as matmuls": (inference_copy, False)}
    if args.max_autotune:
        variants["and max-autotune"] = (inference_copy, True)
    cells: list[tuple[dict[str, object], object]] = []
    compile_s: dict[str, float] = {}  # compiled, or loaded from the cache (then about 0)
    for precision in precisions:
        for batch in args.batches:
            x = torch.rand(batch, 3, 224, 224)
            for backend in args.backends:
                outputs = []
                for variant, (copy, autotune) in variants.items():
                    net = InferenceAdapter(copy(model), channels_last=True, dtype=optimized.DTYPES[precision])
                    if backend == "inductor":
                        program, seconds, *_ = optimized._build_inductor(net, x, log=log, max_autotune=autotune)
                        compile_s[f"{precision}, batch {batch}, {variant}"] = round(seconds, 1)
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
                if not all(torch.allclose(out, outputs[0], rtol=tolerance, atol=tolerance) for out in outputs):
                    raise AssertionError(f"the variants differ ({precision}, batch {batch}, {backend})")
    log(f"[form] timing {len(cells)} cells interleaved, about {args.seconds * len(cells):.0f} s")
    samples = time_interleaved([c for _, c in cells], seconds=args.seconds, min_runs=5)
    rows = []
    for (cell, _), times in zip(cells, samples, strict=True):
        times = sorted(times)
        rows.append(cell | {"median_ms": statistics.median(times) * 1e3, "p10_ms": times[len(times) // 10] * 1e3,
                            "calls": len(times)})
    names = list(variants)
    header = " ".join(f"{n:>21}" for n in names)
    print(f"{'precision':9} {'batch':>5} {'backend':8} {header}  (median ms, x the first)")
    results = []
    for at in range(0, len(rows), len(names)):
        group = rows[at:at + len(names)]
        first = group[0]["median_ms"]
        cells_text = " ".join(f"{r['median_ms']:10.2f} ms {first / r['median_ms']:5.2f}x" for r in group)
        print(f"{group[0]['precision']:9} {group[0]['batch']:>5} {group[0]['backend']:8} {cells_text}")
        results.append({"cells": group, "gain_over_first": [round(first / r["median_ms"], 3) for r in group]})
    if args.json:
        from mobilenet.files import write_text

        report = {"command": " ".join(["benchmarks/bench_inference_form.py", *sys.argv[1:]]), "cpu": cpu.summary(),
                  "threads": args.threads, "torch": torch.__version__, "seconds_per_cell": args.seconds,
                  "compile_s": compile_s, "results": results}
        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""oneDNN Graph (TorchScript's LLGA fusion) against ``optimize``'s inductor program, on CPU.

``optimize``'s compiled program calls oneDNN once per conv and matrix product, and each call
builds its primitive's description again (about 24 µs a call on the Zen 5,
benchmarks/bench_conv_call_overhead.py): what keeps bf16 at batch 1 behind OpenVINO
(docs/pytorch.md). oneDNN Graph compiles its fused partitions once, for the shapes seen, and then
only executes them. This times, per precision and batch size, in one interleaved group each
(settled blocks, random order), the modules ``mobilenet.optimize`` returns with

* ``backend="inductor"`` (its default on CPUs without AVX-512, and on this one until 2026-12-04);
* ``backend="onednn-graph"``: TorchScript traced and frozen with oneDNN Graph's fusion;
* ``backend="torchscript"``: frozen TorchScript without it (the path bench timed before ``optimize``);

and the issue's peer: OpenVINO at bf16, ONNX Runtime at fp32. TF's published 1.0-224 weights on
the sample photos: each program's top-1 is checked against eager PyTorch; the build seconds
(inductor's: loading its kept package, or compiling) are reported.

    .venv/bin/python benchmarks/bench_onednn_graph.py [--precisions fp32 bf16] [--batches 1 32] [--json F]

Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import sys

from mobilenet.allocator import restart_keeping_freed_memory  # no torch at import: the restart stays quick


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per program")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    restart_keeping_freed_memory(passive_omp=False)  # the malloc settings mobilenet bench uses

    import torch

    from mobilenet import optimize, optimized
    from mobilenet.cpu import cpu_info
    from mobilenet.deploy.runtime import make_predictor
    from mobilenet.deploy.timing import Timing, time_interleaved
    from mobilenet.factory import mobilenet_v1
    from mobilenet.files import write_text
    from mobilenet.preprocess import preprocess_for, preprocess_images, repeat_to_batch, sample_photos

    torch.set_num_threads(args.threads)
    cpu = cpu_info()
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    model = mobilenet_v1(pretrained=True).eval()
    photos = preprocess_images(sample_photos(), preprocess_for(model))

    rows = []
    for precision in args.precisions:
        if optimized.not_native(precision) is not None:
            log(f"[onednn-graph] {precision} skipped: {optimized.not_native(precision)}")
            continue
        for batch in args.batches:
            x = repeat_to_batch(photos, batch)
            with torch.no_grad():
                eager_top1 = model(x).argmax(1)
            programs: dict[str, object] = {}
            setup: dict[str, float] = {}
            for backend in ("inductor", "onednn-graph", "torchscript"):
                fast = optimize(model, precision, batch, backend=backend, log=log)
                programs[f"optimize, {backend}"], setup[f"optimize, {backend}"] = fast, fast.compile_seconds
                log(f"[onednn-graph] {fast.description}")
            peer = "openvino" if precision == "bf16" else "onnxruntime"
            programs[f"{peer} {precision}"] = make_predictor(model, peer, precision, threads=args.threads)

            def call(program: object, x: torch.Tensor = x) -> object:
                def run() -> object:
                    with torch.no_grad():
                        return program(x)  # type: ignore[operator]
                return run

            agree = {}
            for name, program in programs.items():
                out = call(program)()
                agree[name] = float((out.float().argmax(1) == eager_top1).float().mean())  # type: ignore[attr-defined]
            log(f"[onednn-graph] {precision}, batch {batch}: timing {len(programs)} programs interleaved")
            samples = time_interleaved([call(p) for p in programs.values()], seconds=args.seconds, min_runs=5, seed=0)
            peer_ms = Timing.from_seconds(samples[-1]).median_ms
            print(f"{cpu.summary()}; {precision}, batch {batch}, {args.threads} threads")
            for (name, _), seconds in zip(programs.items(), samples, strict=True):
                timing = Timing.from_seconds(seconds)
                setup_s = setup.get(name)
                row = {"precision": precision, "batch": batch, "program": name, "median_ms": timing.median_ms,
                       "p10_ms": timing.p10_ms, "of_peer": timing.median_ms / peer_ms, "build_s": setup_s,
                       "top1_agrees_with_eager": agree[name]}
                rows.append(row)
                print(f"  {name:30} {timing.median_ms:8.3f} ms (p10 {timing.p10_ms:.3f})  {row['of_peer']:.2f}x "
                      f"{peer}" + (f"  built in {setup_s:.1f} s" if setup_s is not None else "")
                      + f", top-1 as eager {agree[name]:.0%}")
    if args.json:
        report = {"command": " ".join(["benchmarks/bench_onednn_graph.py", *sys.argv[1:]]), "cpu": cpu.summary(),
                  "torch": torch.__version__, "threads": args.threads, "seconds": args.seconds, "rows": rows}
        write_text(args.json, json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

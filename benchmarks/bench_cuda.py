"""PyTorch inference on a CUDA GPU: ``mobilenet.optimize`` against eager PyTorch and timm, for
issue 16's GPU path (its training counterpart is ``mobilenet bench --train --device cuda``).

For each precision and batch size, in one process on one batch of real photos already on the GPU:

* **torch optimized**: ``optimize(model, precision, batch, device="cuda")``: BatchNorm folded,
  channels_last, AOTInductor (cuDNN convolutions, Triton kernels for what surrounds them);
* **eager fp32 NCHW**: the model as built, ``model.cuda()``: what a user gets with no settings;
* **eager autocast channels_last** (fp16, bf16): the model as built under ``torch.autocast`` in
  channels_last: the usual hand-tuned eager path;
* **timm mobilenetv1_100**, the same way as the row above (fp32: as the eager fp32 row).

Each call ends with ``torch.cuda.synchronize()``, so a time is the GPU's work, not its launch;
the rows run in settled blocks in random order (``mobilenet.deploy.timing.time_interleaved``).
The compile is timed cold where ``MOBILENET_CACHE`` is new (by default a temporary folder); run
the script again on the same cache for what a second process pays. Agreement with eager fp32
(top-1 on the photos, largest logit difference) is recorded beside each row. The JSON is rewritten
after every cell, so a run cut short keeps what it measured.

    python benchmarks/bench_cuda.py --json docs/bench/cuda_inference_h200.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mobilenet.cpu import cpu_info
from mobilenet.deploy.timing import time_interleaved
from mobilenet.factory import mobilenet_v1
from mobilenet.optimized import optimize
from mobilenet.preprocess import repeat_to_batch
from mobilenet.train.throughput import TIMM_MODEL

AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row and cell")
    p.add_argument("--min-runs", type=int, default=20)
    p.add_argument("--weights", default=None, help="registry name or file (default: random init, whose near-zero "
                   "logits make the agreement columns meaningless; speed does not depend on the weights)")
    p.add_argument("--no-timm", action="store_true")
    p.add_argument("--device", default="cuda", help="cpu runs the same rows there: a smoke test of the script")
    p.add_argument("--json", type=Path, default=None, help="write the report here (rewritten after every cell)")
    return p.parse_args(argv)


def eager_call(model: torch.nn.Module, precision: str, channels_last: bool, device: str) -> Any:
    # A copy: Module.to converts in place, and the NCHW rows share the model.
    model = copy.deepcopy(model).to(memory_format=torch.channels_last) if channels_last else model

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        cast = (torch.autocast(torch.device(device).type, AUTOCAST[precision]) if precision in AUTOCAST
                else contextlib.nullcontext())
        with torch.inference_mode(), cast:
            return model(x).float()

    return run


def rows_for(model: torch.nn.Module, timm_model: torch.nn.Module | None, precision: str, batch: int, device: str,
             report: dict[str, Any]) -> dict[str, Any]:
    """Every way to run ``precision`` at ``batch`` on the GPU, by name; records the compile."""
    said: list[str] = []
    start = time.perf_counter()
    fast = optimize(model, precision, batch, device=device, log=said.append)
    cold_s = time.perf_counter() - start
    start = time.perf_counter()
    optimize(model, precision, batch, device=device, log=lambda line: None)
    warm_s = time.perf_counter() - start
    report["compile"].append({"precision": precision, "batch": batch, "backend": fast.backend,
                              "cold_s": round(cold_s, 2), "again_in_process_s": round(warm_s, 2), "said": said,
                              "description": fast.description})
    print(f"[compile] {precision} b{batch}: {fast.backend}, {cold_s:.1f} s (again in this process {warm_s:.1f} s)",
          file=sys.stderr, flush=True)
    runs: dict[str, Any] = {"torch optimized": fast, "eager fp32 NCHW": eager_call(model, "fp32", False, device)}
    if precision != "fp32":
        runs["eager autocast channels_last"] = eager_call(model, precision, True, device)
    if timm_model is not None:
        runs[f"timm {TIMM_MODEL}"] = eager_call(timm_model, precision, precision != "fp32", device)
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, on_gpu = args.device, torch.device(args.device).type == "cuda"
    if on_gpu and not torch.cuda.is_available():
        sys.exit("bench_cuda: no CUDA GPU is available to PyTorch here")
    os.environ.setdefault("MOBILENET_CACHE", tempfile.mkdtemp(prefix="mobilenet-cuda-cache-"))  # a cold compile
    torch.manual_seed(0)
    model = mobilenet_v1(args.alpha, args.resolution, weights=args.weights).eval().to(device)
    timm_model = None
    if not args.no_timm:
        import timm  # noqa: PLC0415

        timm_model = timm.create_model(TIMM_MODEL, pretrained=False).eval().to(device)
    from mobilenet.deploy.verify import photo_batch  # noqa: PLC0415

    photos = photo_batch(model).to(device)
    report: dict[str, Any] = {
        "command": "python benchmarks/bench_cuda.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "gpu": torch.cuda.get_device_name(0) if on_gpu else None, "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "host_cpu": cpu_info().model, "host_cores": os.cpu_count(),
        "arch": model.arch_cfg.name, "compile": [], "cells": [],
    }
    with torch.inference_mode():
        reference = model(photos).float()
    for precision in args.precisions:
        for batch in args.batches:
            runs = rows_for(model, timm_model, precision, batch, device, report)
            x = repeat_to_batch(photos, batch)
            agreement = {}
            for name, run in runs.items():
                if name.startswith("timm"):
                    continue
                logits = torch.cat([run(repeat_to_batch(part, batch))[:1] for part in photos.split(1)])
                agreement[name] = {"top1_agrees": float((logits.argmax(1) == reference.argmax(1)).float().mean()),
                                   "max_abs_diff": float((logits - reference).abs().max())}
            sync = torch.cuda.synchronize if on_gpu else (lambda: None)
            calls = [(lambda run=run, x=x, sync=sync: (run(x), sync())) for run in runs.values()]
            samples = time_interleaved(calls, seconds=args.seconds, min_runs=args.min_runs, seed=0)
            cell = {"precision": precision, "batch": batch, "rows": []}
            for (name, _), times in zip(runs.items(), samples):
                median = sorted(times)[len(times) // 2]
                cell["rows"].append({"name": name, "median_ms": round(1e3 * median, 4),
                                     "img_per_s": round(batch / median, 1), "runs": len(times),
                                     **agreement.get(name, {})})
            report["cells"].append(cell)
            print(f"[bench] {precision} b{batch}: " + "; ".join(
                f"{r['name']} {r['median_ms']:.3f} ms ({r['img_per_s']:.0f} img/s)" for r in cell["rows"]),
                file=sys.stderr, flush=True)
            if args.json is not None:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                partial = args.json.with_suffix(".partial")
                partial.write_text(json.dumps(report, indent=2) + "\n")
                partial.replace(args.json)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

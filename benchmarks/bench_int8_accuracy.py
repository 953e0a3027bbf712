"""int8 accuracy against fp32, per runtime, on real ImageNet images (docs/performance.md, int8 table).

Calibrates on the first 300 files (sorted by name) of ../shared/assets/imagenet-val1300 and
evaluates on the other 1,000, never calibrating on what it evaluates. Every predictor sees the same
preprocessed tensors, so differences are the runtime's and the quantizer's alone.

    .venv/bin/python benchmarks/bench_int8_accuracy.py [--weights NAME|FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from mobilenet.deploy.runtime import make_predictor
from mobilenet.preprocess import preprocess_images
from mobilenet.weights import load_pretrained

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "assets" / "imagenet-val1300"
CALIBRATION_FILES = 300
CONFIGS = [
    ("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16"),
    ("onnxruntime", "int8"), ("openvino", "int8"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="registry name or file (default: TF-slim float 1.0-224)")
    parser.add_argument("--data", type=Path, default=ASSETS, help=f"default {ASSETS}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here (atomically)")
    args = parser.parse_args()
    if not (args.data / "labels.csv").is_file():
        print(f"{args.data}: not found (needs ../shared/assets/imagenet-val1300)", file=sys.stderr)
        return 2

    model = load_pretrained(args.weights)
    pre = model.pretrained_cfg.preprocess
    background = model.arch_cfg.num_classes == 1001
    with (args.data / "labels.csv").open() as f:
        labels = {row["file"]: int(row["label"]) for row in csv.DictReader(f)}
    files = sorted(labels)
    calibration = [args.data / "images" / name for name in files[:CALIBRATION_FILES]]
    evaluation = files[CALIBRATION_FILES:]
    print(f"{model.arch_cfg.name} ({model.pretrained_cfg.name}): calibrate on {len(calibration)}, "
          f"evaluate on {len(evaluation)} images", file=sys.stderr)
    images = preprocess_images([args.data / "images" / name for name in evaluation], pre)
    truth = torch.tensor([labels[name] for name in evaluation])

    results, reference = [], None
    for runtime, precision in CONFIGS:
        start = time.perf_counter()
        predictor = make_predictor(model, runtime, precision, preprocess=pre, threads=args.threads,
                                   calibration_images=calibration if precision == "int8" else None)
        prepared_s = time.perf_counter() - start
        logits = torch.cat([predictor(batch) for batch in images.split(50)])
        if background:
            logits = logits[:, 1:]
        top5 = logits.topk(5, dim=1).indices
        predicted = top5[:, 0]
        if reference is None:
            reference = predicted
        row = {
            "runtime": runtime, "precision": precision,
            "top1": 100 * (predicted == truth).float().mean().item(),
            "top5": 100 * (top5 == truth[:, None]).any(1).float().mean().item(),
            "agreement_with_torch_fp32": 100 * (predicted == reference).float().mean().item(),
            "prepare_seconds": prepared_s, "description": predictor.description,
        }
        results.append(row)
        print(f"{runtime:<12} {precision:<5} top-1 {row['top1']:.1f}  top-5 {row['top5']:.1f}  "
              f"agrees with torch fp32 on {row['agreement_with_torch_fp32']:.1f}%  (prepared in {prepared_s:.0f} s)",
              file=sys.stderr, flush=True)

    print("| runtime | precision | top-1 % | top-5 % | same top-1 as torch fp32 % | preparation s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['runtime']} | {r['precision']} | {r['top1']:.1f} | {r['top5']:.1f} | "
              f"{r['agreement_with_torch_fp32']:.1f} | {r['prepare_seconds']:.0f} |")
    if args.json:
        payload = {"model": model.pretrained_cfg.name, "calibration_images": len(calibration),
                   "evaluation_images": len(evaluation), "results": results}
        fd, tmp = tempfile.mkstemp(dir=args.json.parent, prefix=f".{args.json.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

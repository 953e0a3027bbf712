"""Top-1/top-5 of TF's published models with TF's own evaluation resize against Pillow's.

    .venv/bin/python benchmarks/eval_tf_preprocessing.py [--assets ../shared/assets] [--json]

On the evaluation split of ``shared/assets/imagenet-val1300`` (file names sorted; the first 300
are the calibration split, the remaining 1,000 are evaluated here). Both recipes take TF-slim's
central 87.5 % crop (as ``tf.image.central_crop`` computes it) and normalise to [-1, 1]; they
differ only in the resize:

* ``tf``: TF1's ``resize_bilinear`` (align_corners=False, no half-pixel centres, no antialiasing)
  on float pixels, what TF-slim's evaluation did (``Preprocess(resize="tf")``, the default for
  TF weights now);
* ``pillow``: Pillow's bilinear filter, which antialiases when it shrinks (what ``mobilenet
  evaluate`` used before).

Models: TF's published .tflite files in ``shared/assets/tflite`` converted by us (fp32), and
TFLite's own interpreter on the same inputs rounded to uint8 (the uint8 models' input type; the
float model gets the rounded values normalised), plus the default TF-slim float 1.0-224 graph
(ours only; fetched from PyPI on first use, or the cache).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobilenet.preprocess import Preprocess, load_image
from mobilenet.weights import convert, load_pretrained

ROOT = Path(__file__).resolve().parents[1]
MODELS = [
    ("mobilenet_v1_0.25_128_quant", 128, ["mobilenet_v1_0.25_128_quant.tflite"]),
    ("mobilenet_v1_0.5_160_quant", 160, ["mobilenet_v1_0.5_160_quant.tflite"]),
    ("mobilenet_v1_0.75_192_quant", 192, ["mobilenet_v1_0.75_192_quant.tflite"]),
    ("mobilenet_v1_0.25_224 (float)", 224, ["mobilenet_v1_0.25_224.tflite"]),
    ("mobilenet_v1_0.25_224_quant", 224, ["mobilenet_v1_0.25_224_quant.tflite"]),
    ("mobilenet_v1_1.0_224_quant", 224,
     ["mobilenet_v1_1.0_224_quant_body.tflite", "mobilenet_v1_1.0_224_quant_head.tflite"]),
]


def accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1/top-5 in percent over TF's 1001 classes (label + 1; ties to the lower index)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hits = order == (labels + 1)[:, None]
    return 100 * hits[:, 0].mean(), 100 * hits.any(axis=1).mean()


def geometric(images: list, size: int, resize: str) -> np.ndarray:
    """NHWC float32 on the 0-255 scale, not rounded (TF's recipe keeps floats)."""
    pre = Preprocess(resolution=size, resize=resize)
    if resize == "tf":
        return np.stack([pre.tf_crop_and_resize(img) for img in images])
    return np.stack([np.asarray(pre.crop_and_resize(img), dtype=np.float32) for img in images])


def run_ours(model, x_nhwc: np.ndarray, batch: int = 100) -> np.ndarray:
    x = torch.from_numpy(x_nhwc).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)]).numpy()


def run_tflite(paths: list[Path], uint8_nhwc: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreters = []
    for path in paths:
        it = Interpreter(model_path=str(path), num_threads=2)
        it.allocate_tensors()
        interpreters.append(it)
    out = []
    for image in uint8_nhwc:
        x = image[None]
        for it in interpreters:
            inp, res = it.get_input_details()[0], it.get_output_details()[0]
            if inp["dtype"] == np.float32:
                x = x.astype(np.float32) / 127.5 - 1 if x.dtype == np.uint8 else x
            it.set_tensor(inp["index"], x.reshape(inp["shape"]).astype(inp["dtype"]))
            it.invoke()
            x = it.get_tensor(res["index"]).copy()
        out.append(x.reshape(-1).astype(np.float32))
    return np.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = args.assets / "imagenet-val1300"
    with open(folder / "labels.csv") as f:
        rows = sorted((r["file"], int(r["label"])) for r in csv.DictReader(f))
    rows = rows[300:]  # the evaluation split
    images = [load_image(folder / "images" / name) for name, _ in rows]
    labels = np.array([label for _, label in rows])
    results = []

    def record(model: str, runner: str, resize: str, scores: np.ndarray) -> None:
        top1, top5 = accuracy(scores, labels)
        results.append({"model": model, "runner": runner, "resize": resize, "top1": round(top1, 2),
                        "top5": round(top5, 2), "images": len(labels)})
        print(f"{model:32s} {runner:24s} {resize:7s} top-1 {top1:6.2f}  top-5 {top5:6.2f}", file=sys.stderr)

    start = time.perf_counter()
    for name, size, files in MODELS:
        paths = [args.assets / "tflite" / f for f in files]
        model, _ = convert(paths)
        for resize in ("tf", "pillow"):
            x = geometric(images, size, resize)
            record(name, "ours, converted (fp32)", resize, run_ours(model, x))
            record(name, "TFLite interpreter", resize, run_tflite(paths, np.clip(np.rint(x), 0, 255).astype(np.uint8)))
    graph = load_pretrained(num_classes=1001)  # TF-slim float 1.0-224, BatchNorm unfolded
    for resize in ("tf", "pillow"):
        record("tf_mobilenet_v1_1.0_224 (graph)", "ours, converted (fp32)", resize,
               run_ours(graph, geometric(images, 224, resize)))
    meta = {"cpu": platform.processor() or platform.machine(), "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
    else:
        print("| model | runner | resize | top-1 % | top-5 % |\n| --- | --- | --- | ---: | ---: |")
        for r in results:
            print(f"| {r['model']} | {r['runner']} | {r['resize']} | {r['top1']:.2f} | {r['top5']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

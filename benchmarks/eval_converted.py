"""Top-1/top-5 of every converted model beside TFLite's own interpreter, on the same images.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184 \
        .venv/bin/python benchmarks/eval_converted.py [--assets ../shared/assets] [--limit N] [--json]

For each published TFLite model (float and uint8) the 1,300 validation images of
``shared/assets/imagenet-val1300`` are cropped and resized once, TF-slim style (central 87.5 %,
bilinear), to uint8; TFLite's interpreter (``ai-edge-litert``) gets those bytes (float models:
normalised to [-1, 1]) and our converted model gets the same values as float. The default
TF-slim 1.0-224 graph (fetched from PyPI on first use) has no TFLite twin; it is run by us only.

Every float model is also run with PyTorch's symmetric padding instead of TF's 'SAME', which is
what a port that "simplifies" the padding would compute: the last columns show what that costs.

Labels: the CSV's 0-999; TF's index is label + 1 (0 is background). Top-5 of uint8 outputs
breaks ties by the lower index, as TFLite's own argmax does.

For the uint8 models, ``agree`` is the share of images where our top-1 is TFLite's top-1 (any of
TFLite's tied top uint8 logits counts), once as converted (float activations) and once with every
activation rounded to the file's uint8 grid (``tflite.activation_grids``), which isolates the
conversion from the uint8 arithmetic.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess, load_image
from mobilenet.weights import convert, load_pretrained
from mobilenet.weights.tflite import activation_grids

ROOT = Path(__file__).resolve().parents[1]
TFLITE_MODELS = [
    ("mobilenet_v1_0.25_224 (float)", ["mobilenet_v1_0.25_224.tflite"]),
    ("mobilenet_v1_0.25_128_quant", ["mobilenet_v1_0.25_128_quant.tflite"]),
    ("mobilenet_v1_0.25_224_quant", ["mobilenet_v1_0.25_224_quant.tflite"]),
    ("mobilenet_v1_0.5_160_quant", ["mobilenet_v1_0.5_160_quant.tflite"]),
    ("mobilenet_v1_0.75_192_quant", ["mobilenet_v1_0.75_192_quant.tflite"]),
    ("mobilenet_v1_1.0_224_quant",
     ["mobilenet_v1_1.0_224_quant_body.tflite", "mobilenet_v1_1.0_224_quant_head.tflite"]),
]


def accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1/top-5 in percent; ``scores`` over TF's 1001 classes (column 0 background)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    hits = order == (labels + 1)[:, None]
    return 100 * hits[:, 0].mean(), 100 * hits.any(axis=1).mean()


def run_ours(model: MobileNetV1, x: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(batch) for batch in x.split(50)]).numpy()


def agreement(ours: np.ndarray, tflite: np.ndarray) -> float:
    """Percent of images whose top-1 (ours) is among TFLite's top-scoring classes (ties included)."""
    top = ours.argmax(axis=1)
    return 100 * float(np.mean(tflite[np.arange(len(top)), top] == tflite.max(axis=1)))


def round_activations(model: MobileNetV1, grids: list[tuple[float, float, float]]) -> MobileNetV1:
    for (_, module), (low, high, step) in zip(model.conv_layers(), grids):
        module.register_forward_hook(
            lambda _m, _i, out, low=low, high=high, step=step: ((out.clamp(low, high) - low) / step).round() * step
            + low
        )
    return model


def symmetric_twin(model: MobileNetV1) -> MobileNetV1:
    """The same weights with PyTorch's padding=1 everywhere."""
    twin = MobileNetV1(model.arch_cfg.replace(padding="symmetric")).eval()
    if model.stem.folded:
        for _, module in twin.conv_layers():
            module.unfold_structure()
    twin.load_state_dict(model.state_dict())
    return twin


def run_tflite(paths: list[Path], inputs: np.ndarray, threads: int) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    stages = []
    for path in paths:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        stages.append(interpreter)
    outputs = []
    for image in inputs:
        value = image[None]
        for interpreter in stages:
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            interpreter.set_tensor(inp["index"], value.reshape(inp["shape"]).astype(inp["dtype"]))
            interpreter.invoke()
            value = interpreter.get_tensor(out["index"])
        outputs.append(value.reshape(-1).astype(np.float32))
    return np.stack(outputs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    val = args.assets / "imagenet-val1300"
    with open(val / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["file"])[: args.limit]
    labels = np.array([int(r["label"]) for r in rows])
    images = [load_image(val / "images" / r["file"]) for r in rows]
    print(f"{len(images)} images", file=sys.stderr)
    results = []

    def record(name: str, runner: str, scores: np.ndarray, seconds: float, agree: float | None = None) -> None:
        top1, top5 = accuracy(scores, labels)
        results.append({"model": name, "runner": runner, "top1": round(top1, 2), "top5": round(top5, 2),
                        "agree_with_tflite": None if agree is None else round(agree, 2),
                        "images": len(labels), "seconds": round(seconds, 1)})
        extra = "" if agree is None else f"  agrees with TFLite {agree:6.2f} %"
        print(f"{name:34} {runner:34} top-1 {top1:6.2f}  top-5 {top5:6.2f}{extra}  ({seconds:.0f} s)",
              file=sys.stderr)

    for name, files in TFLITE_MODELS:
        paths = [args.assets / "tflite" / f for f in files]
        model, cfg = convert(paths)
        geometry = Preprocess(resolution=model.arch_cfg.resolution)
        inputs = np.stack([np.asarray(geometry.crop_and_resize(img), dtype=np.uint8) for img in images])
        x = cfg.preprocess.normalize(inputs)
        quant = "quant" in name
        tflite_inputs = inputs if quant else x.permute(0, 2, 3, 1).numpy()
        start = time.perf_counter()
        reference = run_tflite(paths, tflite_inputs, args.threads)
        record(name, "TFLite interpreter (uint8)" if quant else "TFLite interpreter (float)", reference,
               time.perf_counter() - start)
        start = time.perf_counter()
        ours = run_ours(model, x)
        record(name, "ours, converted (fp32)", ours, time.perf_counter() - start, agreement(ours, reference))
        start = time.perf_counter()
        twin = run_ours(symmetric_twin(model), x)
        record(name, "ours, symmetric padding", twin, time.perf_counter() - start, agreement(twin, reference))
        if quant:
            start = time.perf_counter()
            emulated = run_ours(round_activations(model, activation_grids(paths)[:-1]), x)
            record(name, "ours, activations on uint8 grid", emulated, time.perf_counter() - start,
                   agreement(emulated, reference))

    model = load_pretrained(num_classes=1001)  # TF-slim float 1.0-224 from the frozen graph, background kept
    x = torch.stack([model.pretrained_cfg.preprocess.eval_transform()(img) for img in images])
    start = time.perf_counter()
    record("tf_mobilenet_v1_1.0_224 (graph)", "ours, converted (fp32)", run_ours(model, x), time.perf_counter() - start)
    start = time.perf_counter()
    record("tf_mobilenet_v1_1.0_224 (graph)", "ours, symmetric padding", run_ours(symmetric_twin(model), x),
           time.perf_counter() - start)

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("| model | runner | top-1 % | top-5 % | top-1 agrees with TFLite % |\n| --- | --- | ---: | ---: | ---: |")
        for r in results:
            agree = "" if r["agree_with_tflite"] is None else f"{r['agree_with_tflite']:.2f}"
            print(f"| {r['model']} | {r['runner']} | {r['top1']:.2f} | {r['top5']:.2f} | {agree} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

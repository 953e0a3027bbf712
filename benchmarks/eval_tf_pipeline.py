"""``mobilenet evaluate`` of TF's published models against TF's own evaluation pipeline.

Two steps, because TensorFlow is no dependency of the project:

    # 1. under a Python with TensorFlow (a separate venv: pip install tensorflow-cpu numpy)
    python benchmarks/eval_tf_pipeline.py tf-inputs --out /tmp/tf-inputs
    # 2. with the project
    .venv/bin/python benchmarks/eval_tf_pipeline.py compare --tf-inputs /tmp/tf-inputs [--json]

Images: the evaluation split of ``shared/assets/imagenet-val1300`` (file names sorted; the first 300
are for calibration, the remaining 1,000 are evaluated here).

Step 1 runs TF-slim's ``preprocess_for_eval`` in TensorFlow itself: ``tf.io.decode_jpeg``
(channels=3, TF's default fast IDCT), ``convert_image_dtype`` to [0, 1], ``central_crop(0.875)``,
TF1's ``resize_bilinear`` (align_corners=False), for each input size, and saves the float images
(before TF-slim's final ``(x - 0.5) * 2``).

Step 2 evaluates every published TF model whose file is at hand (the TFLite files in
``shared/assets/tflite`` and the default TF-slim graph, from the cache or PyPI), four ways:

* ``evaluate``: ``mobilenet.evaluate`` exactly as a user runs it (the registry's recipe: TF's JPEG
  decoder, TF's crop and resize);
* ``evaluate, Pillow decoder``: the same with Pillow's JPEG decoder (what ``evaluate`` did before);
* ``ours on TF's inputs``: the same converted network fed step 1's images (normalised by the
  registry's recipe): the difference to ``evaluate`` is preprocessing alone;
* ``TFLite on TF's inputs``: TFLite's interpreter (``ai-edge-litert``) on the TFLite file itself,
  fed step 1's images as TF-slim normalises them (float models) or rounded to uint8 pixels (uint8
  models, whose input is the pixel): TF's own pipeline end to end.

Weights come through the registry, found on disk with ``MOBILENET_WEIGHTS_PATH`` (set here to the
assets' tflite folder and the user cache's downloads) and converted into a private cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
SIZES = (128, 160, 192, 224)
# Registry name -> the TFLite files it is made of (None: no TFLite twin), at hand in shared/assets.
MODELS: dict[str, list[str] | None] = {
    "tflite_mobilenet_v1_0.25_128_quant": ["mobilenet_v1_0.25_128_quant.tflite"],
    "tflite_mobilenet_v1_0.5_160_quant": ["mobilenet_v1_0.5_160_quant.tflite"],
    "tflite_mobilenet_v1_0.75_192_quant": ["mobilenet_v1_0.75_192_quant.tflite"],
    "tflite_mobilenet_v1_0.25_224": ["mobilenet_v1_0.25_224.tflite"],
    "tflite_mobilenet_v1_0.25_224_quant": ["mobilenet_v1_0.25_224_quant.tflite"],
    "tflite_mobilenet_v1_1.0_224_quant": ["mobilenet_v1_1.0_224_quant_body.tflite",
                                          "mobilenet_v1_1.0_224_quant_head.tflite"],
    "tf_mobilenet_v1_1.0_224": None,
}


def evaluation_split(assets: Path) -> list[tuple[str, int]]:
    """(file name, label 0-999) of the 1,000 evaluation images, in sorted order."""
    with open(assets / "imagenet-val1300" / "labels.csv", encoding="utf-8") as f:
        rows = sorted((r["file"], int(r["label"])) for r in csv.DictReader(f))
    return rows[300:]


def tf_inputs(args: argparse.Namespace) -> int:
    import tensorflow as tf

    rows = evaluation_split(args.assets)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.assets / "imagenet-val1300" / "images"
    images = [tf.image.central_crop(tf.image.convert_image_dtype(
        tf.io.decode_jpeg(tf.io.read_file(str(folder / name)), channels=3), tf.float32), 0.875)
        for name, _ in rows]
    for size in SIZES:
        batch = np.stack([tf.compat.v1.image.resize_bilinear(image[None], [size, size], align_corners=False)[0]
                          .numpy() for image in images])
        np.save(args.out / f"tf_inputs_{size}.npy", batch.astype(np.float32))
    (args.out / "files.json").write_text(json.dumps([name for name, _ in rows]))
    print(f"{len(rows)} images at {SIZES} -> {args.out} (TensorFlow {tf.__version__})", file=sys.stderr)
    return 0


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 in percent over the 1,000 real classes (TF's background column dropped)."""
    scores = logits[:, 1:] if logits.shape[1] == 1001 else logits
    return 100.0 * float((np.argmax(scores, axis=1) == labels).mean())


def run_tflite(paths: list[Path], pixels_01: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreters = []
    for path in paths:
        interpreter = Interpreter(model_path=str(path), num_threads=2)
        interpreter.allocate_tensors()
        interpreters.append(interpreter)
    first = interpreters[0].get_input_details()[0]
    if first["dtype"] == np.uint8:  # the pixel itself
        x_all = np.clip(np.rint(pixels_01 * 255.0), 0, 255).astype(np.uint8)
    else:  # TF-slim's normalisation, in TF's order
        x_all = (pixels_01 - np.float32(0.5)) * np.float32(2.0)
    out = []
    for x in x_all:
        y = x[None]
        for interpreter in interpreters:
            inp, res = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            interpreter.set_tensor(inp["index"], y.reshape(inp["shape"]).astype(inp["dtype"]))
            interpreter.invoke()
            y = interpreter.get_tensor(res["index"]).copy()
        out.append(y.reshape(-1).astype(np.float32))
    return np.stack(out)


def compare_one(name: str, files: list[str] | None, csv_path: Path, inputs: Path, labels: np.ndarray,
                assets: Path) -> dict[str, object]:
    import torch

    import mobilenet
    from mobilenet.factory import load_model

    row: dict[str, object] = {"model": name}
    row["evaluate"] = mobilenet.evaluate(csv_path, weights=name, progress=False)["top1"]
    model = load_model(name)
    cfg = model.pretrained_cfg
    model.pretrained_cfg = replace(cfg, preprocess=cfg.preprocess.replace(decoder="pillow"))
    row["evaluate_pillow_decoder"] = mobilenet.evaluate(csv_path, weights=model, progress=False)["top1"]
    model.pretrained_cfg = cfg
    size = cfg.preprocess.resolution[0]
    pixels = np.load(inputs / f"tf_inputs_{size}.npy", mmap_mode="r")
    mean, std = torch.tensor(cfg.preprocess.mean), torch.tensor(cfg.preprocess.std)
    logits = []
    with torch.inference_mode():
        for start in range(0, len(pixels), 50):
            x = (torch.from_numpy(np.array(pixels[start:start + 50])) - mean) / std
            logits.append(model(x.permute(0, 3, 1, 2).contiguous()).numpy())
    row["ours_on_tf_inputs"] = top1(np.concatenate(logits), labels)
    if files is not None:
        row["tflite_on_tf_inputs"] = top1(run_tflite([assets / "tflite" / f for f in files], np.asarray(pixels)),
                                          labels)
    row["gap_preprocessing"] = round(row["evaluate"] - row["ours_on_tf_inputs"], 2)  # type: ignore[operator]
    return row


def compare(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(2)
    rows = evaluation_split(args.assets)
    labels = np.array([label for _, label in rows])
    if json.loads((args.tf_inputs / "files.json").read_text()) != [name for name, _ in rows]:
        raise SystemExit(f"{args.tf_inputs} holds another image list; make it again (tf-inputs)")
    user_cache = Path(os.environ.get("MOBILENET_CACHE", Path.home() / ".cache" / "mobilenet"))
    results = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval-tf-pipeline-") as tmp:
        os.environ["MOBILENET_CACHE"] = str(Path(tmp) / "cache")
        os.environ["MOBILENET_WEIGHTS_PATH"] = os.pathsep.join([str(args.assets / "tflite"),
                                                                 str(user_cache / "files")])
        csv_path = Path(tmp) / "eval.csv"
        folder = args.assets / "imagenet-val1300" / "images"
        csv_path.write_text("".join(f"{folder / name},{label}\n" for name, label in rows), encoding="utf-8")
        for name, files in MODELS.items():
            row = compare_one(name, files, csv_path, args.tf_inputs, labels, args.assets)
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    meta = {"images": len(rows), "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        print(json.dumps({"meta": meta, "results": results}, indent=2))
        return 0
    print("| model | evaluate | evaluate, Pillow decoder | ours on TF's inputs | TFLite on TF's inputs | "
          "evaluate − ours on TF's |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        tflite = f"{r['tflite_on_tf_inputs']:.1f}" if "tflite_on_tf_inputs" in r else "–"
        print(f"| {r['model']} | {r['evaluate']:.1f} | {r['evaluate_pillow_decoder']:.1f} | "
              f"{r['ours_on_tf_inputs']:.1f} | {tflite} | {r['gap_preprocessing']:+.1f} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ASSETS)
    sub = parser.add_subparsers(dest="step", required=True)
    make = sub.add_parser("tf-inputs", help="run TF-slim's evaluation preprocessing in TensorFlow")
    make.add_argument("--out", type=Path, required=True)
    run = sub.add_parser("compare", help="evaluate beside TF's inputs and TFLite (the project's venv)")
    run.add_argument("--tf-inputs", type=Path, required=True)
    run.add_argument("--json", action="store_true")
    args = parser.parse_args()
    return tf_inputs(args) if args.step == "tf-inputs" else compare(args)


if __name__ == "__main__":
    sys.exit(main())

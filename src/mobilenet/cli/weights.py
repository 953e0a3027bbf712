"""``mobilenet pretrained``, ``convert``, ``classify`` and ``evaluate``: the published weights.

Each command parses its arguments, calls one library function and prints what it returns:
``weights.describe_pretrained``, ``weights.convert_file``, ``inference.classify`` and
``inference.evaluate``. Output classes are the 1,000 ImageNet classes in the standard order: TF's
1001-class models have their "background" logit (index 0) dropped before the softmax, so
probabilities sum to one over real classes and ``index`` is the same for TF, Keras and timm weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mobilenet.arch import PADDINGS, ArchConfig
from mobilenet.cli.common import Choices
from mobilenet.deploy.runtimes import PRECISIONS, RUNTIME_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrained", help="list the published weights this project knows",
        description="The pretrained registry: names for --weights, what they are, published accuracy, and whether "
        "they are already in the cache ($MOBILENET_CACHE or ~/.cache/mobilenet).",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_pretrained)

    p = subparsers.add_parser(
        "convert", help="convert TFLite / TF GraphDef / Keras / timm / transformers weights to safetensors",
        description="Convert published MobileNet v1 weights to this project's safetensors file (architecture and "
        "preprocessing in its metadata). The format is detected from the file; a TFLite model split in parts "
        "(body, head) is given as several SOURCE files in order.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="weight file(s) to read")
    p.add_argument("out", metavar="OUT.safetensors", help="file to write (atomically)")
    p.add_argument("--format", choices=Choices("mobilenet.weights.convert", "FORMATS"), default=None,
                   metavar="FORMAT", help="skip detection and read SOURCE as this format: %(choices)s")
    p.add_argument("--resolution", type=int, default=None,
                   help="input size the weights were trained at (Keras and timm files do not record it; default 224)")
    p.add_argument("--alpha", type=float, default=None, help="width multiplier, if it cannot be read off the shapes")
    p.add_argument("--padding", choices=PADDINGS, default=None,
                   help="override the padding implied by the format (tf for TF and transformers, keras for Keras, "
                   "symmetric for timm)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser(
        "classify", help="top-k ImageNet classes of photos",
        description="Classify images with published weights. With no IMAGE, classifies the photos that ship with "
        "the dependencies (matplotlib's grace_hopper.jpg; scikit-image's chelsea.png, coffee.png and astronaut.png). "
        "An unreadable image gets one error line and the others are still classified; the exit status is 1 "
        "if any image failed.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE")
    _add_weights_arguments(p)
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true",
                   help='print [{"image", "top": [{"index", "label", "probability"}]}], indices in 1000-class order')
    p.set_defaults(func=run_classify)

    p = subparsers.add_parser(
        "evaluate", help="top-1/top-5 accuracy on an ImageFolder tree or a file,label CSV",
        description="Top-1 and top-5 accuracy (percent) with the weights' own preprocessing. DATA is an ImageFolder "
        "tree (folders named by WordNet id, e.g. n01440764, or by class index) or a CSV of 'file,label' rows "
        "with labels 0-999. Runs sharded under torchrun.",
    )
    _add_weights_arguments(p)
    p.add_argument("--data", required=True, metavar="DIR_OR_CSV")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--bad-files", choices=Choices("mobilenet.datasets", "BAD_FILE_POLICIES"), default="skip",
                   metavar="POLICY",
                   help="unreadable images: skip and count them (default), or stop at the first")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N images (folders: sorted order; CSV: row order)")
    p.add_argument("--json", action="store_true", help='print {"top1", "top5", "images"} (percent)')
    p.set_defaults(func=run_evaluate)


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, metavar="NAME|FILE",
                   help="registry name (see `mobilenet pretrained`), our .safetensors, a training checkpoint "
                   "or any file `convert` reads (default: tf_mobilenet_v1_1.0_224)")
    # None: not given, so that --exported can refuse them rather than ignore them.
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default=None, help="inference runtime (default torch)")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default fp32")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="images to calibrate int8 on (never the ones you evaluate)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's choice)")
    p.add_argument("--device", default="cpu", help="torch device for --runtime torch (default cpu)")
    p.add_argument("--allow-emulated-bf16", action="store_true", dest="allow_emulation",
                   help="run --precision bf16 with PyTorch even where the CPU has no bf16 (many times slower)")
    p.add_argument("--exported", type=Path, default=None, metavar="FILE",
                   help="run a file written by `mobilenet export` (.onnx, .xml, .tflite, .pte) in its own runtime, "
                   "at its own precision (--runtime, --precision and --calibration do not apply), with the "
                   "preprocessing and labels its metadata gives and, for evaluate, beside the weights it names "
                   "as the fp32 reference; --weights: compare with these (needed for a file without metadata)")
    p.add_argument("--resize", choices=Choices("mobilenet.preprocess", "RESIZES"), default=None, metavar="RESIZE",
                   help="tf: TF1's bilinear resize without antialiasing (TF-slim's evaluation, the default for "
                   "TF and Keras weights); pillow: Pillow's antialiased filter (default for timm and transformers)")


# ------------------------------------------------------------------------------------------- pretrained


def run_pretrained(args: argparse.Namespace) -> int:
    from mobilenet.weights import describe_pretrained

    rows = describe_pretrained()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        top1 = row["published"].get("top1")
        mark = " (default)" if row["default"] else ""
        check = "checksum-pinned" if row["verified"] else "no checksum (checked by tensor shapes and statistics)"
        print(f"{row['name']}{mark}  [{row['family']}, alpha {row['alpha']:g}, {row['resolution']} px, "
              f"published top-1 {top1}%{', cached' if row['cached'] else ''}]\n"
              f"    {row['publisher']}; {check}")
    return 0


# ---------------------------------------------------------------------------------------------- convert


def run_convert(args: argparse.Namespace) -> int:
    from mobilenet.weights import convert_file

    summary = convert_file(args.sources, args.out, args.format, resolution=args.resolution, alpha=args.alpha,
                           padding=args.padding)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        arch = summary["arch"]
        folded = "BatchNorm folded into conv biases" if summary["bn_folded"] else "BatchNorm kept"
        print(f"{summary['out']}: {ArchConfig.from_dict(arch).name}, {arch['num_classes']} classes, "
              f"padding {arch['padding']}, eps {arch['bn_eps']:g}, {folded} (from {summary['format']})")
    return 0


# -------------------------------------------------------------------------------------- classify, evaluate


def _running(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``classify`` / ``evaluate`` that say how the weights run."""
    return {"weights": args.weights, "runtime": args.runtime, "precision": args.precision,
            "calibration": args.calibration, "threads": args.threads, "device": args.device,
            "allow_emulation": args.allow_emulation, "exported": args.exported, "resize": args.resize}


def run_classify(args: argparse.Namespace) -> int:
    from mobilenet.inference import classify

    classification = classify(args.images or None, top_k=args.top_k, **_running(args))
    print(f"weights {classification.weights}; {classification.description}", file=sys.stderr)
    for image in classification.failed:
        print(f"mobilenet classify: error: {image.error}", file=sys.stderr)
    if args.json:
        print(json.dumps(classification.to_list(), indent=2))
    else:
        for image in classification:
            if not image.ok:
                continue
            print(str(image.image) if args.images else image.image.name)
            for rank, entry in enumerate(image.to_dict()["top"], start=1):
                print(f"  {rank}. {entry['label']:<32} {100 * entry['probability']:6.2f}%  (class {entry['index']})")
    return 1 if classification.failed else 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mobilenet.accuracy import is_main_process
    from mobilenet.inference import evaluate

    evaluation = evaluate(args.data, batch_size=args.batch_size, workers=args.workers, bad_files=args.bad_files,
                          limit=args.limit, **_running(args))
    if not is_main_process():
        return 0
    if args.json:
        print(json.dumps(evaluation.to_dict(), indent=2))
        return 0
    for run in evaluation.runs:
        r = run.result
        print(f"{evaluation.weights} {run.runtime} {run.precision}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
              f"on {r['images']} images" + (f" ({r['skipped']} unreadable, skipped)" if r["skipped"] else ""))
    return 0

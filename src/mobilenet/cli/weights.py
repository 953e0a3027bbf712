"""``mobilenet convert``, ``mobilenet classify`` and ``mobilenet evaluate``: the published weights.

Output classes are always the 1,000 ImageNet classes in the standard order: TF's 1001-class
models have their "background" logit (index 0) dropped before the softmax, so probabilities sum to
one over real classes and ``index`` is the same for TF, Keras and timm weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError

RUNTIMES = ("torch", "onnxruntime", "openvino", "litert", "executorch", "auto")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrained", help="list the published weights this project knows",
        description="The pretrained registry: names for --weights, what they are, published accuracy, and whether "
        "they are already in the cache ($MOBILENET_CACHE or ~/.cache/mobilenet).",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_pretrained)

    p = subparsers.add_parser(
        "convert", help="convert TFLite / TF GraphDef / Keras .h5 / timm weights to safetensors",
        description="Convert published MobileNet v1 weights to this project's safetensors file (architecture and "
        "preprocessing in its metadata). The format is detected from the file; a TFLite model split in parts "
        "(body, head) is given as several SOURCE files in order.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="weight file(s) to read")
    p.add_argument("out", metavar="OUT.safetensors", help="file to write (atomically)")
    p.add_argument("--format", choices=("tflite", "tf-graphdef", "keras", "timm"), default=None,
                   help="skip detection and read SOURCE as this format")
    p.add_argument("--resolution", type=int, default=None,
                   help="input size the weights were trained at (Keras and timm files do not record it; default 224)")
    p.add_argument("--alpha", type=float, default=None, help="width multiplier, if it cannot be read off the shapes")
    p.add_argument("--padding", choices=("tf", "symmetric"), default=None,
                   help="override the padding implied by the format (tf for TF/Keras, symmetric for timm)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_convert)

    p = subparsers.add_parser(
        "classify", help="top-k ImageNet classes of photos",
        description="Classify images with published weights. With no IMAGE, classifies the photos that ship with "
        "the dependencies (matplotlib's grace_hopper.jpg, scikit-image's chelsea.png and coffee.png). "
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
    p.add_argument("--bad-files", choices=("skip", "stop"), default="skip",
                   help="unreadable images: skip and count them (default), or stop at the first")
    p.add_argument("--limit", type=int, default=None,
                   help="evaluate only the first N images (folders: sorted order; CSV: row order)")
    p.add_argument("--json", action="store_true", help='print {"top1", "top5", "images"} (percent)')
    p.set_defaults(func=run_evaluate)


def _add_weights_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, metavar="NAME|FILE",
                   help="registry name (see `mobilenet pretrained`), our .safetensors, a training checkpoint "
                   "or any file `convert` reads (default: tf_mobilenet_v1_1.0_224)")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch", help="inference runtime (default torch)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="default fp32")
    p.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                   help="images to calibrate int8 on (never the ones you evaluate)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the runtime's choice)")
    p.add_argument("--device", default="cpu", help="torch device for --runtime torch (default cpu)")
    p.add_argument("--allow-emulated-bf16", action="store_true",
                   help="run --precision bf16 with PyTorch even where the CPU has no bf16 (many times slower)")
    p.add_argument("--exported", type=Path, default=None, metavar="FILE",
                   help="run a file written by `mobilenet export` (.onnx, .xml, .tflite, .pte) in its own runtime, "
                   "at its own precision; --weights names the weights it was exported from (their preprocessing "
                   "and labels)")
    p.add_argument("--resize", choices=("tf", "pillow"), default=None,
                   help="tf: TF1's bilinear resize without antialiasing (TF-slim's evaluation, the default for "
                   "TF and Keras weights); pillow: Pillow's antialiased filter (default for timm and transformers)")


# ------------------------------------------------------------------------------------------- pretrained


def run_pretrained(args: argparse.Namespace) -> int:
    from mobilenet.weights import DEFAULT, REGISTRY, cache_dir

    rows = []
    for name, entry in sorted(REGISTRY.items()):
        cached = (cache_dir() / "converted" / f"{name}.safetensors").is_file()
        arch = entry.arch_config
        rows.append({
            "name": name, "default": name == DEFAULT, "family": entry.family, "description": entry.description,
            "alpha": arch.alpha, "resolution": arch.resolution[0], "classes": arch.num_classes,
            "padding": arch.padding, "publisher": entry.publisher, "format": entry.format,
            "files": [{"filename": f.filename, "sha256": f.sha256, "sources": list(f.sources)} for f in entry.files],
            "verified": entry.verified, "preprocess": entry.preprocess.to_dict(), "published": entry.published,
            "cached": cached,
        })
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
    from mobilenet.files import refuse_overwrite
    from mobilenet.weights import convert, save_safetensors, sha256_file

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"OUT must end in .safetensors, got {out.name!r}")
    refuse_overwrite(out, args.sources)  # before reading anything: `convert X X` must not destroy X
    settings = {"resolution": args.resolution, "alpha": args.alpha, "padding": args.padding}
    model, cfg = convert([Path(s) for s in args.sources], args.format,
                         **{k: v for k, v in settings.items() if v is not None})
    checksums = ", ".join(f"{Path(s).name} sha256 {sha256_file(s)}" for s in args.sources if Path(s).is_file())
    save_safetensors(model, out, cfg, source=f"{cfg.description}; {checksums}", inputs=args.sources)
    summary = {
        "out": str(out), "format": cfg.format, "arch": model.arch_cfg.to_dict(), "bn_folded": model.stem.folded,
        "preprocess": cfg.preprocess.to_dict(), "label_set": cfg.label_set,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        folded = "BatchNorm folded into conv biases" if model.stem.folded else "BatchNorm kept"
        print(f"{out}: {model.arch_cfg.name}, {model.arch_cfg.num_classes} classes, padding {model.arch_cfg.padding}, "
              f"eps {model.arch_cfg.bn_eps:g}, {folded} (from {cfg.format})")
    return 0


# --------------------------------------------------------------------------------------------- runtimes


def _load(args: argparse.Namespace):
    """The model for --weights (default: the default entry), with the model flags merged and checked."""
    from mobilenet.cli.common import model_from_args
    from mobilenet.weights import DEFAULT

    if not getattr(args, "weights", None):
        args.weights = DEFAULT
    model, _ = model_from_args(args)
    return model


def _calibration_images(folder: Path | None) -> list[Path] | None:
    if folder is None:
        return None
    from mobilenet.datasets import is_image_file

    if not folder.is_dir():
        raise InputError(f"--calibration {folder}: no such directory")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not images:
        raise InputError(f"--calibration {folder}: no images found")
    return images


def _predictor(model, args: argparse.Namespace, precision: str | None = None, runtime: str | None = None):
    """(NCHW -> logits over the 1,000 ImageNet classes, description)."""
    from mobilenet.accuracy import drop_background, torch_predictor

    precision = precision or args.precision
    runtime = runtime or args.runtime
    if getattr(args, "exported", None) is not None and runtime != "reference":
        return _exported_predictor(model, args)
    if runtime == "reference":
        runtime = "torch"
    if runtime == "torch" and precision == "fp32":
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        predict = torch_predictor(model, args.device)
    else:
        try:
            from mobilenet.deploy.runtime import make_predictor
        except ImportError as err:
            raise InputError(f"--runtime {runtime} / --precision {precision} needs mobilenet.deploy ({err})") from None
        predict = make_predictor(
            model, runtime=runtime, precision=precision, preprocess=_preprocess(model, args),
            calibration_images=_calibration_images(args.calibration), threads=args.threads,
            batch_size=getattr(args, "batch_size", 1), allow_emulation=args.allow_emulated_bf16,
        )
    description = getattr(predict, "description", f"{runtime} {precision}")
    if model.pretrained_cfg.has_background_class:
        predict = drop_background(predict)
    return predict, description


def _exported_predictor(model, args: argparse.Namespace):
    """A file from `mobilenet export` (or TF's own .tflite), run where it runs, over the 1,000
    classes: a 1001-logit file (TF's background first) loses its first column."""
    from mobilenet.deploy.runtime import predictor_from_file

    predictor = predictor_from_file(args.exported, threads=args.threads)
    classes = len(_class_names(model))

    def predict(batch):
        logits = predictor(batch)
        if logits.shape[1] == classes + 1:
            return logits[:, 1:]
        if logits.shape[1] != classes:
            raise InputError(f"{args.exported} gives {logits.shape[1]} logits; the weights {model.pretrained_cfg.name} "
                             f"have {classes} classes: name the weights it was exported from with --weights")
        return logits

    description = f"{args.exported.name}: {predictor.description}"
    predict.description = description  # type: ignore[attr-defined]
    return predict, description


def _preprocess(model, args: argparse.Namespace):
    """The weights' own preprocessing, with --resize if given."""
    pre = model.pretrained_cfg.preprocess
    if getattr(args, "resize", None):
        pre = pre.replace(resize=args.resize, **({"interpolation": "bilinear"} if args.resize == "tf" else {}))
    return pre


def _class_names(model) -> list[str]:
    names = model.pretrained_cfg.label_names
    return names[1:] if model.pretrained_cfg.has_background_class else names


# -------------------------------------------------------------------------------------------- classify


def default_photos() -> list[Path]:
    """Real photos inside installed packages: matplotlib's Grace Hopper, scikit-image's cat and coffee."""
    photos = []
    try:
        import matplotlib

        photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        photos += [data / "chelsea.png", data / "coffee.png"]
    except ImportError:
        pass
    return [p for p in photos if p.is_file()]


def run_classify(args: argparse.Namespace) -> int:
    from mobilenet.preprocess import ImageError, load_image
    from mobilenet.weights.labels import IMAGENET_1000, IMAGENET_1001, decode_predictions

    if args.top_k < 1:
        raise InputError(f"--top-k must be >= 1, got {args.top_k}")
    images = [Path(p) for p in args.images] or default_photos()
    if not images:
        raise InputError("no IMAGE given and no sample photos found (pip install matplotlib scikit-image)")
    model = _load(args)
    predict, description = _predictor(model, args)
    print(f"weights {model.pretrained_cfg.name}; {description}", file=sys.stderr)
    names = _class_names(model)
    imagenet = len(names) == 1000 and model.pretrained_cfg.label_set in (IMAGENET_1000, IMAGENET_1001)
    transform = _preprocess(model, args).eval_transform()
    k = min(args.top_k, len(names))
    results: list[dict[str, Any]] = []
    failed = 0
    for path in images:
        try:
            x = transform(load_image(path))[None]
        except ImageError as err:
            failed += 1
            print(f"mobilenet classify: error: {err}", file=sys.stderr)
            results.append({"image": str(path), "error": str(err)})
            continue
        top = decode_predictions(predict(x), top=k, labels=None if imagenet else names)[0]
        results.append({
            "image": str(path),
            "top": [{"index": p.index, "label": p.label, "probability": round(p.score, 6)} for p in top],
        })
        if not args.json:
            print(str(path) if args.images else path.name)
            for rank, entry in enumerate(results[-1]["top"], start=1):
                print(f"  {rank}. {entry['label']:<32} {100 * entry['probability']:6.2f}%  (class {entry['index']})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


# -------------------------------------------------------------------------------------------- evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    from torch.utils.data import Subset

    from mobilenet.accuracy import accuracy, is_main_process
    from mobilenet.datasets import ImageFolderDataset, open_dataset
    from mobilenet.weights.labels import imagenet_classes

    model = _load(args)
    cfg = model.pretrained_cfg
    transform = _preprocess(model, args).eval_transform()
    names = _class_names(model)
    imagenet = cfg.label_set in ("imagenet-1000", "imagenet-1001")
    classes = [wnid for wnid, _ in imagenet_classes()] if imagenet else (list(cfg.labels) if cfg.labels else None)
    data = Path(args.data)
    dataset = open_dataset(data, transform, classes=classes, bad_files=args.bad_files, num_classes=len(names))
    if isinstance(dataset, ImageFolderDataset) and classes is None and len(dataset.classes) != len(names):
        raise InputError(f"{data} has {len(dataset.classes)} class folders; the model has {len(names)} classes")
    if args.limit is not None:
        if args.limit < 1:
            raise InputError(f"--limit must be >= 1, got {args.limit}")
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    if args.exported is not None:  # the file as it runs, beside the PyTorch model it came from
        runs = [("exported", args.runtime), ("fp32", "reference")]
    elif args.precision == "fp32":
        runs = [("fp32", args.runtime)]
    else:
        runs = [(args.precision, args.runtime), ("fp32", "torch")]
    results = []
    for precision, runtime in runs:
        predict, description = _predictor(model, args, precision=precision, runtime=runtime)
        if is_main_process():
            print(f"weights {cfg.name}; {description}", file=sys.stderr)
        results.append(accuracy(predict, dataset, batch_size=args.batch_size, num_workers=args.workers,
                                device=args.device, description=f"{precision}"))
    if not is_main_process():
        return 0
    result = results[0]
    if len(results) > 1:
        result = result | {"fp32": results[1]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for (precision, runtime), r in zip(runs, results):
            print(f"{cfg.name} {runtime} {precision}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  "
                  f"on {r['images']} images" + (f" ({r['skipped']} unreadable, skipped)" if r["skipped"] else ""))
    return 0

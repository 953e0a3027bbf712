"""``mobilenet export`` (ONNX / OpenVINO, fp32 / int8, verified) and ``mobilenet bench``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from mobilenet.cli.common import add_model_arguments, given_model_settings, model_from_args
from mobilenet.errors import InputError

RUNTIMES = ("torch", "onnxruntime", "openvino", "litert", "executorch", "auto")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
FORMATS = ("onnx", "openvino", "tflite", "executorch", "coreml")
DEFAULT_TFLITE_DIR = Path("../shared/assets/tflite")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export to ONNX, OpenVINO, LiteRT .tflite, ExecuTorch .pte or Core ML, verified on real photos",
        description="Export the folded model (default: the published ImageNet weights). The written file is run "
        "by its own runtime on real photos and compared with PyTorch; a mismatch is an error and nothing is "
        "written. Core ML packages are checked structurally off macOS (Core ML predicts only on Apple platforms).",
    )
    p.add_argument("output", type=Path,
                   help="the file to write: .onnx, .xml (OpenVINO, with a .bin beside it), .tflite, .pte, .mlpackage")
    p.add_argument("--format", choices=tuple(FORMATS), default=None, help="default: from the output's suffix")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp16: .tflite and Core ML weights; int8: needs --calibration")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="int8: a folder of a few hundred real images (the first 300 by name are used)")
    p.add_argument("--verify-images", type=Path, metavar="DIR",
                   help="images to verify on (default: photos shipped with matplotlib and scikit-image)")
    p.add_argument("--int8-weights", choices=("portable", "8bit"), default="portable",
                   help="ONNX/OpenVINO int8: portable keeps weights to 7 bits, exact on every x86 CPU (CPUs "
                   "without VNNI saturate 8-bit products); 8bit is for VNNI/AMX targets only (default portable)")
    p.add_argument("--fixed-batch", type=int, default=None, metavar="N",
                   help="ONNX: a fixed batch size instead of a dynamic one (ONNX Runtime Mobile / NNAPI need it)")
    p.add_argument("--layout", choices=("nhwc", "nchw"), default=None,
                   help="input layout of .tflite, .pte and .mlpackage files (default nhwc for .tflite and .pte, "
                   "as phones hand camera frames; nchw for Core ML)")
    p.add_argument("--io-dtype", choices=("uint8", "int8", "float32"), default="uint8",
                   help=".tflite int8: the input and output type (default uint8 pixels, as TF's quantized models)")
    p.add_argument("--random-init", action="store_true",
                   help="export an untrained network (BatchNorm statistics measured on the verification photos, "
                   "so that its outputs depend on its weights) instead of the published weights")
    _add_weights_argument(p, default_help="published weights (a registry name or a file); default: "
                          "the default ImageNet weights, as `mobilenet classify` uses")
    add_model_arguments(p)
    p.set_defaults(func=cmd_export)

    b = subparsers.add_parser(
        "bench", help="latency and throughput per runtime, precision and batch size, against the cost model",
        description="Measures every runtime x precision x batch size interleaved in one process (ratios hold "
        "on a noisy machine), with peers (timm eager, TF's .tflite), separable vs full convolution, per-layer "
        "time shares against mult-add shares, and memory against the cost model. Every report names the CPU, "
        "its ISA and whether it has int8 dot products and bf16.",
    )
    b.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=None, dest="runtimes",
                   help="default: torch onnxruntime openvino")
    b.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None, dest="precisions", help="default fp32")
    b.add_argument("--batch-size", nargs="+", type=int, default=None, dest="batch_sizes", help="default: 1 32")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads for every runtime (default: theirs)")
    b.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell after warm-up (default 3)")
    b.add_argument("--calibration", type=Path, metavar="DIR", help="real images for int8 (first 300 by name)")
    b.add_argument("--tflite-dir", type=Path, default=DEFAULT_TFLITE_DIR,
                   help=f"TensorFlow's published .tflite models (default {DEFAULT_TFLITE_DIR})")
    b.add_argument("--no-peers", action="store_true", help="skip timm and TFLite")
    b.add_argument("--no-conv", action="store_true", help="skip separable vs full-convolution")
    b.add_argument("--no-layers", action="store_true", help="skip per-layer time shares")
    b.add_argument("--no-memory", action="store_true", help="skip memory measurement (fresh processes)")
    b.add_argument("--no-malloc-tuning", action="store_true",
                   help="do not restart under GLIBC_TUNABLES that keep freed memory (see docs/performance.md)")
    b.add_argument("--json", action="store_true", help="print the full report as JSON")
    b.add_argument("--save", type=Path, metavar="FILE.json", help="also write the JSON report to this file")
    b.add_argument("--plot", type=Path, metavar="FILE.png", help="write latency and throughput charts")
    _add_weights_argument(b, default_help="pretrained weights (a registry name or a file); default: random "
                          "initialisation with the model flags (speed does not depend on the weights)")
    add_model_arguments(b)
    b.set_defaults(func=cmd_bench)


def _add_weights_argument(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--weights", default=None, metavar="NAME|FILE", help=default_help)


def _model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, preprocess) from --weights merged with the model flags (a contradiction is an
    error, never a silently dropped flag), or a fresh model from the flags."""
    return model_from_args(args)


def _images(folder: Path | None, flag: str) -> list[Path] | None:
    if folder is None:
        return None
    from mobilenet.deploy.quantize import image_files

    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: no such folder")
    return image_files(folder)


# --------------------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenet.deploy.export import export
    from mobilenet.deploy.formats import format_for_path

    fmt = args.format or format_for_path(args.output)
    if args.precision == "int8" and args.calibration is None:
        raise InputError("--precision int8 needs --calibration DIR: a folder of a few hundred real images")
    if args.random_init and args.weights:
        raise InputError("--random-init and --weights contradict each other: give one")
    options: dict[str, Any] = {}
    if fmt in ("onnx", "openvino") and args.precision == "int8":
        options["portable_int8"] = args.int8_weights == "portable"
    if args.fixed_batch is not None:
        if fmt != "onnx":
            raise InputError("--fixed-batch applies to ONNX exports only")
        options["fixed_batch"] = args.fixed_batch
    if args.layout is not None:
        if fmt in ("onnx", "openvino"):
            raise InputError("--layout applies to .tflite, .pte and .mlpackage exports (ONNX and OpenVINO take NCHW)")
        options["layout"] = args.layout
    if fmt == "tflite" and args.precision == "int8":
        options["io_dtype"] = args.io_dtype
    verify_images = _images(args.verify_images, "--verify-images")
    model, preprocess = _export_model(args, verify_images)
    inputs = [args.weights] if args.weights and Path(args.weights).exists() else []
    check = export(
        model, args.output, format=fmt, precision=args.precision, preprocess=preprocess,
        verify_images=verify_images, calibration_images=_images(args.calibration, "--calibration"),
        inputs=inputs, **options,
    )
    files = [args.output] + ([args.output.with_suffix(".bin")] if fmt == "openvino" else [])
    size = sum(_size(f) for f in files)
    c, h, w = model.arch_cfg.in_channels, model.arch_cfg.height, model.arch_cfg.width
    if fmt in ("onnx", "openvino"):
        shape = f"{'batch ' + str(args.fixed_batch) if args.fixed_batch else 'dynamic batch'}, input NCHW {c}x{h}x{w}"
    else:  # the mobile files are traced at batch 1
        nhwc = (args.layout or ("nchw" if fmt == "coreml" else "nhwc")) == "nhwc"
        shape = f"batch 1, input {f'NHWC {h}x{w}x{c}' if nhwc else f'NCHW {c}x{h}x{w}'}"
    written = " + ".join(map(str, files))
    print(f"wrote {written} ({size / 1e6:.1f} MB): {model.arch_cfg.name} {fmt} {args.precision}, {shape}")
    print(check.summary())
    return 0


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _export_model(args: argparse.Namespace, verify_images: list[Path] | None) -> tuple[Any, Any]:
    """The published weights unless --random-init: an untrained network exported for its shape
    gets BatchNorm statistics measured on the photos, so verification compares real signal."""
    if not args.random_init:
        if args.weights is None:  # the published model for the flags given, as Keras' weights="imagenet"
            from mobilenet.factory import mobilenet_v1

            model = mobilenet_v1(pretrained=True, **given_model_settings(args)).eval()
            return model, model.pretrained_cfg.preprocess
        return _model(args)
    model, preprocess = _model(args)
    from mobilenet.deploy.verify import photo_batch

    measure_batchnorm_statistics(model, photo_batch(model, verify_images, preprocess))
    return model, preprocess


def measure_batchnorm_statistics(model: Any, images: Any) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (cumulative average), as
    after training: a fresh network's BatchNorms are the identity and its logits ~1e-11."""
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model.train()(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


# --------------------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from mobilenet.deploy import bench

    _restart_for_fair_timing(args, bench.MALLOC_TUNABLES)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    if args.batch_sizes and min(args.batch_sizes) < 1:
        raise InputError(f"--batch-size values must be >= 1, got {args.batch_sizes}")
    if args.seconds <= 0:
        raise InputError(f"--seconds must be > 0, got {args.seconds}")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"--plot writes .png, .svg or .pdf, got {args.plot}")
    model, preprocess = _model(args)
    options = bench.BenchOptions(
        runtimes=tuple(dict.fromkeys(args.runtimes or ("torch", "onnxruntime", "openvino"))),
        precisions=tuple(dict.fromkeys(args.precisions or ("fp32",))),
        batch_sizes=tuple(dict.fromkeys(args.batch_sizes or (1, 32))),
        threads=args.threads, seconds=args.seconds, preprocess=preprocess,
        calibration_images=_images(args.calibration, "--calibration"),
        peers=not args.no_peers, tflite_dir=args.tflite_dir, compare_conv=not args.no_conv,
        layers=not args.no_layers, memory=not args.no_memory,
    )
    log = (lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
    # Quantizers print progress bars to stdout; keep stdout for the report (clean JSON with --json).
    with contextlib.redirect_stdout(sys.stderr):
        report = bench.run_bench(model, options, log=log)
    if args.plot is not None:
        bench.plot(report, args.plot)
    if args.save is not None:
        from mobilenet.files import write_text

        write_text(args.save, report.to_json() + "\n")
    print(report.to_json() if args.json else bench.format_report(report))
    return 0


def _restart_for_fair_timing(args: argparse.Namespace, tunables: str) -> None:
    """Restart the command under the process settings a fair benchmark needs; both are read once
    at process start, hence the restart (only when run as the `mobilenet` command or
    `python -m mobilenet`, never inside a host program such as a test runner):

    * GLIBC_TUNABLES that keep freed memory: PyTorch at large batch otherwise spends about half its
      time faulting in activation buffers that glibc returned to the OS after the previous call;
    * OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads otherwise spin after each call while
      OpenVINO's and ONNX Runtime's threads want the same two cores (measured: torch batch 1 went
      from 2 ms to 540 ms interleaved with OpenVINO), which would make interleaving unfair.
    """
    env = dict(os.environ)
    if not args.no_malloc_tuning and tunables not in env.get("GLIBC_TUNABLES", ""):
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), tunables)))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    launcher = Path(sys.argv[0])
    ours = launcher.name == "mobilenet" or (launcher.name == "__main__.py" and launcher.parent.name == "mobilenet")
    if env == os.environ or not ours:
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mobilenet", *sys.argv[1:]], env)

"""``mobilenet export`` (ONNX, OpenVINO, .tflite, .pte, Core ML; verified) and ``mobilenet bench``:
the arguments parsed into ``mobilenet.deploy.export.export`` and ``mobilenet.deploy.bench.bench``,
and what they return printed."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from mobilenet.allocator import timing_environment
from mobilenet.cli.common import add_model_arguments, given_model_settings, model_from_args
from mobilenet.deploy.formats import FORMAT_MODULES
from mobilenet.deploy.runtimes import PRECISIONS, RUNTIME_CHOICES
from mobilenet.errors import InputError, ResourceError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export to ONNX, OpenVINO, LiteRT .tflite, ExecuTorch .pte or Core ML, verified on real photos",
        description="Export the folded model (default: the published ImageNet weights). The written file is run "
        "by its own runtime on real photos and compared with PyTorch; a mismatch is an error and nothing is "
        "written. Core ML packages are checked structurally off macOS (Core ML predicts only on Apple platforms).",
    )
    p.add_argument("output", type=Path,
                   help="the file to write: .onnx, .xml (OpenVINO, with a .bin beside it), .tflite, .pte, .mlpackage; "
                   "with --format web, a folder (model, labels, preprocessing and a page that runs them)")
    p.add_argument("--format", choices=(*FORMAT_MODULES, "web"), default=None, help="default: from the output's suffix")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="each format offers some: fp32 all; fp16 .tflite and Core ML weights; int8 all but Core ML "
                   "(needs --calibration); bf16 is a runtime setting (bench, classify), no file holds it")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="int8: a folder of a few hundred real images (the first 300 by name are used)")
    p.add_argument("--verify-images", type=Path, metavar="DIR",
                   help="images to verify on (default: photos shipped with matplotlib and scikit-image)")
    # (dest: the library's parameter, so that its messages name this flag)
    p.add_argument("--int8-weights", dest="portable_int8", choices=("portable", "8bit"), default=None,
                   help="ONNX/OpenVINO int8: portable keeps weights to 7 bits, exact on every x86 CPU (CPUs "
                   "without VNNI saturate 8-bit products); 8bit is for VNNI/AMX targets only (default portable)")
    p.add_argument("--fixed-batch", type=int, default=None, metavar="N",
                   help="ONNX: a fixed batch size instead of a dynamic one (ONNX Runtime Mobile / NNAPI need it)")
    p.add_argument("--layout", choices=("nhwc", "nchw"), default=None,
                   help="input layout of .tflite, .pte and .mlpackage files (default nhwc for .tflite, as "
                   "Android and iOS callers hold camera frames; nchw for .pte, as ExecuTorch programs from PyTorch "
                   "take, and for Core ML)")
    p.add_argument("--io-dtype", choices=("uint8", "int8", "float32"), default=None,
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
    b.add_argument("--runtime", nargs="+", choices=RUNTIME_CHOICES, default=None, dest="runtimes",
                   help="default: torch onnxruntime openvino")
    b.add_argument("--precision", nargs="+", choices=PRECISIONS, default=None, dest="precisions", help="default fp32")
    b.add_argument("--batch-size", nargs="+", type=int, default=None, dest="batch_sizes", help="default: 1 32")
    b.add_argument("--threads", type=int, default=None, help="intra-op threads for every runtime (default: theirs)")
    b.add_argument("--seconds", type=float, default=None, help="timed seconds per cell after warm-up (default 3)")
    b.add_argument("--calibration", type=Path, metavar="DIR", help="real images for int8 (first 300 by name)")
    b.add_argument("--tflite-dir", type=Path, default=None, metavar="DIR",
                   help="a folder of TensorFlow's published .tflite models, measured as peers (default: none)")
    b.add_argument("--no-peers", action="store_true", help="skip timm and TFLite")
    b.add_argument("--no-conv", action="store_true", help="skip separable vs full-convolution")
    b.add_argument("--no-layers", action="store_true", help="skip per-layer time shares")
    b.add_argument("--no-memory", action="store_true", help="skip memory measurement (fresh processes)")
    b.add_argument("--no-malloc-tuning", action="store_true",
                   help="do not restart under GLIBC_TUNABLES that keep freed memory (see docs/performance.md)")
    b.add_argument("--predict", action="store_true",
                   help="the latency model's prediction beside each measurement (docs/latency.md; a first "
                   "calibration takes up to a minute per runtime and precision)")
    b.add_argument("--json", action="store_true", help="print the full report as JSON")
    b.add_argument("--save", type=Path, metavar="FILE.json", help="also write the JSON report to this file")
    b.add_argument("--train", action="store_true",
                   help="training-step throughput instead (forward, loss, backward, optimizer; img/s): our default "
                   "settings, our compiled fp32 NCHW, our eager fp32 NCHW and timm's mobilenetv1_100 (eager fp32, "
                   "SGD); takes --device, --batch-size (one, default 32), --threads, --seconds, --no-peers (no timm) "
                   "and the model flags")
    b.add_argument("--device", default=None, metavar="cpu|cuda[:N]",
                   help="where PyTorch runs (default cpu). cuda: the inference bench times mobilenet.optimize "
                   "against eager PyTorch and timm on the GPU (takes --precision, --batch-size, default 1 256, "
                   "--seconds, --no-peers); with --train, the training steps run there")
    b.add_argument("--plot", type=Path, metavar="FILE.png", help="write latency and throughput charts")
    _add_weights_argument(b, default_help="pretrained weights (a registry name or a file); default: random "
                          "initialisation with the model flags (speed does not depend on the weights)")
    add_model_arguments(b)
    b.set_defaults(func=cmd_bench)


def _add_weights_argument(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument("--weights", default=None, metavar="NAME|FILE", help=default_help)


def _images(folder: Path | None) -> list[Path] | None:
    from mobilenet.deploy.quantize import image_files

    return None if folder is None else image_files(folder)


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (a flag left out takes the library's default)."""
    return {name: value for name, value in options.items() if value is not None}


# --------------------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenet.deploy.export import check_export, export

    if args.random_init and args.weights:
        raise InputError("--random-init and --weights contradict each other: give one")
    if args.num_classes is not None and not args.random_init:
        _refuse_a_new_classifier(args)
    portable = None if args.portable_int8 is None else args.portable_int8 == "portable"
    options = _given(fixed_batch=args.fixed_batch, layout=args.layout, io_dtype=args.io_dtype, portable_int8=portable)
    if args.format == "web":
        return _export_web(args, options)
    calibration = _images(args.calibration)
    # Checked before the model is built: a bad request fails at once, without a download.
    check_export(args.output, format=args.format, precision=args.precision, calibration_images=calibration, **options)
    verify_images = _images(args.verify_images)
    model, preprocess = _export_model(args, verify_images)
    _check_fits(model, args.fixed_batch or 1, "--fixed-batch")
    inputs = [args.weights] if args.weights and Path(args.weights).exists() else []
    result = export(
        model, args.output, format=args.format, precision=args.precision, preprocess=preprocess,
        verify_images=verify_images, calibration_images=calibration, inputs=inputs, **options,
    )
    print(result.summary())
    return 0


def _export_web(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """A folder for the browser, verified by running its page in headless Chromium (``mobilenet.web.export``)."""
    from mobilenet.web.export import check_web_export, export_web

    if options or args.calibration:
        raise InputError("a web export is fp32 with a dynamic batch: it takes no --calibration, --int8-weights, "
                         "--fixed-batch, --layout or --io-dtype")
    check_web_export(args.output, precision=args.precision)
    verify_images = _images(args.verify_images)
    model, preprocess = _export_model(args, verify_images)
    inputs = [args.weights] if args.weights and Path(args.weights).exists() else []
    print(export_web(model, args.output, precision=args.precision, preprocess=preprocess,
                     verify_images=verify_images, inputs=inputs).summary())
    return 0


def _refuse_a_new_classifier(args: argparse.Namespace) -> None:
    """``--classes N`` on weights trained for another count would export a random classifier as if
    it were trained: refused unless the weights keep their classifier at N classes (the published
    ImageNet weights: 1000, or TF's 1001 with the background class; checked before any download)."""
    wanted = args.num_classes
    if args.weights is None:
        fresh = wanted not in (1000, 1001)
    else:
        from mobilenet.weights import load_weights

        # The weights' own rule (loaded.settle): a classifier it cannot keep is left out, to be initialised.
        fresh = "classifier.weight" not in load_weights(args.weights, num_classes=wanted).state
    if fresh:
        source = f"--weights {args.weights}" if args.weights else "the published ImageNet weights"
        raise InputError(f"--classes {wanted} would export an untrained {wanted}-class classifier on {source}: "
                         f"give weights trained for {wanted} classes, or --random-init to export an untrained "
                         "network")


def _check_fits(model: Any, batch_size: int, flag: str) -> None:
    """The cost model's memory check, worded under the flag that asked for the batch."""
    from mobilenet.limits import check_memory

    try:
        check_memory(model.arch_cfg, batch_size, mode="inference")
    except ResourceError as err:
        raise InputError(f"{flag} {batch_size} does not fit in memory: {err}") from None


def _export_model(args: argparse.Namespace, verify_images: list[Path] | None) -> tuple[Any, Any]:
    """The published weights unless --random-init: an untrained network exported for its shape
    gets BatchNorm statistics measured on the photos, so verification compares real signal."""
    if args.random_init:
        from mobilenet.deploy.verify import measure_batchnorm_statistics, photo_batch

        model, preprocess = model_from_args(args)
        return measure_batchnorm_statistics(model, photo_batch(model, verify_images, preprocess)), preprocess
    if args.weights is None:  # the published model for the flags given, as Keras' weights="imagenet"
        from mobilenet.factory import mobilenet_v1

        model = mobilenet_v1(pretrained=True, **given_model_settings(args)).eval()
        return model, model.pretrained_cfg.preprocess
    return model_from_args(args)


# --------------------------------------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    import dataclasses

    from mobilenet.deploy import bench

    _restart_for_fair_timing(args)
    if args.train:
        return _bench_training(args)
    if args.device is not None and args.device != "cpu":
        return _bench_gpu(args)
    options = bench.BenchOptions(**_given(
        runtimes=args.runtimes, precisions=args.precisions, batch_sizes=args.batch_sizes, threads=args.threads,
        seconds=args.seconds, calibration_images=_images(args.calibration), tflite_dir=args.tflite_dir,
    ), peers=not args.no_peers, compare_conv=not args.no_conv, layers=not args.no_layers, memory=not args.no_memory)
    if args.plot is not None:
        bench.check_plot_path(args.plot)
    model, preprocess = model_from_args(args)
    _check_fits(model, max(options.batch_sizes), "--batch-size")
    options = dataclasses.replace(options, preprocess=preprocess)
    log = (lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
    # Quantizers print progress bars to stdout; keep stdout for the report (clean JSON with --json).
    with contextlib.redirect_stdout(sys.stderr):
        annotate = None
        if args.predict:
            from mobilenet.latency import versus

            annotate = versus.annotate(model.arch_cfg, options.threads, log)
        report = bench.bench(model, options, plot_to=args.plot, save_to=args.save, log=log, annotate=annotate)
    print(report.to_json() if args.json else bench.format_report(report))
    return 0


def _bench_training(args: argparse.Namespace) -> int:
    """``bench --train``: ``mobilenet.train.throughput.bench_training`` on the model flags."""
    from mobilenet.train import throughput

    batch_sizes = args.batch_sizes or [32]
    if len(batch_sizes) != 1:
        raise InputError("bench --train measures one --batch-size at a time")
    model, _ = model_from_args(args)
    log = (lambda s: print(f"[bench --train] {s}", file=sys.stderr, flush=True))
    report = throughput.bench_training(model.arch_cfg, batch_size=batch_sizes[0], device=args.device or "cpu",
                                       threads=args.threads, seconds=args.seconds or 3.0, peers=not args.no_peers,
                                       log=log)
    if args.save is not None:
        throughput.save(report, args.save)
    print(report.to_json() if args.json else report.format())
    return 0


def _bench_gpu(args: argparse.Namespace) -> int:
    """``bench --device cuda``: ``mobilenet.deploy.bench.gpu.bench_gpu`` on the model flags. The
    CPU bench's runtimes and settings do not apply there, and are refused rather than ignored."""
    import torch

    from mobilenet.accuracy import check_device
    from mobilenet.deploy.bench import gpu

    cpu_only = {"--runtime": args.runtimes not in (None, ["torch"]), "--threads": args.threads is not None,
                "--calibration": args.calibration is not None, "--tflite-dir": args.tflite_dir is not None,
                "--predict": args.predict, "--plot": args.plot is not None}
    given = [flag for flag, on in cpu_only.items() if on]
    if given:
        raise InputError(f"{', '.join(given)} apply to the CPU bench; bench --device {args.device} times PyTorch "
                         "on the GPU (optimized, eager, timm): leave them out")
    device = check_device(args.device)
    default = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    model, _ = model_from_args(args)
    log = (lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
    report = gpu.bench_gpu(model, precisions=args.precisions or ["fp32", default],
                           batch_sizes=args.batch_sizes or [1, 256], device=device, seconds=args.seconds or 1.0,
                           peers=not args.no_peers, log=log)
    if args.save is not None:
        gpu.save(report, args.save)
    print(report.to_json() if args.json else report.format())
    return 0


def fair_timing_environment(args: argparse.Namespace) -> dict[str, str]:
    """The environment ``bench`` restarts under for ``args`` (``_restart_for_fair_timing``)."""
    return timing_environment(keep_memory=not args.no_malloc_tuning, passive_omp=_pytorch_beside_other_pools(args))


def _pytorch_beside_other_pools(args: argparse.Namespace) -> bool:
    """Whether ``args`` interleave PyTorch's OpenMP pool with a runtime that has a thread pool of its
    own (ONNX Runtime, OpenVINO, LiteRT, ExecuTorch, ``auto`` among them, TensorFlow's files run
    by LiteRT as peers): the case OMP_WAIT_POLICY=PASSIVE is for. PyTorch alone, timm and the
    sgemm roof beside it, and ``--train`` run on the one pool, and keep the policy a user runs
    under."""
    from mobilenet.deploy.bench.report import BenchOptions  # noqa: PLC0415

    if args.train:
        return False
    runtimes = set(args.runtimes or BenchOptions.runtimes)
    return bool(runtimes - {"torch"}) or (args.tflite_dir is not None and not args.no_peers)


def _restart_for_fair_timing(args: argparse.Namespace) -> None:
    """Restart the command under the process settings a fair benchmark needs; both are read once
    at process start, hence the restart (only when run as the `mobilenet` command or
    `python -m mobilenet`, never inside a host program such as a test runner):

    * GLIBC_TUNABLES that keep freed memory: PyTorch at large batch otherwise spends about half its
      time faulting in activation buffers that glibc returned to the OS after the previous call;
    * OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads otherwise spin after each call while
      OpenVINO's and ONNX Runtime's threads want the same two cores (measured: torch batch 1 went
      from 2 ms to 540 ms interleaved with OpenVINO), which would make interleaving unfair. Not
      for ``--train``: its rows all run on PyTorch's one pool, timed under the policy ``mobilenet
      train`` runs under (``mobilenet.train.throughput``).
    """
    env = fair_timing_environment(args)
    launcher = Path(sys.argv[0])
    ours = launcher.name == "mobilenet" or (launcher.name == "__main__.py" and launcher.parent.name == "mobilenet")
    if env == os.environ or not ours:
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "mobilenet", *sys.argv[1:]], env)

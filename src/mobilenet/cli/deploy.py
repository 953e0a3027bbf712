"""``mobilenet export`` (ONNX / OpenVINO, fp32 / int8, verified) and ``mobilenet bench``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from mobilenet.cli.common import add_model_arguments, arch_config_from_args
from mobilenet.errors import InputError

RUNTIMES = ("torch", "onnxruntime", "openvino", "auto")
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_TFLITE_DIR = Path("../shared/assets/tflite")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export to ONNX or OpenVINO (fp32 or int8), verified against PyTorch on real photos",
        description="Export the folded model with a dynamic batch dimension. The written file is run by its "
        "runtime on real photos and compared with PyTorch; a mismatch is an error and nothing is written.",
    )
    p.add_argument("output", type=Path, help="the file to write: .onnx, or .xml (OpenVINO, with a .bin beside it)")
    p.add_argument("--format", choices=("onnx", "openvino"), default=None,
                   help="default: from the output's suffix (.onnx -> onnx, .xml -> openvino)")
    p.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    p.add_argument("--calibration", type=Path, metavar="DIR",
                   help="int8: a folder of a few hundred real images (the first 300 by name are used)")
    p.add_argument("--verify-images", type=Path, metavar="DIR",
                   help="images to verify on (default: photos shipped with matplotlib and scikit-image)")
    _add_weights_argument(p)
    add_model_arguments(p)
    p.set_defaults(func=cmd_export)

    b = subparsers.add_parser(
        "bench", help="latency and throughput per runtime, precision and batch size, against the cost model",
        description="Measures every runtime x precision x batch size interleaved in one process (ratios hold "
        "on a noisy machine), with peers (timm eager, TF's .tflite), separable vs full convolution, per-layer "
        "time shares against mult-add shares, and memory against the cost model.",
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
    _add_weights_argument(b)
    add_model_arguments(b)
    b.set_defaults(func=cmd_bench)


def _add_weights_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, metavar="NAME|FILE",
                   help="pretrained weights (a registry name or a file); default: random initialisation "
                   "with the model flags (speed does not depend on the weights)")


def _model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(model, preprocess) from --weights or the model flags."""
    from mobilenet.model import MobileNetV1
    from mobilenet.preprocess import Preprocess

    cfg = arch_config_from_args(args)
    if args.weights:
        from mobilenet.weights import load_pretrained

        resolution = cfg.resolution if (args.resolution or args.height) else None
        model = load_pretrained(args.weights, resolution=resolution)
        return model, model.pretrained_cfg.preprocess
    return MobileNetV1(cfg).eval(), Preprocess(resolution=cfg.resolution)


def _images(folder: Path | None, flag: str) -> list[Path] | None:
    if folder is None:
        return None
    from mobilenet.deploy.quantize import image_files

    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: no such folder")
    return image_files(folder)


# --------------------------------------------------------------------------------------------- export


def cmd_export(args: argparse.Namespace) -> int:
    from mobilenet.deploy.export import ExportMismatchError, export

    fmt = args.format or {".onnx": "onnx", ".xml": "openvino"}.get(args.output.suffix)
    if fmt is None:
        raise InputError(f"cannot tell the format from {args.output.name!r}: name it .onnx or .xml, or give --format")
    if args.precision == "int8" and args.calibration is None:
        raise InputError("--precision int8 needs --calibration DIR: a folder of a few hundred real images")
    model, preprocess = _model(args)
    try:
        check = export(
            model, args.output, format=fmt, precision=args.precision, preprocess=preprocess,
            verify_images=_images(args.verify_images, "--verify-images"),
            calibration_images=_images(args.calibration, "--calibration"),
        )
    except ExportMismatchError as err:
        print(f"mobilenet export: error: {err}; nothing written", file=sys.stderr)
        return 1
    files = [args.output] + ([args.output.with_suffix(".bin")] if fmt == "openvino" else [])
    size = sum(f.stat().st_size for f in files)
    print(f"wrote {' + '.join(map(str, files))} ({size / 1e6:.1f} MB): {model.cfg.name} {fmt} {args.precision}, "
          f"dynamic batch, input {model.cfg.in_channels}x{model.cfg.height}x{model.cfg.width}")
    print(check.summary())
    return 0


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
        _write_atomically(args.save, report.to_json() + "\n")
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


def _write_atomically(path: Path, text: str) -> None:
    import tempfile

    from mobilenet.deploy.export import default_file_mode

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)

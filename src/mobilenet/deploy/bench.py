"""The benchmark engine behind ``mobilenet bench``: what the cost model predicts, measured.

Timing discipline (2 shared cores make single numbers meaningless):

* every cell (runtime x precision x batch size, peers included) is built first, warmed up, then
  timed **interleaved**: round after round, each cell runs for a slice of ~100 ms, so a burst of
  load from elsewhere hits all cells alike and their ratios survive;
* each call is timed on its own; we report the median, p10 and p90 of the per-call latency, and
  throughput as batch size / median;
* FLOPs are 2 x the cost model's mult-adds (conv and FC weights only, the paper's convention), so
  "achieved GFLOP/s" is comparable with an fp32 1024^3 sgemm timed as one more interleaved cell
  (median rate, same threads, same load).

Beside the cells: the full-convolution MobileNet (Table 4) against the separable one per runtime,
time ratio next to the mult-add ratio; per-layer time shares (stem, depthwise, pointwise, FC)
next to their mult-add shares (Table 2); and the memory an inference adds to the process, next to
the cost model's peak activation memory.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mobilenet.arch import ArchConfig
from mobilenet.cost import network_cost
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtime import SUPPORTED, Predictor, choose_runtime, make_predictor
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1

MALLOC_TUNABLES = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
SLICE_S = 0.1
KINDS = ("conv", "depthwise", "pointwise", "pool", "fc")
KIND_LABELS = {"conv": "stem (3x3 conv)", "depthwise": "depthwise 3x3", "pointwise": "pointwise 1x1",
               "pool": "average pool", "fc": "classifier (FC)", "other": "other (layout reorders)"}


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> Timing:
        ms = np.asarray(samples) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), len(ms))


@dataclass
class Cell:
    """One measured (or refused) combination. ``status`` is "ok", "skipped" or "failed"."""

    name: str  # "onnxruntime fp32", "timm eager fp32", "tflite uint8", ...
    runtime: str
    precision: str
    batch_size: int
    status: str = "ok"
    reason: str = ""
    description: str = ""
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    runs: int = 0
    images_per_s: float | None = None
    gflops: float | None = None  # achieved, 2 x mult-adds per image
    peer: bool = False


@dataclass
class BenchOptions:
    runtimes: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
    precisions: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: int | None = None
    seconds: float = 3.0  # timed seconds per cell (interleaved), after warm-up
    min_runs: int = 10
    calibration_images: Sequence[Path] | None = None
    preprocess: Any = None
    peers: bool = True
    tflite_dir: Path | None = None
    compare_conv: bool = True
    layers: bool = True
    memory: bool = True


@dataclass
class BenchReport:
    model: str
    config: dict[str, Any]
    machine: dict[str, Any]
    mult_adds: int
    gflop_per_image: float
    sgemm_peak_gflops: float
    cells: list[Cell] = field(default_factory=list)
    separable_vs_conv: list[dict[str, Any]] = field(default_factory=list)
    blocks_vs_conv: list[dict[str, Any]] = field(default_factory=list)  # PyTorch eager, per block
    layer_shares: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


# ---------------------------------------------------------------------------------------------
# Timing


def time_interleaved(
    runs: Sequence[Callable[[], Any]], *, seconds: float, min_runs: int, warmup: int = 3
) -> list[list[float]]:
    """Time several zero-argument calls round-robin. Each call is warmed up ``warmup`` times, then
    rounds give every call a ~100 ms slice until each has run ``min_runs`` times and the total
    reaches ``seconds`` per call. Returns the per-call latencies (seconds) of each."""
    for fn in runs:
        for _ in range(warmup):
            fn()
    estimates = []
    for fn in runs:
        start = time.perf_counter()
        fn()
        estimates.append(max(time.perf_counter() - start, 1e-5))
    repeats = [max(1, int(SLICE_S / est)) for est in estimates]
    samples: list[list[float]] = [[] for _ in runs]
    deadline = time.perf_counter() + seconds * len(runs)
    while time.perf_counter() < deadline or min(len(s) for s in samples) < min_runs:
        for fn, n, out in zip(runs, repeats, samples):
            for _ in range(n):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return samples


class Sgemm:
    """One fp32 ``size``^3 matrix multiply: this machine's roof for convolutions lowered to GEMM.
    Timed as one more interleaved cell, so the peak and the models see the same load."""

    def __init__(self, size: int = 1024) -> None:
        self.a, self.b = torch.randn(size, size), torch.randn(size, size)
        self.out = torch.empty(size, size)
        self.flop = 2 * size**3

    def __call__(self) -> None:
        torch.mm(self.a, self.b, out=self.out)


def machine_info(threads: int | None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "threads": threads or torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "malloc_tunables": MALLOC_TUNABLES in os.environ.get("GLIBC_TUNABLES", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    for module in ("onnxruntime", "openvino", "timm", "ai_edge_litert"):
        if _importable(module):
            info[module] = getattr(__import__(module), "__version__", "installed")
    return info


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# The benchmark


def run_bench(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None] = lambda s: None) -> BenchReport:
    """Measure ``model`` as ``options`` ask. Every requested (runtime, precision, batch size) gets a
    cell in the report, measured or with the reason it was not."""
    cfg = model.cfg
    model = model.eval()
    if options.threads:
        torch.set_num_threads(options.threads)
    if "OMP_WAIT_POLICY" not in os.environ and "torch" in options.runtimes and len(options.runtimes) > 1:
        log("warning: OMP_WAIT_POLICY is not set: PyTorch's spinning OpenMP threads can slow the other "
            "runtimes interleaved with it, and theirs PyTorch (set OMP_WAIT_POLICY=PASSIVE before starting)")
    cost = network_cost(cfg)
    report = BenchReport(
        model=cfg.name, config=cfg.to_dict(), machine=machine_info(options.threads),
        mult_adds=cost.total.mult_adds, gflop_per_image=2 * cost.total.mult_adds / 1e9, sgemm_peak_gflops=math.nan,
    )
    inputs = {b: _input_batch(model, b, options.preprocess) for b in options.batch_sizes}

    # Build every predictor first (exports, quantization), then time them all together.
    timed: list[tuple[Cell, Callable[[], Any]]] = []
    for runtime in options.runtimes:
        for precision in options.precisions:
            name = f"{runtime} {precision}"
            cells = [Cell(name, runtime, precision, b) for b in options.batch_sizes]
            log(f"preparing {name}")
            try:
                predictor = _predictor(model, runtime, precision, options)
            except (ValueError, RuntimeError) as err:
                for cell in cells:
                    cell.status, cell.reason = ("skipped" if isinstance(err, ValueError) else "failed"), str(err)
                report.cells += cells
                continue
            for cell in cells:
                cell.description = predictor.description
                timed.append((cell, _bound(predictor, inputs[cell.batch_size])))
            report.cells += cells
    if options.peers:
        for cell, fn in _peers(model, options, inputs, log):
            report.cells.append(cell)
            if fn is not None:
                timed.append((cell, fn))

    log(f"timing {len(timed)} cells and an sgemm interleaved, about {options.seconds:g} s each")
    sgemm = Sgemm()
    samples = time_interleaved(
        [sgemm] + [fn for _, fn in timed], seconds=options.seconds, min_runs=options.min_runs
    )
    report.sgemm_peak_gflops = sgemm.flop / Timing.from_seconds(samples[0]).median_ms / 1e6
    for (cell, _), seconds in zip(timed, samples[1:]):
        _fill(cell, Timing.from_seconds(seconds), report.gflop_per_image)

    if options.compare_conv:
        report.separable_vs_conv = _separable_vs_conv(model, options, log)
        report.blocks_vs_conv = _block_comparisons(model, options, log)
    if options.layers:
        report.layer_shares = _layer_shares(model, options, log)
    if options.memory:
        report.memory = _memory(model, options, log)
    return report


def _predictor(model: MobileNetV1, runtime: str, precision: str, options: BenchOptions) -> Predictor:
    resolved = runtime
    if runtime == "auto":
        resolved, _ = choose_runtime(precision)
    if precision not in SUPPORTED.get(resolved, ()):
        raise InputError(f"{resolved} does not offer {precision}")
    return make_predictor(
        model, runtime, precision, preprocess=options.preprocess,
        calibration_images=options.calibration_images, threads=options.threads,
    )


def _input_batch(model: MobileNetV1, batch_size: int, preprocess: Any) -> torch.Tensor:
    """Real photos, repeated to the batch size (content matters little for speed, but random
    noise can take different paths, e.g. through denormals, than real images do)."""
    from mobilenet.deploy.export import photo_batch  # noqa: PLC0415

    photos = photo_batch(model, preprocess=preprocess)
    reps = -(-batch_size // len(photos))
    return photos.repeat(reps, 1, 1, 1)[:batch_size].contiguous()


def _bound(predictor: Callable[[Any], Any], x: Any) -> Callable[[], Any]:
    return lambda: predictor(x)


def _fill(cell: Cell, timing: Timing, gflop_per_image: float) -> None:
    cell.median_ms, cell.p10_ms, cell.p90_ms, cell.runs = timing.median_ms, timing.p10_ms, timing.p90_ms, timing.runs
    cell.images_per_s = cell.batch_size / (timing.median_ms / 1e3)
    cell.gflops = gflop_per_image * cell.images_per_s


# ---------------------------------------------------------------------------------------------
# Peers: timm's MobileNet in eager PyTorch, TensorFlow's published .tflite under the TFLite interpreter


def _peers(
    model: MobileNetV1, options: BenchOptions, inputs: dict[int, torch.Tensor], log: Callable[[str], None]
) -> list[tuple[Cell, Callable[[], Any] | None]]:
    cfg = model.cfg
    out: list[tuple[Cell, Callable[[], Any] | None]] = []
    if "fp32" in options.precisions:
        cells = [Cell("timm eager fp32", "timm", "fp32", b, peer=True) for b in options.batch_sizes]
        if not _importable("timm"):
            _skip(cells, "timm is not installed")
            out += [(c, None) for c in cells]
        elif cfg.alpha != 1.0 or cfg.variant != "separable":
            _skip(cells, "timm's mobilenetv1_100 is the separable network at alpha 1.0 only")
            out += [(c, None) for c in cells]
        else:
            import timm  # noqa: PLC0415

            log("preparing timm mobilenetv1_100 (eager, random weights: speed does not depend on them)")
            net = timm.create_model("mobilenetv1_100", pretrained=False, num_classes=cfg.num_classes).eval()
            for cell in cells:
                cell.description = f"timm {timm.__version__} mobilenetv1_100, eager PyTorch, BatchNorm unfolded"
                x = inputs[cell.batch_size]
                out.append((cell, lambda x=x: _no_grad(net, x)))
    if "fp32" in options.precisions:
        out += _default_settings_cells(model, options, inputs, log)
    for path_set, precision in _tflite_models(cfg, options.tflite_dir):
        name = f"tflite {precision}"
        for b in options.batch_sizes:
            cell = Cell(name, "tflite", precision, b, peer=True)
            if not path_set:
                _skip([cell], f"no TensorFlow .tflite model for {cfg.name} in {options.tflite_dir}")
                out.append((cell, None))
                continue
            try:
                fn, description = _tflite_runner(path_set, b, options.threads)
            except ImportError:
                _skip([cell], "the TFLite interpreter is not installed: pip install ai-edge-litert")
                out.append((cell, None))
                continue
            cell.description = description
            out.append((cell, fn))
    return out


def _default_settings_cells(
    model: MobileNetV1, options: BenchOptions, inputs: dict[int, torch.Tensor], log: Callable[[str], None]
) -> list[tuple[Cell, Callable[[], Any] | None]]:
    """The same fp32 ONNX export under ONNX Runtime and OpenVINO with every setting left at its
    default: what a user gets without this package's tuning. OpenVINO's default on a CPU with
    AVX512-BF16 is bf16 inference, so that cell is labelled with what it really runs."""
    import tempfile  # noqa: PLC0415

    from mobilenet.deploy.export import as_numpy, export_onnx  # noqa: PLC0415

    wanted = [r for r in ("onnxruntime", "openvino") if r in options.runtimes and available(r)]
    if not wanted:
        return []
    log("preparing ONNX Runtime and OpenVINO with default settings")
    out: list[tuple[Cell, Callable[[], Any] | None]] = []
    with tempfile.TemporaryDirectory(prefix="mobilenet-defaults-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        if "onnxruntime" in wanted:
            import onnxruntime as ort  # noqa: PLC0415

            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            for b in options.batch_sizes:
                cell = Cell("onnxruntime defaults", "onnxruntime defaults", "fp32", b, peer=True,
                            description="ONNX Runtime, our fp32 export, default session options")
                feed = {name: as_numpy(inputs[b])}
                out.append((cell, lambda feed=feed: session.run(None, feed)))
        if "openvino" in wanted:
            import openvino as ov  # noqa: PLC0415

            compiled = ov.Core().compile_model(str(path), "CPU")
            precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            request = compiled.create_infer_request()
            for b in options.batch_sizes:
                cell = Cell(f"openvino defaults ({precision})", "openvino defaults", precision, b, peer=True,
                            description=f"OpenVINO, our fp32 export, default settings (runs {precision} here)")
                feed = {0: as_numpy(inputs[b])}
                out.append((cell, lambda feed=feed: request.infer(feed)))
    return out


def _skip(cells: list[Cell], reason: str) -> None:
    for cell in cells:
        cell.status, cell.reason = "skipped", reason


def _no_grad(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)


def _tflite_models(cfg: ArchConfig, folder: Path | None) -> list[tuple[list[Path], str]]:
    """TF's published files for this configuration: float and uint8 (the 1.0-224 uint8 model
    comes as a body and a head, run one after the other)."""
    if folder is None or not folder.is_dir() or cfg.variant != "separable" or cfg.height != cfg.width:
        return []
    stem = f"mobilenet_v1_{float(cfg.alpha)}_{cfg.height}"
    found = []
    if (folder / f"{stem}.tflite").is_file():
        found.append(([folder / f"{stem}.tflite"], "fp32"))
    if (folder / f"{stem}_quant.tflite").is_file():
        found.append(([folder / f"{stem}_quant.tflite"], "uint8"))
    elif (folder / f"{stem}_quant_body.tflite").is_file():
        found.append(([folder / f"{stem}_quant_body.tflite", folder / f"{stem}_quant_head.tflite"], "uint8"))
    return found


def _tflite_runner(paths: list[Path], batch_size: int, threads: int | None) -> tuple[Callable[[], Any], str]:
    """The published graphs have a fixed batch of 1 (a Reshape to [1, 1001]), so a batch of B is B
    invocations: TFLite's own way to serve a batch."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    interpreters = []
    for path in paths:
        interp = Interpreter(str(path), num_threads=threads or os.cpu_count() or 1)
        interp.allocate_tensors()
        interpreters.append(interp)
    first = interpreters[0].get_input_details()[0]
    x = np.zeros(first["shape"], dtype=first["dtype"])

    def run() -> Any:
        for _ in range(batch_size):
            value = x
            for interp in interpreters:
                interp.set_tensor(interp.get_input_details()[0]["index"], value)
                interp.invoke()
                value = interp.get_tensor(interp.get_output_details()[0]["index"])
        return value

    names = " + ".join(p.name for p in paths)
    calls = f", {batch_size} calls at batch 1" if batch_size > 1 else ""
    return run, f"TFLite interpreter (ai-edge-litert, XNNPACK) {names}, {threads or os.cpu_count()} threads{calls}"


# ---------------------------------------------------------------------------------------------
# Separable against full convolution, per runtime


def _separable_vs_conv(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Table 4's Conv MobileNet against the separable one at batch 1, fp32, per runtime: the
    measured time ratio beside the mult-add ratio (what the paper's 8-9x becomes in wall time)."""
    cfg = model.cfg
    if cfg.variant != "separable":
        return []
    conv_model = MobileNetV1(cfg.replace(variant="conv")).eval()
    ratio = network_cost(conv_model.cfg).total.mult_adds / network_cost(cfg).total.mult_adds
    x = _input_batch(model, 1, options.preprocess)
    rows, timed = [], []
    for runtime in [r for r in options.runtimes if r != "auto"]:
        log(f"preparing the full-convolution network on {runtime}")
        try:
            pair = [_predictor(m, runtime, "fp32", options) for m in (model, conv_model)]
        except ValueError as err:
            rows.append({"runtime": runtime, "status": "skipped", "reason": str(err)})
            continue
        rows.append({"runtime": runtime, "status": "ok", "mult_add_ratio": ratio})
        timed.append((rows[-1], pair))
    calls = [_bound(p, x) for _, pair in timed for p in pair]
    if calls:
        log("timing separable against full convolution, interleaved")
        samples = time_interleaved(calls, seconds=options.seconds, min_runs=options.min_runs)
        for i, (row, _) in enumerate(timed):
            separable, conv = Timing.from_seconds(samples[2 * i]), Timing.from_seconds(samples[2 * i + 1])
            row.update(separable_ms=separable.median_ms, conv_ms=conv.median_ms,
                       time_ratio=conv.median_ms / separable.median_ms)
    return rows


def _block_comparisons(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every separable block against the full 3x3 convolution it replaces (Table 3's layer is
    blocks 6-10 at 14x14x512), in PyTorch eager with folded weights and channels_last, batch 1:
    the layer-level version of the network comparison above. The full conv uses symmetric padding
    (one pad either side); the difference to TF 'SAME' costs no measurable time."""
    from mobilenet.deploy.prepare import folded_copy  # noqa: PLC0415

    if model.cfg.variant == "conv":
        return []
    log("timing each separable block against a full 3x3 convolution (PyTorch eager)")
    net = folded_copy(model).to(memory_format=torch.channels_last)
    rows, calls = [], []
    for comparison in network_cost(model.cfg).block_comparisons():
        std = comparison.standard
        channels, height, width = std.in_shape
        x = torch.randn(1, channels, height, width).contiguous(memory_format=torch.channels_last)
        full = torch.nn.Sequential(
            torch.nn.Conv2d(channels, std.out_shape[0], std.kernel, std.stride, padding=std.kernel // 2),
            torch.nn.ReLU6(),
        ).eval().to(memory_format=torch.channels_last)
        separable = net.blocks[comparison.depthwise.block]
        rows.append({
            "block": comparison.depthwise.block, "in_shape": list(std.in_shape), "out_shape": list(std.out_shape),
            "stride": std.stride, "mult_add_ratio": 1 / comparison.mult_adds_ratio,
        })
        calls += [lambda m=separable, x=x: _no_grad(m, x), lambda m=full, x=x: _no_grad(m, x)]
    with torch.inference_mode():
        samples = time_interleaved(calls, seconds=options.seconds / 4, min_runs=options.min_runs)
    for i, row in enumerate(rows):
        separable, full = Timing.from_seconds(samples[2 * i]), Timing.from_seconds(samples[2 * i + 1])
        row.update(separable_ms=separable.median_ms, conv_ms=full.median_ms,
                   time_ratio=full.median_ms / separable.median_ms)
    return rows


# ---------------------------------------------------------------------------------------------
# Per-layer time shares against mult-add shares (Table 2)


def _layer_shares(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    cost = network_cost(model.cfg)
    predicted = {kind: sum(x.mult_adds for x in cost.layers if x.kind == kind) / cost.total.mult_adds for kind in KINDS}
    x = _input_batch(model, 1, options.preprocess)
    rows = []
    profilers = {"torch": _torch_layer_times, "onnxruntime": _ort_layer_times, "openvino": _openvino_layer_times}
    for runtime, profile in profilers.items():
        if runtime not in options.runtimes or not (runtime == "torch" or available(runtime)):
            continue
        log(f"profiling layers on {runtime}")
        seconds = profile(model, x, options)
        total = sum(seconds.values())
        for kind in (*KINDS, "other"):
            if kind == "other" and kind not in seconds:
                continue
            rows.append({
                "runtime": runtime, "kind": kind, "label": KIND_LABELS[kind],
                "time_share": seconds.get(kind, 0.0) / total, "mult_add_share": predicted.get(kind, 0.0),
            })
    return rows


def _torch_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time of the folded channels_last model in eager mode (TorchScript hides the
    layers), from forward hooks around every layer."""
    from mobilenet.deploy.prepare import folded_copy  # noqa: PLC0415

    net = folded_copy(model).to(memory_format=torch.channels_last)
    kinds = {layer.name: layer.kind for layer in network_cost(model.cfg).layers}
    totals: dict[str, float] = {}
    starts: dict[str, float] = {}
    for name, module in net.named_modules():
        if name in kinds:
            module.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, time.perf_counter()))
            module.register_forward_hook(
                lambda m, a, out, name=name: totals.__setitem__(
                    kinds[name], totals.get(kinds[name], 0.0) + time.perf_counter() - starts[name]
                )
            )
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):
            net(x)
        totals.clear()
        deadline = time.perf_counter() + options.seconds
        while time.perf_counter() < deadline:
            net(x)
    return totals


def _ort_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time from ONNX Runtime's own profiler. Its node names change when it fuses, so
    nodes are matched to layers by execution order: the k-th convolution run is the k-th conv
    layer of the architecture (the network is a chain)."""
    import tempfile  # noqa: PLC0415

    import onnxruntime as ort  # noqa: PLC0415

    from mobilenet.deploy.export import export_onnx  # noqa: PLC0415

    layers = network_cost(model.cfg).layers
    conv_kinds = [layer.kind for layer in layers if layer.kind in ("conv", "depthwise", "pointwise")]
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx")
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        if options.threads:
            opts.intra_op_num_threads = options.threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(3):
            session.run(None, feed)
        deadline = time.perf_counter() + options.seconds
        while time.perf_counter() < deadline:
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    ops = {"Conv": "conv", "FusedConv": "conv", "Gemm": "fc", "FusedGemm": "fc", "MatMul": "fc",
           "ReduceMean": "pool", "GlobalAveragePool": "pool"}
    return _by_kind(((ops.get(e.get("args", {}).get("op_name", ""), "other"), e["dur"] * 1e-6) for e in nodes),
                    conv_kinds)


def _openvino_layer_times(model: MobileNetV1, x: torch.Tensor, options: BenchOptions) -> dict[str, float]:
    """Per-kind time from OpenVINO's per-node performance counters (fp32), matched to layers by
    execution order like ONNX Runtime's."""
    import tempfile  # noqa: PLC0415

    import openvino as ov  # noqa: PLC0415

    from mobilenet.deploy.export import convert_to_openvino, export_onnx  # noqa: PLC0415

    conv_kinds = [x.kind for x in network_cost(model.cfg).layers if x.kind in ("conv", "depthwise", "pointwise")]
    config: dict[str, Any] = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                              "ENABLE_CPU_PINNING": False}
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = options.threads
    with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
        compiled = ov.Core().compile_model(convert_to_openvino(export_onnx(model, Path(tmp) / "m.onnx")), "CPU", config)
    request = compiled.create_infer_request()
    data = x.numpy()
    for _ in range(3):
        request.infer({0: data})
    ops = {"Convolution": "conv", "GroupConvolution": "conv", "FullyConnected": "fc", "MatMul": "fc",
           "ReduceMean": "pool", "AvgPool": "pool"}
    totals: dict[str, float] = {}
    deadline = time.perf_counter() + options.seconds
    while time.perf_counter() < deadline:
        request.infer({0: data})
        executed = [p for p in request.profiling_info if p.status.name == "EXECUTED"]
        run = _by_kind(((ops.get(p.node_type, "other"), p.real_time.total_seconds()) for p in executed), conv_kinds)
        for kind, seconds in run.items():
            totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


def _by_kind(events: Any, conv_kinds: list[str]) -> dict[str, float]:
    """Sum (op kind, seconds) events in execution order into layer kinds; the k-th "conv" event is
    the k-th convolution of the architecture (stem, depthwise or pointwise)."""
    totals: dict[str, float] = {}
    conv_index = 0
    for kind, seconds in events:
        if kind == "conv":
            kind = conv_kinds[conv_index % len(conv_kinds)]
            conv_index += 1
        totals[kind] = totals.get(kind, 0.0) + seconds
    return totals


# ---------------------------------------------------------------------------------------------
# Memory: what one inference adds to a fresh process, against the cost model's peak activations


def _memory(model: MobileNetV1, options: BenchOptions, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each runtime in a fresh process (this one's allocator already holds everything): the rise of
    the resident-set high-water mark during the first inference at the largest batch size. The
    prediction is for the images one runtime call really gets (ONNX Runtime and OpenVINO run large
    batches in cache-sized slices)."""
    batch = max(options.batch_sizes)
    rows = []
    for runtime in [r for r in options.runtimes if r != "auto"]:
        if runtime != "torch" and not available(runtime):
            continue
        log(f"measuring memory of {runtime} at batch {batch} in a fresh process")
        row: dict[str, Any] = {"runtime": runtime, "precision": "fp32", "batch_size": batch}
        try:
            row.update(memory_probe_subprocess(model, runtime, batch, options.threads))
        except RuntimeError as err:
            row.update(status="failed", reason=str(err), images_per_call=batch)
        predicted = network_cost(model.cfg, bytes_per_element=4, batch_size=row["images_per_call"]).total
        row.update(predicted_peak_activation_bytes=predicted.peak_activation_bytes,
                   predicted_peak_layer=predicted.peak_layer)
        rows.append(row)
    return rows


def memory_probe_subprocess(model: MobileNetV1, runtime: str, batch_size: int, threads: int | None) -> dict[str, Any]:
    """Run ``memory_probe`` in a fresh Python process on ``model``'s weights."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="mobilenet-memory-") as tmp:
        weights = Path(tmp) / "model.pt"
        # Folded weights, so models loaded folded (TFLite) and unfolded ones travel the same way.
        from mobilenet.deploy.prepare import folded_copy  # noqa: PLC0415

        torch.save({"config": model.cfg.to_dict(), "state_dict": folded_copy(model).state_dict()}, weights)
        command = [sys.executable, "-m", "mobilenet.deploy.bench", str(weights), runtime, str(batch_size),
                   str(threads or 0)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(model: MobileNetV1, runtime: str, batch_size: int, threads: int | None) -> dict[str, Any]:
    """In this process: build the predictor, reset the resident-set high-water mark, run one
    inference at ``batch_size``, and report how far the high-water mark rose above the resident
    set before the call. That covers activations, workspaces and one-time buffers the runtime
    allocates on its first run; weights are already resident and not counted."""
    predictor = make_predictor(model, runtime, "fp32", threads=threads or None)
    x = torch.zeros(batch_size, model.cfg.in_channels, *model.cfg.resolution)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current VmRSS
    before = _read_status_kib("VmRSS")
    predictor(x)
    peak = _read_status_kib("VmHWM")
    return {"status": "ok", "rss_before_bytes": before * 1024, "measured_increase_bytes": (peak - before) * 1024,
            "images_per_call": min(batch_size, predictor.micro_batch or batch_size)}


def _read_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


if __name__ == "__main__":  # the fresh process of memory_probe_subprocess
    _weights, _runtime, _batch, _threads = sys.argv[1:5]
    _saved = torch.load(_weights, weights_only=True)
    _model = MobileNetV1(ArchConfig.from_dict(_saved["config"])).eval().fold_batchnorm()
    _model.load_state_dict(_saved["state_dict"])
    print(json.dumps(memory_probe(_model.eval(), _runtime, int(_batch), int(_threads))))


# ---------------------------------------------------------------------------------------------
# Presentation


def format_report(report: BenchReport) -> str:
    """The report as plain-text tables (the JSON form holds the same numbers)."""
    m = report.machine
    load = ", ".join(f"{x:.2f}" for x in m["load_average"]) if m.get("load_average") else "?"
    lines = [
        f"{report.model}: {report.mult_adds / 1e6:.1f}M mult-adds = {report.gflop_per_image:.3f} GFLOP per image "
        "(FLOPs = 2 x mult-adds of conv and FC weights; BatchNorm, ReLU6, pool not counted)",
        f"machine: {m['cpu']}, {m['threads']} threads, load average {load}, "
        f"malloc tunables {'on' if m['malloc_tunables'] else 'off'}, OMP_WAIT_POLICY {m['omp_wait_policy']}; "
        f"sgemm peak {report.sgemm_peak_gflops:.0f} GFLOP/s",
        "",
        "latency per call (ms, median [p10-p90] of interleaved runs after warm-up) and throughput",
        f"{'backend':<26} {'batch':>5} {'median':>8} {'p10-p90':>15} {'runs':>5} {'images/s':>9} "
        f"{'GFLOP/s':>8} {'of sgemm':>8}",
    ]
    for c in report.cells:
        if c.status != "ok":
            lines.append(f"{c.name:<26} {c.batch_size:>5} {c.status}: {c.reason}")
            continue
        lines.append(
            f"{c.name:<26} {c.batch_size:>5} {c.median_ms:>8.2f} {f'{c.p10_ms:.2f}-{c.p90_ms:.2f}':>15} {c.runs:>5} "
            f"{c.images_per_s:>9.1f} {c.gflops:>8.1f} {c.gflops / report.sgemm_peak_gflops:>8.0%}"
        )
    if report.separable_vs_conv:
        lines += ["", "separable vs full-convolution MobileNet (Table 4), batch 1, fp32",
                  f"{'runtime':<12} {'separable ms':>12} {'conv ms':>9} {'time ratio':>10} {'mult-add ratio':>14}"]
        for row in report.separable_vs_conv:
            if row["status"] != "ok":
                lines.append(f"{row['runtime']:<12} {row['status']}: {row['reason']}")
            else:
                lines.append(f"{row['runtime']:<12} {row['separable_ms']:>12.2f} {row['conv_ms']:>9.2f} "
                             f"{row['time_ratio']:>9.2f}x {row['mult_add_ratio']:>13.2f}x")
    if report.blocks_vs_conv:
        lines += ["", "each separable block vs the full 3x3 conv it replaces (PyTorch eager, folded, batch 1)",
                  f"{'block':>5} {'input':>14} {'stride':>6} {'separable ms':>12} {'conv ms':>8} {'time ratio':>10} "
                  f"{'mult-add ratio':>14}"]
        for row in report.blocks_vs_conv:
            shape = "x".join(map(str, row["in_shape"]))
            lines.append(f"{row['block']:>5} {shape:>14} {row['stride']:>6} {row['separable_ms']:>12.3f} "
                         f"{row['conv_ms']:>8.3f} {row['time_ratio']:>9.2f}x {row['mult_add_ratio']:>13.2f}x")
    if report.layer_shares:
        lines += ["", "time share by layer type vs mult-add share (Table 2), batch 1, fp32",
                  f"{'runtime':<12} {'layers':<24} {'time':>7} {'mult-adds':>9}"]
        for row in report.layer_shares:
            lines.append(
                f"{row['runtime']:<12} {row['label']:<24} {row['time_share']:>7.1%} {row['mult_add_share']:>9.1%}"
            )
    if report.memory:
        lines += ["", "memory one inference adds to a fresh process vs the cost model's peak activations (fp32)",
                  f"{'runtime':<12} {'batch':>5} {'per call':>8} {'measured MB':>11} {'predicted MB':>12}  "
                  "predicted peak at"]
        for row in report.memory:
            if row.get("status") != "ok":
                lines.append(f"{row['runtime']:<12} {row['batch_size']:>5} {row.get('status')}: {row.get('reason')}")
                continue
            lines.append(f"{row['runtime']:<12} {row['batch_size']:>5} {row['images_per_call']:>8} "
                         f"{row['measured_increase_bytes'] / 1e6:>11.1f} "
                         f"{row['predicted_peak_activation_bytes'] / 1e6:>12.1f}  {row['predicted_peak_layer']}")
    return "\n".join(lines)


def plot(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Latency at the smallest batch and throughput at the largest, one bar per backend (written
    atomically)."""
    import tempfile  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    from mobilenet.deploy.export import default_file_mode  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    path = Path(path)
    ok = [c for c in report.cells if c.status == "ok"]
    if not ok:
        raise InputError("nothing was measured, so there is nothing to plot")
    small, large = min(c.batch_size for c in ok), max(c.batch_size for c in ok)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len({c.name for c in ok}) + 1.8))
    for ax, batch, metric, label in (
        (axes[0], small, "median_ms", f"latency per call at batch {small} (ms, median; bars p10-p90)"),
        (axes[1], large, "images_per_s", f"throughput at batch {large} (images/s)"),
    ):
        cells = [c for c in ok if c.batch_size == batch]
        values = [getattr(c, metric) for c in cells]
        colors = ["tab:gray" if c.peer else "tab:blue" for c in cells]
        bars = ax.barh([c.name for c in cells], values, color=colors)
        if metric == "median_ms":
            ax.errorbar(values, range(len(cells)), fmt="none", ecolor="black", capsize=3,
                        xerr=[[c.median_ms - c.p10_ms for c in cells], [c.p90_ms - c.median_ms for c in cells]])
        ax.bar_label(bars, fmt="%.3g", padding=3)
        ax.set_xlabel(label)
        ax.invert_yaxis()
    load = report.machine.get("load_average")
    fig.suptitle(f"{report.model} on {report.machine['cpu']}, {report.machine['threads']} threads"
                 + (f", load {load[0]:.1f}" if load else "") + " (grey: peers)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
    return path

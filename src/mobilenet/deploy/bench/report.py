"""The benchmark's results: cells, options, the report, and how they are presented (tables,
JSON, plots). The machine is described by ``mobilenet.cpu`` so every report says which CPU, ISA
and precision facts it was measured under."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mobilenet.allocator import GLIBC_TUNABLES_KEEP
from mobilenet.cpu import cpu_info
from mobilenet.deploy.openvino_core import openvino_core
from mobilenet.deploy.optional import available, package_version
from mobilenet.deploy.runtimes import PRECISIONS, RUNTIME_CHOICES
from mobilenet.deploy.timing import DRIFTING
from mobilenet.errors import InputError, option
from mobilenet.files import atomic_write
from mobilenet.threads import check_threads

MALLOC_TUNABLES = GLIBC_TUNABLES_KEEP  # what bench restarts under (mobilenet.allocator)
PLOT_FORMATS = (".png", ".svg", ".pdf")
# Module -> the distribution that installs it, for the versions each report records.
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "timm": "timm", "ai_edge_litert": "ai-edge-litert",
            "executorch": "executorch"}


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


class OptionError(InputError):
    """A ``BenchOptions`` field out of its range; ``option`` is the field's name."""

    def __init__(self, name: str, requirement: str, value: Any) -> None:
        self.option, self.value = name, value
        super().__init__(f"{option(name)} must be {requirement}, got {value!r}")


@dataclass
class BenchOptions:
    """What ``bench`` measures. Checked when made (an ``OptionError``, an ``InputError``, says what
    is wrong); repeated runtimes, precisions and batch sizes are measured once."""

    runtimes: Sequence[str] = ("torch", "onnxruntime", "openvino")
    precisions: Sequence[str] = ("fp32",)
    batch_sizes: Sequence[int] = (1, 32)
    threads: int | None = None  # intra-op threads for every runtime (None: each runtime's own)
    seconds: float = 3.0  # timed seconds per cell (interleaved), after warm-up
    min_runs: int = 10
    calibration_images: Sequence[Path] | None = None  # int8: real images (the first 300 are used)
    preprocess: Any = None  # how images are prepared (None: the model's own)
    peers: bool = True  # timm eager, the runtimes at default settings, TF's .tflite files
    tflite_dir: Path | None = None  # a folder of TensorFlow's published .tflite models (peers)
    compare_conv: bool = True  # separable against full convolution
    layers: bool = True  # per-layer time shares
    memory: bool = True  # memory per runtime, in fresh processes

    def __post_init__(self) -> None:
        self.runtimes = tuple(dict.fromkeys(self.runtimes))
        self.precisions = tuple(dict.fromkeys(self.precisions))
        self.batch_sizes = tuple(dict.fromkeys(self.batch_sizes))
        if not self.runtimes or any(r not in RUNTIME_CHOICES for r in self.runtimes):
            raise OptionError("runtimes", f"some of {', '.join(RUNTIME_CHOICES)}", list(self.runtimes))
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            raise OptionError("precisions", f"some of {', '.join(PRECISIONS)}", list(self.precisions))
        if not self.batch_sizes or not all(_is_count(b) for b in self.batch_sizes):
            raise OptionError("batch_sizes", "integers >= 1", list(self.batch_sizes))
        if self.threads is not None and not _is_count(self.threads):
            raise OptionError("threads", "an integer >= 1", self.threads)
        check_threads(self.threads)  # (and no more than this process's CPUs, as every runtime's count)
        # nan would pass a comparison and time nothing; inf would time forever.
        if not isinstance(self.seconds, (int, float)) or not math.isfinite(self.seconds) or self.seconds <= 0:
            raise OptionError("seconds", "a finite number of seconds > 0", self.seconds)
        if not _is_count(self.min_runs):
            raise OptionError("min_runs", "an integer >= 1", self.min_runs)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class BenchReport:
    model: str
    config: dict[str, Any]
    machine: dict[str, Any]
    mult_adds: int
    gflop_per_image: float
    sgemm_peak_gflops: float
    cells: list[Cell] = field(default_factory=list)
    sgemm_library: str = ""  # which of PyTorch's GEMM libraries set the peak (``timing.Sgemm``)
    # How far the machine's pace moved from second to second while the cells were timed, slowest
    # over quickest (``timing.Rounds.drift``; 1.0: steady, or too short to tell).
    machine_drift: float = 1.0
    separable_vs_conv: list[dict[str, Any]] = field(default_factory=list)
    blocks_vs_conv: list[dict[str, Any]] = field(default_factory=list)  # PyTorch eager, per block
    # Per runtime whose layers were profiled (batch 1, fp32): each layer's seconds in one profile,
    # in the order of ``arch.layers`` (``layers.layer_profiles``), and each layer type's share.
    layer_seconds: dict[str, list[float]] = field(default_factory=dict)
    layer_shares: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    # Filled by an annotation from above (mobilenet.latency.versus): per measured cell its predicted
    # time (predicted_ms, error = predicted / measured - 1) or the reason there is none.
    predicted: list[dict[str, Any]] = field(default_factory=list)
    # Also from there: per layer of each runtime whose layers were profiled (batch 1, fp32), its
    # predicted and profiled milliseconds (``versus.predicted_layers``, from ``layer_seconds``).
    layer_predictions: list[dict[str, Any]] = field(default_factory=list)
    # Where int8 measured slower than fp32 in the same runtime and batch (it is, at 0.25-224 in
    # LiteRT and ExecuTorch on an AVX2 CPU, for TF's own uint8 file too): said, never implied away.
    int8_slower_than_fp32: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def compare_int8_with_fp32(self) -> list[dict[str, Any]]:
        """Fill ``int8_slower_than_fp32`` from the measured cells (peers' uint8 files count as
        int8) and return it."""
        medians = {(c.runtime, c.precision, c.batch_size): c.median_ms for c in self.cells
                   if c.status == "ok" and c.median_ms is not None}
        self.int8_slower_than_fp32 = [
            {"runtime": runtime, "precision": precision, "batch_size": batch, "int8_ms": ms,
             "fp32_ms": medians[(runtime, "fp32", batch)]}
            for (runtime, precision, batch), ms in medians.items()
            if precision in ("int8", "uint8") and ms > medians.get((runtime, "fp32", batch), float("inf"))
        ]
        return self.int8_slower_than_fp32


def machine_info(threads: int | None) -> dict[str, Any]:
    cpu = cpu_info()
    info: dict[str, Any] = {
        "cpu": cpu.model, "cpu_signature": cpu.signature, "isa": cpu.isa_level, "cpu_flags": cpu.notable_flags(),
        "int8_dot": cpu.int8_dot, "native_bf16": cpu.native_bf16, "logical_cpus": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "malloc_tunables": MALLOC_TUNABLES in os.environ.get("GLIBC_TUNABLES", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "python": platform.python_version(), "torch": torch.__version__,
    }
    # What the runtimes themselves make of this CPU.
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if available("openvino"):
        info["openvino_capabilities"] = list(openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    for module, distribution in PACKAGES.items():
        version = package_version(distribution)
        if version is not None:
            info[module] = version
    return info


# ---------------------------------------------------------------------------------------------
# Presentation


def format_report(report: BenchReport) -> str:
    """The report as plain-text tables (the JSON form holds the same numbers)."""
    m = report.machine
    load = ", ".join(f"{x:.2f}" for x in m["load_average"]) if m.get("load_average") else "?"
    lines = [
        f"{report.model}: {report.mult_adds / 1e6:.1f}M mult-adds = {report.gflop_per_image:.3f} GFLOP per image "
        "(FLOPs = 2 x mult-adds of conv and FC weights; BatchNorm, ReLU6, pool not counted)",
        f"machine: {m['cpu']} (ISA {m.get('isa', '?')}, int8 dot product {m.get('int8_dot', '?')}, native bf16 "
        f"{m.get('native_bf16', '?')}), {m['threads']} threads, load average {load}, "
        f"malloc tunables {'on' if m['malloc_tunables'] else 'off'}, OMP_WAIT_POLICY {m['omp_wait_policy']}; "
        f"sgemm peak {report.sgemm_peak_gflops:.0f} GFLOP/s"
        + (f" ({report.sgemm_library}, the faster of PyTorch's GEMM libraries here)" if report.sgemm_library else ""),
        *([f"warning: the machine's pace moved {report.machine_drift:.2f}x from second to second while timing "
           "(slowest over quickest): something else ran, or the machine is a guest whose host is busy; the "
           "medians mix its spells, and their ratios hold better than the times themselves"]
          if report.machine_drift > DRIFTING else []),
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
    if report.predicted:
        lines += format_predictions(report.predicted)
    if report.int8_slower_than_fp32:
        lines += ["", "int8 is not faster everywhere: measured slower than fp32 in the same runtime here"]
        for row in report.int8_slower_than_fp32:
            lines.append(f"{row['runtime']:<26} {row['batch_size']:>5} {row['precision']} {row['int8_ms']:.2f} ms "
                         f"against fp32 {row['fp32_ms']:.2f} ms")
    if report.separable_vs_conv:
        lines += ["", "separable vs full-convolution MobileNet (Table 4), batch 1, fp32: how many times faster "
                  "the separable network runs, and how many times fewer mult-adds it needs",
                  f"{'runtime':<12} {'separable ms':>12} {'conv ms':>9} {'faster':>8} {'fewer mult-adds':>15}"]
        for row in report.separable_vs_conv:
            if row["status"] != "ok":
                lines.append(f"{row['runtime']:<12} {row['status']}: {row['reason']}")
            else:
                lines.append(f"{row['runtime']:<12} {row['separable_ms']:>12.2f} {row['conv_ms']:>9.2f} "
                             f"{row['time_ratio']:>7.2f}x {row['savings']:>14.2f}x")
    if report.blocks_vs_conv:
        lines += ["", "each separable block vs the full 3x3 conv it replaces (PyTorch eager, folded, batch 1)",
                  f"{'block':>5} {'input':>14} {'stride':>6} {'separable ms':>12} {'conv ms':>8} {'faster':>8} "
                  f"{'fewer mult-adds':>15}"]
        for row in report.blocks_vs_conv:
            shape = "x".join(map(str, row["in_shape"]))
            lines.append(f"{row['block']:>5} {shape:>14} {row['stride']:>6} {row['separable_ms']:>12.3f} "
                         f"{row['conv_ms']:>8.3f} {row['time_ratio']:>7.2f}x {row['savings']:>14.2f}x")
    if report.layer_shares:
        lines += ["", "time share by layer type vs mult-add share (Table 2), batch 1, fp32",
                  f"{'runtime':<12} {'layers':<24} {'time':>7} {'mult-adds':>9}"
                  + (f" {'predicted':>9}" if report.predicted else "")]
        for row in report.layer_shares:
            predicted = row.get("predicted_share")
            lines.append(
                f"{row['runtime']:<12} {row['label']:<24} {row['time_share']:>7.1%} {row['mult_add_share']:>9.1%}"
                + ("" if not report.predicted else f" {predicted:>9.1%}" if predicted is not None else f" {'-':>9}")
            )
    if report.layer_predictions:
        lines += format_layer_predictions(report.layer_predictions)
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


def check_plot_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if ``plot`` can write it (by its suffix), else an ``InputError``."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise InputError(f"a plot is written as {', '.join(PLOT_FORMATS)}, got {path}")
    return path


def plot(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    """Latency at the smallest batch and throughput at the largest, one bar per backend (written
    atomically)."""
    path = check_plot_path(path)
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower())
    finally:
        plt.close(fig)
    return path


def format_predictions(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The predicted-beside-measured table: measured median, predicted, error."""
    lines = ["", "predicted (latency model, docs/latency.md) vs measured median per call",
             f"{'backend':<26} {'batch':>5} {'measured':>9} {'predicted':>9} {'error':>7}"]
    for row in rows:
        head = f"{row['name']:<26} {row['batch_size']:>5} {row['measured_ms']:>9.2f}"
        if row["predicted_ms"] is None:
            lines.append(f"{head} not predicted: {row['reason']}")
        else:
            lines.append(f"{head} {row['predicted_ms']:>9.2f} {row['error']:>+7.1%}")
    return lines


def format_layer_predictions(rows: list[dict[str, Any]]) -> list[str]:
    """Per layer, each profiled runtime's measured and predicted milliseconds and the error (or,
    without a batch-1 fp32 cell to scale the profile to, the shares of the layers' time)."""
    runtimes = list(dict.fromkeys(row["runtime"] for row in rows))
    by = {(row["runtime"], row["layer"]): row for row in rows}
    timed = {rt: all(by[rt, layer]["measured_ms"] is not None for r, layer in by if r == rt) for rt in runtimes}
    lines = ["", "predicted vs measured per layer, batch 1, fp32 (measured: the runtime's profile, read as its "
             "calibration reads it and scaled to its measured call; a share of the layers' time where no "
             "batch-1 fp32 cell was timed)",
             f"{'layer':<14}" + "".join(f"{rt:>27}" for rt in runtimes),
             f"{'':<14}" + "".join(f"{'measured':>11}{'predicted':>10}{'error':>6}" if timed[rt]
                                          else f"{'share':>11}{'predicted':>10}{'':>6}" for rt in runtimes)]
    for layer in dict.fromkeys(row["layer"] for row in rows):
        cells = []
        for rt in runtimes:
            row = by.get((rt, layer))
            if row is None:
                cells.append(f"{'-':>27}")
            elif timed[rt]:
                cells.append(f"{row['measured_ms']:>11.4f}{row['predicted_ms']:>10.4f}{row['error']:>+6.0%}")
            else:
                cells.append(f"{row['measured_share']:>11.1%}{row['predicted_share']:>10.1%}{'':>6}")
        lines.append(f"{layer:<14}" + "".join(cells))
    return lines

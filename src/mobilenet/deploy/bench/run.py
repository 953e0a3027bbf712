"""``bench``: every requested (runtime, precision, batch size) built first, then timed
interleaved with an sgemm roof, then the comparisons the options ask for."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mobilenet.cost import network_cost
from mobilenet.deploy.bench.common import bound, build_predictor, input_batch
from mobilenet.deploy.bench.conv import block_comparisons, separable_vs_conv
from mobilenet.deploy.bench.layers import layer_profiles, layer_shares
from mobilenet.deploy.bench.memory import memory_rows
from mobilenet.deploy.bench.peers import peer_cells
from mobilenet.deploy.bench.report import BenchOptions, BenchReport, Cell, check_plot_path, machine_info, plot
from mobilenet.deploy.runtimes import BUILT_PER_BATCH
from mobilenet.deploy.timing import Sgemm, Timing, time_rounds
from mobilenet.errors import InputError, MobileNetError
from mobilenet.files import write_text
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1

Timed = list[tuple[Cell, Callable[[], Any]]]


def bench(
    model: MobileNetV1,
    options: BenchOptions | None = None,
    *,
    plot_to: str | os.PathLike[str] | None = None,
    save_to: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = lambda s: None,
    annotate: Callable[[BenchReport], None] | None = None,
) -> BenchReport:
    """Measure ``model`` as ``options`` ask (default ``BenchOptions()``): every requested
    (runtime, precision, batch size) gets a cell in the report, measured or with the reason it was
    not. ``plot_to``: also draw the report there (.png, .svg, .pdf); ``save_to``: also write its
    JSON there. ``log`` hears the progress (each step can take seconds to minutes). ``annotate``
    adds to the measured report before it is plotted or saved: what stands above bench puts its
    own view beside the measurements (``mobilenet.latency.versus.annotate``: the predictions)."""
    options = options or BenchOptions()
    if plot_to is not None:
        check_plot_path(plot_to)  # before the minutes of measuring, not after
    cfg = model.arch_cfg
    # From the cost model, before any input exists: batch 100000 at 1.0-224 is 60 GB of input alone.
    check_memory(cfg, max(options.batch_sizes), mode="inference")
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
    inputs = {b: input_batch(model, b, options.preprocess) for b in options.batch_sizes}

    # Build every predictor first (exports, quantization), then time them all together.
    timed = _runtime_cells(model, options, inputs, report, log)
    if options.peers:
        for cell, fn in peer_cells(model, options, inputs, log):
            report.cells.append(cell)
            if fn is not None:
                timed.append((cell, fn))
    _time(timed, report, options, log)
    report.compare_int8_with_fp32()

    if options.compare_conv:
        report.separable_vs_conv = separable_vs_conv(model, options, log)
        report.blocks_vs_conv = block_comparisons(model, options, log)
    if options.layers:
        report.layer_seconds = layer_profiles(model, options, log)
        report.layer_shares = layer_shares(cfg, report.layer_seconds)
    if options.memory:
        report.memory = memory_rows(model, options, log)
    if annotate is not None:
        annotate(report)
    if plot_to is not None:
        plot(report, plot_to)
    if save_to is not None:
        write_text(Path(save_to), report.to_json() + "\n")
    return report


def _runtime_cells(
    model: MobileNetV1, options: BenchOptions, inputs: dict[int, torch.Tensor], report: BenchReport,
    log: Callable[[str], None],
) -> Timed:
    """A cell per (runtime, precision, batch size) in ``report``, and the calls to time. One
    predictor serves every batch size of a runtime, except ``auto``, which decides per batch size
    (the fastest runtime at batch 1 need not be the fastest at 32), and those ``BUILT_PER_BATCH``
    (PyTorch's program is compiled for one batch size and runs others in slices of it)."""
    timed: Timed = []
    for runtime in options.runtimes:
        for precision in options.precisions:
            name = f"{runtime} {precision}"
            per_batch = runtime == "auto" or runtime in BUILT_PER_BATCH
            groups = [(b,) for b in options.batch_sizes] if per_batch else [options.batch_sizes]
            for sizes in groups:
                cells = [Cell(name, runtime, precision, b) for b in sizes]
                report.cells += cells
                log(f"preparing {name}" + (f" at batch {sizes[0]}" if per_batch else ""))
                try:
                    predictor = build_predictor(model, runtime, precision, options, max(sizes))
                except MobileNetError as err:
                    for cell in cells:
                        cell.status, cell.reason = ("skipped" if isinstance(err, InputError) else "failed"), str(err)
                    continue
                for cell in cells:
                    cell.description = predictor.description
                    # Fed the file's own layout and dtype, converted once: the runtime is timed,
                    # not a transpose and a quantization in Python (TF's peer files get theirs too).
                    timed.append((cell, bound(predictor, predictor.native_input(inputs[cell.batch_size]))))
    return timed


def _time(timed: Timed, report: BenchReport, options: BenchOptions, log: Callable[[str], None]) -> None:
    log(f"timing {len(timed)} cells and an sgemm interleaved, about {options.seconds:g} s each")
    sgemm = Sgemm()
    rounds = time_rounds([sgemm] + [fn for _, fn in timed], seconds=options.seconds, min_runs=options.min_runs)
    samples, report.machine_drift = rounds.samples, rounds.drift()
    report.sgemm_peak_gflops = sgemm.flop / Timing.from_seconds(samples[0]).median_ms / 1e6
    report.sgemm_library = sgemm.library
    for (cell, _), seconds in zip(timed, samples[1:]):
        timing = Timing.from_seconds(seconds)
        cell.median_ms, cell.p10_ms, cell.p90_ms = timing.median_ms, timing.p10_ms, timing.p90_ms
        cell.runs = timing.runs
        cell.images_per_s = cell.batch_size / (timing.median_ms / 1e3)
        cell.gflops = report.gflop_per_image * cell.images_per_s

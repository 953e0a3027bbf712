"""Predicted beside measured, for ``mobilenet bench --predict``: each measured network cell with its
predicted time and the whole-network error, each measured layer-type share with the predicted
one, and each layer's profiled time (bench's own profile) with its predicted time. Opt-in in bench, since a first
calibration takes up to a minute per runtime and precision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import MobileNetError
from mobilenet.latency import RUNTIMES, predict

Log = Callable[[str], None]
# bench's layer kinds are cost's: its "conv" is the stem (and Table 4's full convs).
BENCH_KIND = {"stem": "conv"}


def predicted_cells(arch_cfg: ArchConfig, cells: Iterable[Any], threads: int | None, log: Log) -> list[dict[str, Any]]:
    """A row per measured cell of a runtime the model predicts (bench's ``Cell``: runtime,
    precision, batch_size, median_ms): ``predicted_ms`` (the call as bench times it, fed the
    file's own input: the predictor's conversion left out) and ``error`` (predicted / measured
    - 1), or ``reason`` where it cannot predict that cell."""
    rows = []
    for cell in cells:
        if cell.status != "ok" or cell.peer or cell.runtime not in RUNTIMES:
            continue
        row: dict[str, Any] = {"name": cell.name, "runtime": cell.runtime, "precision": cell.precision,
                               "batch_size": cell.batch_size, "measured_ms": cell.median_ms}
        try:
            prediction = predict(arch_cfg, cell.runtime, cell.precision, cell.batch_size, threads, log=log)
        except MobileNetError as err:  # a precision it cannot calibrate, say: said in the row
            rows.append(row | {"predicted_ms": None, "error": None, "reason": str(err)})
            continue
        # bench feeds each file its own input, converted once: its call leaves the conversion out.
        predicted_ms = prediction.total_ms - prediction.conversion_ms
        rows.append(row | {"predicted_ms": predicted_ms, "error": predicted_ms / cell.median_ms - 1})
    return rows


def with_predicted_shares(
    arch_cfg: ArchConfig, share_rows: Sequence[dict[str, Any]], threads: int | None, log: Log,
) -> list[dict[str, Any]]:
    """bench's measured layer-type shares (batch 1, fp32), each with ``predicted_share`` (None
    where the model has no such type, or cannot predict the runtime)."""
    shares: dict[str, dict[str, float] | None] = {}
    for runtime in dict.fromkeys(row["runtime"] for row in share_rows):
        try:
            predicted = predict(arch_cfg, runtime, "fp32", 1, threads, log=log).shares()
        except MobileNetError as err:
            log(f"no predicted shares for {runtime}: {err}")
            shares[runtime] = None
            continue
        by_kind: dict[str, float] = {}
        for kind, share in predicted.items():
            by_kind[BENCH_KIND.get(kind, kind)] = by_kind.get(BENCH_KIND.get(kind, kind), 0.0) + share
        shares[runtime] = by_kind
    return [row | {"predicted_share": (shares[row["runtime"]] or {}).get(row["kind"])} for row in share_rows]


def predicted_layers(arch_cfg: ArchConfig, cells: Iterable[Any], profiles: dict[str, Sequence[float]],
                     threads: int | None, log: Log) -> list[dict[str, Any]]:
    """A row per layer of each runtime bench profiled (``profiles``: each layer's seconds, batch
    1, fp32, in the order of ``arch.layers``, read as the calibration reads a profile): its
    predicted and its profiled milliseconds and the error. The profile runs apart from the timed
    cells and slows every node, so it is scaled, as the calibration scales its own, to the
    layers' part of the runtime's measured batch-1 fp32 cell (its median less the predicted
    call); without such a cell, ``measured_ms`` and ``error`` are None and the shares of the
    layers' time compare."""
    medians = {c.runtime: c.median_ms for c in cells if c.status == "ok" and not c.peer
               and c.precision == "fp32" and c.batch_size == 1}
    rows: list[dict[str, Any]] = []
    for runtime, profiled in profiles.items():
        if runtime not in RUNTIMES:
            continue
        try:
            prediction = predict(arch_cfg, runtime, "fp32", 1, threads, log=log)
        except MobileNetError as err:
            log(f"no predicted layers for {runtime}: {err}")
            continue
        if len(profiled) != len(prediction.layers) or sum(profiled) <= 0:
            continue  # (bench leaves such a profile out; the calibration does too)
        predicted_total = sum(x.predicted_ms for x in prediction.layers)
        median = medians.get(runtime)
        layers_ms = None if median is None or median <= prediction.call_ms else median - prediction.call_ms
        for layer, s in zip(prediction.layers, profiled, strict=True):
            measured = None if layers_ms is None else s / sum(profiled) * layers_ms
            rows.append({"runtime": runtime, "layer": layer.name, "kind": layer.kind, "bound": layer.bound,
                         "predicted_ms": layer.predicted_ms, "measured_ms": measured,
                         "error": None if measured is None else layer.predicted_ms / measured - 1,
                         "predicted_share": layer.predicted_ms / predicted_total,
                         "measured_share": s / sum(profiled)})
    return rows


def annotate(arch_cfg: ArchConfig, threads: int | None, log: Log) -> Callable[[Any], None]:
    """What ``mobilenet.deploy.bench.bench(..., annotate=...)`` calls on its measured report: the
    predictions beside each measured cell, each layer-type share and, for the runtimes whose
    layers bench profiled, each layer (bench itself knows nothing of the latency model, which
    stands above it)."""

    def add_predictions(report: Any) -> None:
        report.predicted = predicted_cells(arch_cfg, report.cells, threads, log)
        report.layer_shares = with_predicted_shares(arch_cfg, report.layer_shares, threads, log)
        report.layer_predictions = predicted_layers(arch_cfg, report.cells, report.layer_seconds, threads, log)

    return add_predictions

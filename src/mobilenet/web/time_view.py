"""The time and choose views: predicted time from ``mobilenet.latency``, measured time from the
deploy runtimes, and the published models' top-1 against their cost.

The latency model predicts from constants calibrated on this machine (under a minute per runtime
and precision, then cached). A request for a prediction never calibrates: where this machine has
no constants yet the view says so and the page offers to calibrate, in the background like a
measurement (``calibrate``). Until then the choose view uses the paper's own axis (Figure 4: top-1
against mult-adds, exact from ``mobilenet.cost``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError

NOT_AVAILABLE = "latency model not available"
MEASURE_ROUNDS = 10
MEASURE_ROUND_S = 0.3
LAYER_PROFILE_S = 1.0
CALIBRATION_S = 60  # what the latency model promises at most, for the progress bar
Progress = Callable[[float, str], None]


class NotCalibratedError(InputError):
    """This machine has no latency constants for the runtime and precision asked."""


def calibration(runtime: str, precision: str, threads: int | None) -> Any:
    """The cached calibration, never a new one: ``NotCalibratedError`` where there is none."""
    from mobilenet.latency import cached_calibration  # noqa: PLC0415

    found = cached_calibration(runtime, precision, threads=threads, log=lambda line: None)
    if found is None:
        raise NotCalibratedError(f"this machine has no latency constants for {runtime} {precision} yet: calibrate "
                                 f"(under a minute, once; cached)")
    return found


def prediction_view(cfg: ArchConfig, runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    """Predicted milliseconds per layer, each layer compute- or memory-bound; or why not, and
    whether calibrating would help (``can_calibrate``)."""
    try:
        from mobilenet.latency import predict_with  # noqa: PLC0415
    except ImportError as err:
        return {"available": False, "can_calibrate": False, "reason": f"{NOT_AVAILABLE} ({err})"}
    try:
        constants = calibration(runtime, precision, threads)
    except NotCalibratedError as err:
        return {"available": False, "can_calibrate": True, "reason": str(err)}
    return {"available": True, **predict_with(constants, cfg).to_dict(), "calibrated": constants.measured_when(),
            "caveats": caveats(constants)}


def caveats(constants: Any) -> list[str]:
    """What the page says beside a prediction about how far to trust its constants, where the
    library would warn a caller of them (``latency.calibrate.calibration_warnings``)."""
    from mobilenet.cpu import cpu_info  # noqa: PLC0415
    from mobilenet.latency.calibrate import drifting_machine_warning, noisy_fit_warning  # noqa: PLC0415

    said = []
    if drifting_machine_warning(constants):
        said.append(f"the machine's pace moved {constants.machine_drift:.2f}x while they were measured")
    if noisy_fit_warning(constants, cpu_info().logical_cores):
        said.append(f"they missed their own networks by {constants.network_error:.0%}")
    return said


def calibrate(runtime: str, precision: str, threads: int | None, progress: Progress) -> dict[str, Any]:
    """Calibrate the latency model for ``runtime`` at ``precision`` on this machine (its own
    micro-benchmarks, cached); ``progress`` hears its log lines."""
    from mobilenet.latency import calibrated  # noqa: PLC0415

    started = time.monotonic()
    progress(0.0, f"calibrating {runtime} {precision}")
    constants = calibrated(runtime, precision, threads=threads, remeasure=True,
                           log=lambda line: progress(min(0.95, (time.monotonic() - started) / CALIBRATION_S), line))
    return {"runtime": constants.runtime, "precision": constants.precision, "threads": constants.threads,
            "seconds": round(time.monotonic() - started, 1)}


def measure(cfg: ArchConfig, runtime: str, precision: str, threads: int | None, progress: Progress) -> dict[str, Any]:
    """Time the network on this machine in ``runtime`` at ``precision``, batch 1 (median and
    percentiles of many calls), and each layer type's share of the time where the runtime has a
    profiler (``deploy.bench``'s). Speed does not depend on the weights, so the network is a
    freshly initialised one of the page's settings. Takes a few seconds; ``progress`` hears of it."""
    import torch  # noqa: PLC0415

    from mobilenet.deploy.runtime import make_predictor  # noqa: PLC0415
    from mobilenet.deploy.timing import Timing, time_interleaved  # noqa: PLC0415
    from mobilenet.factory import mobilenet_v1  # noqa: PLC0415

    if precision == "int8":
        raise InputError("measuring int8 needs calibration images; the explorer measures fp32, fp16 and bf16")
    progress(0.0, "building the network")
    with torch.random.fork_rng():
        # The same weights every time: what a runtime keeps between runs (PyTorch's compiled graph,
        # tens of seconds to make) is keyed by them, so the same network is prepared once.
        torch.manual_seed(0)
        model = mobilenet_v1(**cfg.to_dict()).eval()
    progress(0.05, f"preparing {runtime} {precision} (compiling may take a minute the first time)")
    predictor = make_predictor(model, runtime, precision, threads=threads)
    x = torch.rand(1, cfg.in_channels, cfg.height, cfg.width) * 2 - 1
    samples: list[float] = []
    for i in range(MEASURE_ROUNDS):
        progress(0.1 + 0.7 * i / MEASURE_ROUNDS, f"timing the network: round {i + 1} of {MEASURE_ROUNDS}")
        samples += time_interleaved([lambda: predictor(x)], seconds=MEASURE_ROUND_S, min_runs=3,
                                    warmup=3 if i == 0 else 0)[0]
    timing = Timing.from_seconds(samples)
    progress(0.8, "timing each layer type")
    shares = _layer_shares(model, runtime, precision, threads)
    progress(1.0, "done")
    return {"runtime": runtime, "precision": precision, "description": predictor.description,
            "median_ms": timing.median_ms, "p10_ms": timing.p10_ms, "p90_ms": timing.p90_ms, "runs": timing.runs,
            "kinds": shares}


def _layer_shares(model: Any, runtime: str, precision: str, threads: int | None) -> list[dict[str, Any]]:
    """Each layer type's share of the measured time (``deploy.bench.layers``: PyTorch's, ONNX
    Runtime's, OpenVINO's and ExecuTorch's profilers, at fp32); empty where the runtime has none."""
    from mobilenet.deploy.bench.layers import layer_profiles, layer_shares  # noqa: PLC0415
    from mobilenet.deploy.bench.report import BenchOptions  # noqa: PLC0415

    if precision != "fp32":
        return []
    options = BenchOptions(runtimes=(runtime,), batch_sizes=(1,), threads=threads, seconds=LAYER_PROFILE_S,
                           peers=False, compare_conv=False, memory=False)
    return [{"kind": row["kind"], "label": row["label"], "time_share": row["time_share"],
             "mult_add_share": row["mult_add_share"]}
            for row in layer_shares(model.arch_cfg, layer_profiles(model, options, lambda line: None))]


def choose_view(budget: float | None, runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    """The published models' top-1 against predicted latency (``mobilenet.latency.choose`` on
    the predictions alone: nothing is timed in a request) with the Pareto front, and the most
    accurate one within ``budget`` ms. Where this machine is not calibrated for the runtime:
    against mult-adds instead (``budget`` in millions), the axis of the paper's Figure 4."""
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise InputError(f"the budget must be a number > 0, got {budget!r}")
    try:
        from mobilenet.latency import choose  # noqa: PLC0415

        constants = calibration(runtime, precision, threads)
    except (ImportError, NotCalibratedError) as err:
        return {"available": False, "reason": str(err), "axis": "mult_adds_millions",
                **_choose_by_mult_adds(None if budget is None else budget * 1e6)}
    found = choose(budget if budget is not None else sys.float_info.max, runtime, precision, threads=threads,
                   measure_best=0, calibration=constants).to_dict()
    return {"available": True, "axis": "predicted_ms",
            "candidates": _mark_front([c | {"cost": c["predicted_ms"]} for c in found["candidates"]]),
            "chosen": found["chosen"] | {"cost": found["chosen"]["predicted_ms"]}}


def _choose_by_mult_adds(budget: float | None) -> dict[str, Any]:
    from mobilenet.weights import FAMILIES, REGISTRY  # noqa: PLC0415 - the registry, only when asked

    candidates = []
    for name, entry in sorted(REGISTRY.items()):
        top1 = (entry.published or {}).get("top1")
        if top1 is None:
            continue
        # The network the weights load into (its classes, padding, rounding), as `mobilenet cost`
        # counts it: alpha and resolution alone would price a 1,000-class default instead.
        mult_adds = cost.network_cost(entry.arch_cfg).total.mult_adds
        candidates.append({"name": name, "family": entry.family, "top1": top1, "mult_adds": mult_adds,
                           "cost": mult_adds / 1e6})
    fits = [c for c in candidates if budget is None or c["mult_adds"] <= budget]
    if not fits:
        cheapest = min(candidates, key=lambda c: c["cost"])
        raise InputError(f"no published model fits {budget / 1e6:g}M mult-adds: the smallest, {cheapest['name']}, "
                         f"needs {cheapest['cost']:.1f}M")
    # The most accurate that fits; among equals the cheapest, then the original publisher first.
    rank = {family: i for i, family in enumerate(FAMILIES)}
    chosen = min(fits, key=lambda c: (-c["top1"], c["cost"], rank.get(c["family"], len(rank)), c["name"]))
    return {"candidates": _mark_front(candidates), "chosen": chosen}


def _mark_front(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each candidate with ``pareto``: whether its (cost, top-1) is on the front no other beats
    (``mobilenet.latency``'s ``pareto_front``)."""
    from mobilenet.latency.model import pareto_front  # noqa: PLC0415 - pure, no torch

    front = set(pareto_front((c["cost"], c["top1"]) for c in candidates))
    return [c | {"pareto": (c["cost"], c["top1"]) in front} for c in candidates]

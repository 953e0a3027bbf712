"""The time and choose views: predicted time from ``mobilenet.latency``, measured time from the
deploy runtimes, and the published models' top-1 against their cost.

The latency model is another part of the library (``mobilenet.latency``). Where it is not
installed, or does not offer the call used here, the views say "latency model not available" and
why, and the rest of the page works: measurement needs only the runtimes, and the choose view
falls back to the paper's own axis (Figure 4: top-1 against mult-adds, exact from ``mobilenet.cost``).

Calls expected of ``mobilenet.latency``:

* ``predict(cfg, runtime=, precision=, batch_size=, threads=)`` -> an object with ``to_dict()``
  giving ``{"layers": [{"name", "predicted_ms", "bound"}, ...], "total": {"predicted_ms"}}``;
* ``choose(budget_ms=, runtime=, precision=, batch_size=, threads=, measure=False)`` -> an object
  with ``to_dict()`` giving ``{"candidates": [{"name", "top1", "predicted_ms", "pareto"}, ...],
  "chosen": {"name", ...} | None}``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from typing import Any

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError

NOT_AVAILABLE = "latency model not available"
MEASURE_ROUNDS = 10
MEASURE_ROUND_S = 0.3
Progress = Callable[[float, str], None]


def latency_call(name: str) -> tuple[Callable[..., Any] | None, str]:
    """``mobilenet.latency.<name>`` and "", or None and why it cannot be had."""
    try:
        module = importlib.import_module("mobilenet.latency")
    except ImportError as err:
        return None, f"{NOT_AVAILABLE}: mobilenet.latency cannot be imported ({err})"
    call = getattr(module, name, None)
    if not callable(call):
        return None, f"{NOT_AVAILABLE}: mobilenet.latency has no {name}()"
    return call, ""


def prediction_view(cfg: ArchConfig, runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    """Predicted milliseconds per layer, each layer compute- or memory-bound, or why not."""
    predict, reason = latency_call("predict")
    if predict is None:
        return {"available": False, "reason": reason}
    try:
        result = predict(cfg, runtime=runtime, precision=precision, batch_size=1, threads=threads)
    except TypeError as err:  # a call of another shape than the one this view was written for
        return {"available": False, "reason": f"{NOT_AVAILABLE}: predict() {err}"}
    return {"available": True, **_as_dict(result)}


def measure(cfg: ArchConfig, runtime: str, precision: str, threads: int | None, progress: Progress) -> dict[str, Any]:
    """Time the network on this machine in ``runtime`` at ``precision``, batch 1: the median, 10th
    and 90th percentile of many calls. Speed does not depend on the weights, so the network is a
    freshly initialised one of the page's settings. Runs for a few seconds; ``progress`` hears of it."""
    import torch  # noqa: PLC0415

    from mobilenet.deploy.runtime import make_predictor  # noqa: PLC0415
    from mobilenet.deploy.timing import Timing, time_interleaved  # noqa: PLC0415
    from mobilenet.factory import mobilenet_v1  # noqa: PLC0415

    if precision == "int8":
        raise InputError("measuring int8 needs calibration images; the explorer measures fp32, fp16 and bf16")
    progress(0.0, "building the network")
    model = mobilenet_v1(**cfg.to_dict()).eval()
    progress(0.05, f"preparing {runtime} {precision}")
    predictor = make_predictor(model, runtime, precision, threads=threads)
    x = torch.rand(1, cfg.in_channels, cfg.height, cfg.width) * 2 - 1
    samples: list[float] = []
    for i in range(MEASURE_ROUNDS):
        progress(0.1 + 0.9 * i / MEASURE_ROUNDS, f"timing: round {i + 1} of {MEASURE_ROUNDS}")
        samples += time_interleaved([lambda: predictor(x)], seconds=MEASURE_ROUND_S, min_runs=3,
                                    warmup=3 if i == 0 else 0)[0]
    timing = Timing.from_seconds(samples)
    progress(1.0, "done")
    return {"runtime": runtime, "precision": precision, "description": predictor.description,
            "median_ms": timing.median_ms, "p10_ms": timing.p10_ms, "p90_ms": timing.p90_ms, "runs": timing.runs}


def choose_view(budget: float | None, runtime: str, precision: str, threads: int | None) -> dict[str, Any]:
    """The published models' top-1 against latency (from the latency model) with the Pareto front
    and the best model within ``budget`` ms; without the latency model, against mult-adds (budget
    in millions of mult-adds), the axis of the paper's Figure 4."""
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise InputError(f"the budget must be a number > 0, got {budget!r}")
    choose, reason = latency_call("choose")
    if choose is not None:
        try:
            result = choose(budget_ms=budget, runtime=runtime, precision=precision, batch_size=1, threads=threads,
                            measure=False)
            return {"available": True, "axis": "predicted_ms", **_as_dict(result)}
        except TypeError as err:
            reason = f"{NOT_AVAILABLE}: choose() {err}"
    return {"available": False, "reason": reason, "axis": "mult_adds_millions",
            **_choose_by_mult_adds(None if budget is None else budget * 1e6)}


def _choose_by_mult_adds(budget: float | None) -> dict[str, Any]:
    from mobilenet.weights import describe_pretrained  # noqa: PLC0415 - the registry, only when asked

    candidates = []
    for row in describe_pretrained():
        top1 = (row.get("published") or {}).get("top1")
        if top1 is None:
            continue
        cfg = ArchConfig(alpha=row["alpha"], resolution=row["resolution"])
        mult_adds = cost.network_cost(cfg).total.mult_adds
        candidates.append({"name": row["name"], "family": row["family"], "top1": top1, "mult_adds": mult_adds,
                           "cost": mult_adds / 1e6, "cached": row.get("cached", False)})
    front = pareto_front([(c["cost"], c["top1"]) for c in candidates])
    for i, c in enumerate(candidates):
        c["pareto"] = i in front
    fits = [c for c in candidates if budget is None or c["mult_adds"] <= budget]
    # The most accurate that fits; among equals the cheapest, then the original publisher first.
    chosen = min(fits, key=lambda c: (-c["top1"], c["cost"], _family_rank(c["family"])), default=None)
    if chosen is None and candidates:
        cheapest = min(candidates, key=lambda c: c["cost"])
        raise InputError(f"no published model fits {budget / 1e6:g}M mult-adds: the smallest, {cheapest['name']}, "
                         f"needs {cheapest['cost']:.1f}M")
    return {"candidates": candidates, "chosen": chosen}


def _family_rank(family: str) -> int:
    from mobilenet.weights import FAMILIES  # noqa: PLC0415

    return FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats: none both costs no more and scores more (or
    costs less and scores as much)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = set(), -math.inf
    for i in order:
        if points[i][1] > best:
            front.add(i)
            best = points[i][1]
    return front


def _as_dict(result: Any) -> dict[str, Any]:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)

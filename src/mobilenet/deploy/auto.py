"""``runtime="auto"``: the fastest installed runtime for this model, precision and batch size,
measured on this machine — not a table measured on another.

The first time a (model shape, precision, batch size, threads) is asked for on a CPU, every
installed candidate is built and timed interleaved for a few seconds (said on stderr), the fastest
is kept and the decision cached in ``<cache>/auto-decisions.json``, keyed by the CPU model, its
ISA flags and the runtimes' versions, so a new CPU or an upgraded runtime measures again. The
predictor's description gives the measured times.

Modes (``auto_mode=`` or the environment variable ``MOBILENET_AUTO``):
``measure`` (default: cached decision, else measure), ``remeasure`` (measure again and replace the
cached decision), ``fixed`` (no measurement: the first installed candidate in ``CANDIDATES``'
order, for reproducible runs).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.deploy.optional import available, package_version
from mobilenet.deploy.runtimes import not_native
from mobilenet.deploy.timing import METHOD, Timing, time_interleaved
from mobilenet.errors import InputError
from mobilenet.files import write_text
from mobilenet.predictor import Predictor

AUTO_MODES = ("measure", "remeasure", "fixed")
AUTO_ENV = "MOBILENET_AUTO"
# The server runtimes auto chooses between (the mobile ones are for files shipped to phones), the
# fastest first as measured on the project's machines (docs/performance.md): ``fixed`` mode takes
# the first installed one. An order, not a promise for this CPU.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "fp32": ("onnxruntime", "openvino", "torch"),
    "bf16": ("openvino", "torch"),
    "int8": ("openvino", "onnxruntime"),
}
MEASURE_SECONDS = 0.6  # per candidate, interleaved; with warm-up a decision takes a few seconds
MIN_RUNS = 5
CACHE_FILE = "auto-decisions.json"


def _runtime_versions() -> dict[str, str]:
    versions = {name: package_version(name) for name in ("torch", "onnxruntime", "openvino")}
    return {name: version for name, version in versions.items() if version is not None}


def decision_key(cfg: ArchConfig, precision: str, batch_size: int, threads: int | None) -> str:
    """What a measured decision depends on: the CPU, the runtimes, the model's shape, the request."""
    cpu = cpu_info()
    shape = {k: v for k, v in cfg.to_dict().items() if k not in ("dropout", "bn_momentum")}
    return json.dumps({
        "cpu": cpu.model, "flags": cpu.notable_flags(), "cores": cpu.logical_cores, "runtimes": _runtime_versions(),
        "model": shape, "precision": precision, "batch_size": batch_size, "threads": threads, "timing": METHOD,
    }, sort_keys=True)


def _cache_path() -> os.PathLike[str]:
    from mobilenet.weights.fetch import cache_dir  # noqa: PLC0415 - the project's one cache folder

    return cache_dir() / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    try:
        with open(_cache_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: measure again


def _cached_decision(key: str, found: list[str]) -> dict[str, Any] | None:
    """The cached decision for ``key`` if it has the shape ``choose`` writes and names a runtime
    still found here; None (measure again, and overwrite it) for anything else in its place."""
    entry = _read_cache().get(key)
    if not isinstance(entry, dict):
        return None
    medians = entry.get("median_ms")
    well_formed = (
        entry.get("runtime") in found and isinstance(entry.get("measured"), str) and isinstance(medians, dict)
        and all(isinstance(r, str) and isinstance(ms, (int, float)) for r, ms in medians.items())
    )
    return entry if well_formed else None


def _write_cache(key: str, decision: dict[str, Any]) -> None:
    data = _read_cache()
    data[key] = decision
    try:
        write_text(_cache_path(), json.dumps(data, indent=1, sort_keys=True))
    except Exception as err:  # a read-only cache costs a re-measurement next time, nothing more
        print(f"auto: could not cache the decision ({err})", file=sys.stderr)


def _installed(runtime: str) -> bool:
    return runtime == "torch" or available(runtime)


def candidates(precision: str) -> list[str]:
    """The installed runtimes that run ``precision`` natively on this CPU (each runtime's own rule)."""
    if precision not in CANDIDATES:
        raise InputError(f"auto chooses among {', '.join(CANDIDATES)} runtimes, not {precision!r}")
    return [r for r in CANDIDATES[precision] if _installed(r) and not_native(r, precision) is None]


def choose(
    cfg: ArchConfig, precision: str, batch_size: int, threads: int | None,
    build: Callable[[str], Predictor], example: torch.Tensor, *, mode: str | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> tuple[Predictor, str]:
    """(predictor, reason) for ``auto``. ``build(runtime)`` makes a candidate; ``example`` is a
    batch of ``batch_size`` preprocessed images to time it on."""
    mode = mode or os.environ.get(AUTO_ENV) or "measure"
    if mode not in AUTO_MODES:
        raise InputError(f"auto mode must be one of {AUTO_MODES} (from {AUTO_ENV} or auto_mode=), got {mode!r}")
    found = candidates(precision)
    if not found:
        installed = [r for r in CANDIDATES[precision] if _installed(r)]
        why = not_native(installed[0], precision) if installed else "none is installed"
        fix = "" if installed else "; pip install 'mobilenet[onnx,openvino]'"
        raise InputError(f"auto found no runtime for {precision}: {why}{fix}")
    if mode == "fixed":
        return build(found[0]), f"fixed order {' > '.join(CANDIDATES[precision])}, first installed"
    key = decision_key(cfg, precision, batch_size, threads)
    cached = _cached_decision(key, found) if mode == "measure" else None
    if cached:
        return build(cached["runtime"]), f"cached measurement ({_times(cached['median_ms'])}, {cached['measured']})"
    predictors: dict[str, Predictor] = {}
    for runtime in found:
        try:
            predictors[runtime] = build(runtime)
        except InputError as err:
            log(f"auto: {runtime} cannot run {precision} here ({err})")
    if not predictors:
        raise InputError(f"auto: no installed runtime can run {precision} on this CPU")
    if len(predictors) == 1:
        (runtime, predictor), = predictors.items()
        return predictor, f"the only runtime that runs {precision} here"
    log(f"auto: timing {', '.join(predictors)} at {precision}, batch {batch_size} "
        f"(about {MEASURE_SECONDS * len(predictors):.0f} s, once per CPU and model; cached)")
    calls = [lambda p=p: p(example) for p in predictors.values()]
    samples = time_interleaved(calls, seconds=MEASURE_SECONDS, min_runs=MIN_RUNS, block_s=0.05)
    medians = {r: Timing.from_seconds(s).median_ms for r, s in zip(predictors, samples)}
    runtime = min(medians, key=medians.get)  # type: ignore[arg-type]
    _write_cache(key, {"runtime": runtime, "median_ms": medians,
                       "measured": time.strftime("%Y-%m-%d %H:%M", time.localtime())})
    return predictors[runtime], f"measured fastest here ({_times(medians)})"


def _times(medians: dict[str, float]) -> str:
    return ", ".join(f"{r} {ms:.3g} ms" for r, ms in sorted(medians.items(), key=lambda kv: kv[1]))

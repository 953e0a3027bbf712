"""``runtime="auto"``: the fastest installed runtime for this model, precision and batch size,
measured on this machine — not a table measured on another.

The first time a (model shape, precision, batch size, threads) is asked for on a CPU, every
installed candidate is built and timed interleaved for a few seconds (said on stderr), the fastest
is kept and the decision cached in ``<cache>/auto-decisions.json``, keyed by the CPU model, its
ISA flags and the runtimes' versions, so a new CPU or an upgraded runtime measures again; an entry
of another shape there is measured again and replaced. The predictor's description gives the
measured times. int8 is timed beside an fp32 reference, and the description says whether it is
faster here at all: it is not everywhere.

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

from mobilenet.allocator import openmp_wait_policy
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
    """What a measured decision depends on: the CPU, the runtimes, the model's shape, the request,
    and the OpenMP wait policy PyTorch was timed under."""
    shape = {k: v for k, v in cfg.to_dict().items() if k not in ("dropout", "bn_momentum")}
    return json.dumps({
        **cpu_info().identity(), "runtimes": _runtime_versions(),
        "model": shape, "precision": precision, "batch_size": batch_size, "threads": threads, "timing": METHOD,
        "omp_wait_policy": openmp_wait_policy(),
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
    reference: Callable[[], Predictor] | None = None,
) -> tuple[Predictor, str]:
    """(predictor, reason) for ``auto``. ``build(runtime)`` makes a candidate; ``example`` is a
    batch of ``batch_size`` preprocessed images to time it on. ``reference`` (for int8) makes an
    fp32 predictor timed beside the candidates, so that the reason says whether int8 is faster
    here at all: it is not everywhere (slower than fp32 at 0.25-224 in LiteRT and ExecuTorch on an
    AVX2 CPU), and a choice among int8 runtimes must not imply it."""
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
        return build(cached["runtime"]), (f"cached measurement ({_times(cached['median_ms'])}, {cached['measured']})"
                                          + _against_fp32(precision, cached))
    predictors: dict[str, Predictor] = {}
    for runtime in found:
        try:
            predictors[runtime] = build(runtime)
        except InputError as err:
            log(f"auto: {runtime} cannot run {precision} here ({err})")
    if not predictors:
        raise InputError(f"auto: no installed runtime can run {precision} on this CPU")
    if len(predictors) == 1 and reference is None:
        (runtime, predictor), = predictors.items()
        return predictor, f"the only runtime that runs {precision} here"
    fp32 = _built(reference, log)
    log(f"auto: timing {', '.join(predictors)} at {precision}" + (f" and {fp32.runtime} fp32" if fp32 else "")
        + f", batch {batch_size} (a few seconds, once per CPU and model; cached)")
    calls = [lambda p=p: p(example) for p in [*predictors.values(), *([fp32] if fp32 else [])]]
    samples = time_interleaved(calls, seconds=MEASURE_SECONDS, min_runs=MIN_RUNS, block_s=0.05)
    medians = {r: Timing.from_seconds(s).median_ms for r, s in zip(predictors, samples)}
    runtime = min(medians, key=medians.get)  # type: ignore[arg-type]
    decision: dict[str, Any] = {"runtime": runtime, "median_ms": medians,
                                "measured": time.strftime("%Y-%m-%d %H:%M", time.localtime())}
    if fp32 is not None:
        decision["fp32_ms"] = {fp32.runtime: Timing.from_seconds(samples[-1]).median_ms}
    _write_cache(key, decision)
    comparison = _against_fp32(precision, decision)
    if "slower" in comparison:
        log(f"auto:{comparison}")
    return predictors[runtime], f"measured fastest here ({_times(medians)})" + comparison


def _built(make: Callable[[], Predictor] | None, log: Callable[[str], None]) -> Predictor | None:
    if make is None:
        return None
    try:
        return make()
    except InputError as err:
        log(f"auto: no fp32 reference to time int8 against ({err})")
        return None


def _against_fp32(precision: str, decision: dict[str, Any]) -> str:
    """``; fp32 onnxruntime 0.9 ms: int8 is slower than fp32 here`` from a decision with an fp32
    reference time, else nothing."""
    reference = decision.get("fp32_ms")
    if not isinstance(reference, dict) or len(reference) != 1:
        return ""
    (runtime, ms), = reference.items()
    if not isinstance(ms, (int, float)):
        return ""
    best = decision["median_ms"][decision["runtime"]]
    verdict = "faster" if best < ms else "slower"
    return f"; fp32 {runtime} {ms:.3g} ms: {precision} is {verdict} than fp32 here"


def _times(medians: dict[str, float]) -> str:
    return ", ".join(f"{r} {ms:.3g} ms" for r, ms in sorted(medians.items(), key=lambda kv: kv[1]))

"""Calibrating the latency model on this machine: the probes of ``mobilenet.latency.probes``
built and timed in the runtime itself, then the constants fitted (``mobilenet.latency.fit``).

A full calibration stays within ``DEFAULT_BUDGET_S`` per runtime and precision, building included,
and says what it does on stderr. Probes are timed with the project's settled-block timing
(``mobilenet.deploy.timing``): the sizes of one probe interleaved, each in settled blocks.
``mobilenet.latency.cache`` keeps the result, keyed by what it depends on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mobilenet.deploy.runtimes import check_precision
from mobilenet.deploy.timing import time_interleaved
from mobilenet.errors import InputError
from mobilenet.latency.backends import BACKENDS, Backend, probe_module
from mobilenet.latency.fit import CallMeasurement, Measurement, fit_call, fit_kernels
from mobilenet.latency.model import Calibration, element_bytes, input_bytes
from mobilenet.latency.probes import Probe, default_plan

DEFAULT_BUDGET_S = 60.0
SECONDS_PER_SHAPE = 0.12  # timed per probe and input size, interleaved in settled blocks
MIN_RUNS = 5
FLOOR_S = 1e-7  # what is left of a probe once the call's own cost is taken off, at the least

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    """Where the latency model says what it is doing, unless told otherwise: stderr."""
    print(line, file=sys.stderr, flush=True)


def check_request(runtime: str, precision: str, batch_size: int, threads: int | None) -> None:
    """Refuse, in one line, what the latency model cannot predict: an unknown or uninstalled
    runtime (naming its pip extra), a precision the runtime does not offer or not natively here."""
    if runtime not in BACKENDS:
        why = " (auto picks a runtime by measuring; name one)" if runtime == "auto" else ""
        raise InputError(f"the latency model predicts {', '.join(BACKENDS)}, not {runtime!r}{why}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"threads must be an int >= 1 (or None: the runtime's default), got {threads!r}")
    check_precision(runtime, precision)


def backend_for(runtime: str, precision: str, threads: int | None) -> Backend:
    """The runtime's probe builder; ``MissingRuntimeError`` (naming the pip extra) if the runtime
    is not installed."""
    return BACKENDS[runtime](precision, threads)


def calibrate(
    runtime: str, precision: str = "fp32", *, batch_size: int = 1, threads: int | None = None,
    budget_s: float = DEFAULT_BUDGET_S, plan: Sequence[Probe] | None = None,
    seconds_per_shape: float = SECONDS_PER_SHAPE, log: Log | None = None,
) -> Calibration:
    """Measure the probes of ``plan`` (default: ``probes.default_plan()``) in ``runtime`` at
    ``precision``, ``batch_size`` and ``threads``, and fit the machine's constants. Probes not
    started within ``budget_s`` are left out (said on stderr); their kernels take the best rate
    measured. A fixed-batch runtime (LiteRT, ExecuTorch) is calibrated at batch 1."""
    log = log or log_to_stderr
    check_request(runtime, precision, batch_size, threads)
    backend = backend_for(runtime, precision, threads)
    per_call = 1 if backend.fixed_batch else batch_size
    plan = tuple(plan or default_plan())
    started = time.monotonic()
    where = f"batch {per_call}, {threads or 'default'} threads"
    log(f"latency: calibrating {runtime} {precision} ({where}) on {len(plan)} probes, at most {budget_s:.0f} s")
    timed = _measure(backend, plan, per_call, started + budget_s, seconds_per_shape, log)
    calibration = fit(runtime, precision, per_call, threads, timed, fixed_batch=backend.fixed_batch)
    spent = time.monotonic() - started
    fit_info = {**calibration.fit, "seconds": round(spent, 1), "probes_measured": len({t.probe for t in timed}),
                "probes_planned": len(plan)}
    log(f"latency: calibrated in {spent:.0f} s; fit error on the probes "
        + ", ".join(f"{k} {e:.0%}" for k, e in calibration.fit["rmspe"].items()))
    return replace(calibration, fit=fit_info)


@dataclass(frozen=True)
class Timed:
    """A probe's median call at one input size, and the predictor's input conversion at that
    size where it has one (seconds)."""

    probe: Probe
    size: int
    seconds: float
    feed_seconds: float | None = None


def fit(
    runtime: str, precision: str, batch_size: int, threads: int | None, timed: Sequence[Timed], *,
    fixed_batch: bool = False,
) -> Calibration:
    """The calibration that ``timed`` implies: the call's own cost from the call probes, the
    input conversion's bandwidth from the feeds, and each kernel's roofline from what remains."""
    size_of = element_bytes(runtime, precision)
    calls = [t.seconds for t in timed if t.probe.kernel == "call"]
    # Every probe makes a call, so none can take less than one: a call probe slowed by a burst of
    # load elsewhere is held to the quickest probe rather than taken off every other.
    call_s = min(float(np.median(calls)) if calls else 0.0, *(t.seconds for t in timed))
    feeds = [CallMeasurement(input_bytes(t.probe.layers(t.size, batch_size, size_of), size_of), t.feed_seconds)
             for t in timed if t.feed_seconds is not None]
    _, feed_bytes_per_s = fit_call(feeds)
    measurements = [
        Measurement(t.probe.kernel, t.probe.layers(t.size, batch_size, size_of), max(t.seconds - call_s, FLOOR_S))
        for t in timed if t.probe.kernel != "call"
    ]
    if not measurements:
        raise InputError("a calibration needs at least one probe of a layer, not only the call")
    fitted = fit_kernels(measurements, batch_size, size_of)
    return Calibration(
        runtime=runtime, precision=precision, batch_size=batch_size, threads=threads, kernels=fitted.kernels,
        call_s=call_s, feed_bytes_per_s=feed_bytes_per_s, fixed_batch=fixed_batch,
        fit={"rmspe": fitted.rmspe, "probes": fitted.probes},
    )


def _measure(
    backend: Backend, plan: Sequence[Probe], batch_size: int, deadline: float, seconds: float, log: Log,
) -> list[Timed]:
    """Every probe built and timed, its sizes interleaved; the input conversion too for the
    probes that take an image as the network does (the stem's), until the deadline."""
    timed: list[Timed] = []
    for i, probe in enumerate(plan, 1):
        if time.monotonic() > deadline:
            left = sorted({p.kernel for p in plan[i - 1:]})
            log(f"latency: time is up; {len(plan) - i + 1} probes left out ({', '.join(left)}): "
                "their kernels take the best rate measured")
            break
        log(f"latency: [{i}/{len(plan)}] {probe.describe()}")
        module = probe_module(probe, probe.sizes[0], fixed_pads=backend.fixed_pads)
        shaped = backend.load(module, probe.input_shape(probe.sizes[0], batch_size))
        cells = [shaped(probe.input_shape(size, batch_size)) for size in probe.sizes]
        feeds = [c.feed for c in cells if c.feed is not None and probe.kernel == "stem"]
        samples = [float(np.median(s)) for s in time_interleaved(
            [c.run for c in cells] + feeds, seconds=seconds, min_runs=MIN_RUNS, warmup=2, block_s=seconds / 4)]
        fed = samples[len(cells):] or [None] * len(cells)
        timed += [Timed(probe, size, s, f) for size, s, f in zip(probe.sizes, samples, fed)]
    return timed

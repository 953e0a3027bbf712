"""Calibrating the latency model on this machine: the probes of ``mobilenet.latency.probes``
built and timed in the runtime itself, then the constants fitted (``mobilenet.latency.fit``):
each kernel's roofline from the micro-benchmarks, then the in-network factors from whole networks.

A full calibration stays within ``DEFAULT_BUDGET_S`` per runtime and precision, building included,
and says what it does on stderr. Probes are timed with the project's settled-block timing
(``mobilenet.deploy.timing``): the sizes of one probe interleaved, each in settled blocks.
``mobilenet.latency.cache`` keeps the result, keyed by what it depends on.
"""

from __future__ import annotations

import datetime
import itertools
import math
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mobilenet.arch import ArchConfig
from mobilenet.cost import LayerCost
from mobilenet.cpu import cpu_info
from mobilenet.deploy.runtimes import check_precision
from mobilenet.deploy.timing import DRIFTING, SETTLE_CALLS, time_rounds
from mobilenet.errors import InputError, option
from mobilenet.latency import own_process
from mobilenet.latency.backends import BACKENDS, Backend, Cell, probe_module
from mobilenet.latency.fit import (
    CACHE_MIN_MISSED,
    CACHE_SIZES,
    LAYER_CACHE_SIZES,
    CallMeasurement,
    Measurement,
    NetworkMeasurement,
    choose_cache,
    fit_call,
    fit_in_network,
    fit_kernels,
)
from mobilenet.latency.model import (
    CONV_KERNELS,
    UNBLOCKED,
    Calibration,
    call_seconds,
    call_weight_bytes,
    element_bytes,
    fills_blocks,
    handed_bytes,
    input_bytes,
    kernel_of,
    missed_fraction,
    predict_with,
    spilled_bytes,
)
from mobilenet.latency.probes import AnyProbe, NetworkProbe, Probe, default_networks, default_plan
from mobilenet.threads import check_threads, torch_threads_kept

DEFAULT_BUDGET_S = 60.0
SECONDS_PER_SHAPE = 0.12  # timed per probe and input size, interleaved in settled blocks
TIMING_COST = 2.5  # wall seconds per timed second and probe: warm-up calls, settling
# The timing phase as estimated from each probe's first call, with room for the estimate's miss:
# at batch 8 it took 0.93-1.17x the estimate (AMX Xeon, four runs; 43 s for 37 took the
# calibration to 61 s of its 60).
TIMING_ROOM = 1.2
MIN_RUNS = 5
REFERENCE_SLOTS = 4  # places each backend reference call takes in the timing rounds
FLOOR_S = 1e-7  # what is left of a probe once the call's own cost is taken off, at the least
# A calibration that misses its own whole networks by more than this (RMSPE) measured a machine
# whose speed moved under it (2 threads at batch 1 on a 2-vCPU guest: 29% and 33%, where 1 thread
# fitted within 10%) or a runtime the model misfits (ExecuTorch fp32 on a Zen 5: 20%; docs/latency.md §4).
NOISY_FIT = 0.15

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    """Where the latency model says what it is doing, unless told otherwise: stderr."""
    print(line, file=sys.stderr, flush=True)


def check_request(runtime: str, precision: str, batch_size: int, threads: int | None) -> None:
    """Refuse, in one line, what the latency model cannot predict: an unknown or uninstalled
    runtime (naming its pip extra), a precision the runtime does not offer or not natively here."""
    check_runtime(runtime)
    check_batch_size(batch_size)
    check_threads(threads)
    check_precision(runtime, precision)


def check_runtime(runtime: object) -> None:
    """Refuse, in one line, a runtime the latency model has no backend for (naming those it has)."""
    if not isinstance(runtime, str) or runtime not in BACKENDS:
        why = " (auto picks a runtime by measuring; name one)" if runtime == "auto" else ""
        raise InputError(f"the latency model predicts {', '.join(BACKENDS)}, not {runtime!r}{why}")


def check_batch_size(batch_size: object) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be an int >= 1, got {batch_size!r}")


def backend_for(runtime: str, precision: str, threads: int | None) -> Backend:
    """The runtime's probe builder; ``MissingRuntimeError`` (naming the pip extra) if the runtime
    is not installed."""
    return BACKENDS[runtime](precision, threads)


def calibrate(
    runtime: str, precision: str = "fp32", *, batch_size: int = 1, threads: int | None = None,
    budget_s: float = DEFAULT_BUDGET_S, plan: Sequence[Probe] | None = None,
    networks: Sequence[NetworkProbe] | None = None, seconds_per_shape: float = SECONDS_PER_SHAPE,
    log: Log | None = None,
) -> Calibration:
    """Measure the probes of ``plan`` (default: ``probes.default_plan()``) and the whole
    ``networks`` (default: ``probes.default_networks()``; ``()``: none, every in-network factor 1)
    in ``runtime`` at ``precision``, ``batch_size`` and ``threads``, and fit the machine's
    constants. The call probes go first (every fit takes what a call costs off the rest), then the
    networks; probes not started within ``budget_s`` are left out (said on stderr), and their kernels
    borrow the most similar kernel's constants. A budget that leaves the fit without what it
    cannot do without (the call probe, a layer's time) is refused, saying so. A fixed-batch runtime
    (LiteRT, ExecuTorch) is calibrated at batch 1. A runtime whose probes' thread pools would slow
    each other (ONNX Runtime above one thread, ``Backend.pools_of_their_own``) is calibrated in a
    process of its own, every probe on one pool (``mobilenet.latency.own_process``)."""
    return calibrate_beside(runtime, precision, (), batch_size=batch_size, threads=threads, budget_s=budget_s,
                            plan=plan, networks=networks, seconds_per_shape=seconds_per_shape, log=log)[0]


def calibrate_beside(
    runtime: str, precision: str = "fp32", calls: Sequence[Callable[[], object]] = (), *, batch_size: int = 1,
    threads: int | None = None, budget_s: float = DEFAULT_BUDGET_S, plan: Sequence[Probe] | None = None,
    networks: Sequence[NetworkProbe] | None = None, seconds_per_shape: float = SECONDS_PER_SHAPE,
    log: Log | None = None,
) -> tuple[Calibration, list[float]]:
    """``calibrate``, with ``calls`` (zero-argument callables) timed in the calibration's own
    rounds, interleaved with its probes: the calibration and each call's median latency
    (seconds, in the order of ``calls``, read at the rounds' typical pace as the probes are).

    Both then measure one machine, however its speed moves while they run, so a call's time
    against its prediction is the model's error alone, without the drift between a calibration
    and a later timing (``benchmarks/bench_latency_model.py --joint``; the guests of
    docs/latency.md §0 move by tens of percent within minutes). The calls' timing comes on top
    of ``budget_s``. Not where the calibration runs in a process of its own (ONNX Runtime above
    one thread, unless this process has put its sessions on one pool: ``own_process.needed``):
    ``calls`` cannot follow it there."""
    log = log or log_to_stderr
    check_request(runtime, precision, batch_size, threads)
    if own_process.needed(runtime, threads):
        if calls:
            raise InputError(f"{runtime} at {threads} threads calibrates in a process of its own, where calls "
                             "made here cannot be timed beside its probes")
        log(f"latency: calibrating {runtime} in a process of its own, its probes on one thread pool")
        calibration, shared = own_process.call_apart("calibrate", {
            "runtime": runtime, "precision": precision, "batch_size": batch_size, "threads": threads,
            "budget_s": budget_s, "plan": plan, "networks": networks, "seconds_per_shape": seconds_per_shape,
        }, runtime=runtime, threads=threads, doing=f"calibrating {runtime}", log=log)
        process = "its own, one thread pool" if shared else "its own, a pool per probe"
        return replace(calibration, fit={**calibration.fit, "process": process}), []
    with torch_threads_kept():  # the torch probes set the process's thread count
        backend = backend_for(runtime, precision, threads)
        per_call = 1 if backend.fixed_batch else batch_size
        plan = in_order(default_networks() if networks is None else networks, plan or default_plan())
        if not any(p.kernel == "call" for p in plan):
            raise InputError("the plan has no call probe, which every calibration needs: put one in it "
                             "(probes.Probe('call', ...), as probes.default_plan() does)")
        # Once per backend, before the probes' budget: PyTorch compiles two reference networks the
        # first time (tens of seconds, cached after), timed among the probes against their fused ops.
        prepared_at = time.monotonic()
        found = backend.prepare(log)
        prepare_s = time.monotonic() - prepared_at
        started = time.monotonic()
        pool = "the default threads" if threads is None else f"{threads} thread" + ("s" if threads > 1 else "")
        where = f"batch {per_call}, {pool}"
        log(f"latency: calibrating {runtime} {precision} ({where}) on {len(plan)} probes, at most {budget_s:.0f} s")
        measured = _measure(backend, plan, per_call, started + budget_s, seconds_per_shape, log, found,
                            beside=calls)
    try:
        calibration = fit(runtime, precision, per_call, threads, measured.timed, fixed_batch=backend.fixed_batch,
                          channel_blocks=backend.channel_blocks, position_blocks=backend.position_blocks,
                          handover=precision in backend.handover_precisions)
    except InputError as err:
        if not measured.left_out:
            raise
        # (what the fit lacks, the budget left out: the remedy is more of it, not another plan)
        raise InputError(f"{err}: {budget_s:g} s ran out with {measured.left_out} probes left out; raise "
                         f"{option('budget_s')} (default {DEFAULT_BUDGET_S:g})") from None
    spent = time.monotonic() - started - backend.converting_s
    fit_info = {**calibration.fit, "seconds": round(spent, 1), "converting_seconds": round(backend.converting_s, 1),
                "probes_measured": len({t.probe for t in measured.timed}),
                "probes_planned": len(plan), "machine_drift": round(measured.drift, 3),
                "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if calls:
        fit_info["timed_beside"] = len(calls)
    if backend.on_one_pool(threads):  # (the process's own pool; a process of its own says so instead)
        fit_info["process"] = "this one, one thread pool"
    if found:
        fit_info["prepare"] = {**found, "seconds": round(prepare_s, 1)}
    networks_fit = calibration.fit.get("in_network")
    on_networks = (f"; on the whole networks {networks_fit['rmspe_before']:.0%} before the in-network factors, "
                   f"{networks_fit['rmspe_after']:.0%} after") if networks_fit else ""
    converted = f" (and {backend.converting_s:.0f} s converting probes, once)" if backend.converting_s else ""
    converted += f" ({len(calls)} calls timed beside the probes included)" if calls else ""
    if math.isfinite(calibration.cache_bytes):
        on_networks += (f"; the cache keeps {calibration.cache_bytes / 2**20:g} MiB of weights between calls, "
                        "the rest come from memory")
    if math.isfinite(calibration.layer_cache_bytes):
        on_networks += (f"; a layer's activations beyond {calibration.layer_cache_bytes / 2**20:g} MiB "
                        "come from memory")
    # (a kernel's error is on what it was fitted to: its layers in the networks where profiled)
    log(f"latency: calibrated in {spent:.0f} s{converted}; each kernel's fit error "
        + ", ".join(f"{k} {e:.0%}" for k, e in calibration.fit["rmspe"].items()) + on_networks)
    calibration = replace(calibration, fit=fit_info)
    for warning in calibration_warnings(calibration, cpu_info().logical_cores):
        log(warning)
    return calibration, measured.beside


def calibration_warnings(calibration: Calibration, logical_cores: int) -> list[str]:
    """What a user of ``calibration`` should be told about how far to trust it: the machine
    moved while it measured (``drifting_machine_warning``), it missed its own networks
    (``noisy_fit_warning``)."""
    found = (drifting_machine_warning(calibration), noisy_fit_warning(calibration, logical_cores))
    return [warning for warning in found if warning]


def drifting_machine_warning(calibration: Calibration) -> str | None:
    """A warning for a calibration whose seconds of timing ran at paces further apart than
    ``DRIFTING`` (``Calibration.machine_drift``; ``None`` for a steady one)."""
    drift = calibration.machine_drift
    if drift is None or drift <= DRIFTING:
        return None
    return (f"latency: warning: the machine's pace moved {drift:.2f}x from second to second while this calibration "
            "timed (slowest over quickest): something else ran, or the machine is a guest whose host is busy. Its "
            "constants mix the fast and slow spells, and its predictions may miss either; calibrate again when "
            f"the machine is quiet ({option('remeasure', True)}).")


def noisy_fit_warning(calibration: Calibration, logical_cores: int) -> str | None:
    """A warning for a calibration that fitted its own whole networks worse than ``NOISY_FIT``
    (``None`` for one that did not): its predictions may be as far off, because the machine moved
    or the model misfits (ExecuTorch fp32 on a Zen 5: 20%, its networks' error growing with α);
    where the calls used every logical core (``threads`` None is the runtime's default, all of
    them), whatever else the machine runs shared them."""
    error, threads = calibration.network_error, calibration.threads
    if error is None or error <= NOISY_FIT:
        return None
    why = ""
    if threads is None or threads >= logical_cores:
        why = (f" At {threads or 'the default'} threads on {logical_cores} logical cores, every call shared the "
               "cores with the rest of the machine: fewer threads measure steadier.")
    return (f"latency: warning: this calibration misses its own networks by {error:.0%} (RMSPE): its predictions "
            "may be as far off. Either the machine's speed moved while it measured (calibrate again on a quiet "
            f"machine: {option('remeasure', True)}) or the model fits this runtime poorly.{why}")


@dataclass(frozen=True)
class Timed:
    """A probe's median call at one input size, and the predictor's input conversion at that
    size where it has one (seconds). A network's call is timed as a predictor makes it, its
    input converted first (``as_called``), so its seconds include that conversion."""

    probe: AnyProbe
    size: int
    seconds: float
    feed_seconds: float | None = None
    layer_seconds: tuple[float, ...] | None = None  # a network's layers apart, where the runtime profiles


def fit(
    runtime: str, precision: str, batch_size: int, threads: int | None, timed: Sequence[Timed], *,
    fixed_batch: bool = False, channel_blocks: dict[str, int] | None = None, handover: bool = False,
    position_blocks: dict[str, int] | None = None,
) -> Calibration:
    """The calibration that ``timed`` implies: the call's own cost from the call probes (fixed,
    and per byte handed over where they ran at several sizes and ``handover``), the input
    conversion's bandwidth from the feeds, each kernel's roofline, the in-network factors from
    the whole networks, and what the cache keeps of the weights between calls and holds of a
    layer's activations (each chosen by the whole networks' error, ``fit.choose_cache``).

    A kernel's roofline comes from the layers of the whole networks where the runtime profiled
    them (timed where they run, among their neighbours), else from its probes (what remains of
    their time once the call's own cost is taken off)."""
    size_of = element_bytes(runtime, precision)
    networks = [t for t in timed if isinstance(t.probe, NetworkProbe)]
    timed = [t for t in timed if not isinstance(t.probe, NetworkProbe)]
    calls = [CallMeasurement(handed_bytes(t.probe.layers(t.size, batch_size, size_of), size_of), t.seconds)
             for t in timed if t.probe.kernel == "call"]
    fixed, handover_bytes_per_s = fit_handover(calls) if handover else (_smallest_call_s(calls), math.inf)
    if not calls:
        raise InputError("a calibration needs its call probe timed: what a call costs alone is taken off every "
                         "other probe and network")
    # Every probe makes a call, so none can take less than one: a call probe slowed by a burst of
    # load elsewhere is held to the quickest probe rather than taken off every other.
    call_s = min(fixed, *(t.seconds for t in timed))

    feeds = [CallMeasurement(input_bytes(t.probe.layers(t.size, batch_size, size_of), size_of), t.feed_seconds)
             for t in timed if t.feed_seconds is not None]
    _, feed_bytes_per_s = fit_call(feeds)
    # The call's own cost as a prediction adds it (``model.call_seconds``), before any kernel is fitted.
    call_only = Calibration(
        runtime=runtime, precision=precision, batch_size=batch_size, threads=threads, kernels={}, call_s=call_s,
        feed_bytes_per_s=feed_bytes_per_s, handover_bytes_per_s=handover_bytes_per_s, fixed_batch=fixed_batch,
        channel_blocks=dict(channel_blocks or {}),
    )

    def own_call_s(layers: Sequence[LayerCost]) -> float:  # a probe is timed without the input's conversion
        return call_seconds(call_only, 0, handed_bytes(layers, size_of))

    def network_call_s(layers: Sequence[LayerCost]) -> float:  # a network is timed with it (``as_called``)
        return call_seconds(call_only, input_bytes(layers, size_of), handed_bytes(layers, size_of))

    def measurements(cache_bytes: float) -> tuple[list[Measurement], list[Measurement]]:
        """Every layer's measurement, profiled in a network and probed, its weights missed as a
        cache keeping ``cache_bytes`` of them would miss them."""
        def missed(layers: Sequence[LayerCost]) -> float:
            return missed_fraction(call_weight_bytes(layers, size_of), cache_bytes)

        in_place = []
        for t in networks:
            layers = t.probe.layers(t.size, batch_size, size_of)
            if not splits_into_layers(t.layer_seconds, layers):
                continue
            # The profile splits the network's time among its layers; the interleaved timing says how
            # long the whole took (the profile ran apart, perhaps in a faster or slower spell).
            scale = max(t.seconds - network_call_s(layers), FLOOR_S) / sum(t.layer_seconds)
            in_place += [Measurement(kernel_of(layer, channel_blocks), (layer,), max(seconds * scale, FLOOR_S),
                                     missed(layers))
                         for layer, seconds in zip(layers, t.layer_seconds, strict=True)]
        profiled = {m.kernel for m in in_place}
        probed = []
        for t in timed:
            layers = t.probe.layers(t.size, batch_size, size_of)
            if t.probe.kernel != "call" and read_by_fit(t.probe, t.size, profiled, channel_blocks):
                probed.append(Measurement(probe_kernel(t.probe, t.size, channel_blocks), layers,
                                          max(t.seconds - own_call_s(layers), FLOOR_S), missed(layers)))
        return in_place, probed

    in_place, probed = measurements(math.inf)
    if not in_place + probed:
        raise InputError("a calibration needs at least one probe of a layer, not only the call")
    profiled = {m.kernel for m in in_place}

    def fitted(cache_bytes: float, layer_cache_bytes: float = math.inf) -> Calibration:
        """The rooflines, and the in-network factors, with a cache keeping ``cache_bytes`` of the
        weights between calls and ``layer_cache_bytes`` of a layer's activations."""
        kernels = fit_kernels([*itertools.chain(*measurements(cache_bytes))], batch_size, size_of,
                              layer_cache_bytes=layer_cache_bytes, position_blocks=position_blocks)
        rooflines = replace(call_only, kernels=kernels.kernels, cache_bytes=cache_bytes,
                            layer_cache_bytes=layer_cache_bytes, fit={
            "rmspe": kernels.rmspe, "probes": kernels.probes, "profiled_in_networks": sorted(profiled)})
        if not networks:
            return rooflines
        in_network = fit_in_network([
            NetworkMeasurement(_kernel_seconds(rooflines, t.probe.arch_cfg(t.size), batch_size),  # type: ignore[union-attr]
                               max(t.seconds - network_call_s(t.probe.layers(t.size, batch_size, size_of)), FLOOR_S))
            for t in networks
        ], in_place=profiled)
        fit_info = {**rooflines.fit, "in_network": {
            "networks": len(networks), "rmspe_before": in_network.rmspe_before,
            "rmspe_after": in_network.rmspe_after, "extra_call_s": in_network.extra_call_s}}
        return replace(rooflines, in_network=in_network.factors, call_s=call_s + in_network.extra_call_s,
                       fit=fit_info)

    # The cache is judged on the whole networks, what the model predicts: of the sizes at which
    # some network misses enough of its weights to learn their cost from (``CACHE_MIN_MISSED``).
    most_weights = max((call_weight_bytes(t.probe.layers(t.size, batch_size, size_of), size_of)
                        for t in networks), default=0)
    tried = {size: fitted(size) for size in CACHE_SIZES if missed_fraction(most_weights, size) >= CACHE_MIN_MISSED}
    keeps_all = fitted(math.inf)
    chosen = choose_cache({size: c.network_error for size, c in tried.items()}, keeps_all.network_error)
    # Then, with the weights' cache chosen, what it holds of a layer's activations, judged alike.
    best = tried.get(chosen, keeps_all)
    network_layers = [layer for t in networks for layer in t.probe.layers(t.size, batch_size, size_of)]
    spilling = {size: fitted(chosen, size) for size in LAYER_CACHE_SIZES
                if any(spilled_bytes(x, size) >= CACHE_MIN_MISSED * (x.in_bytes + x.out_bytes)
                       for x in network_layers)}
    layer_cache = choose_cache({size: c.network_error for size, c in spilling.items()}, best.network_error)
    return spilling.get(layer_cache, best)


def in_order(networks: Sequence[NetworkProbe], plan: Sequence[Probe]) -> tuple[AnyProbe, ...]:
    """The order ``_measure`` builds in, the budget leaving out the last: the call probes first,
    since every fit needs what a call costs (``fit``: none timed, none fitted) and they take
    little of the budget; then the networks, whose profiles say which layer probes are left
    unbuilt; then the other probes. With the networks first, a batch-8 or slow machine's budget
    ran out among them, before the call probe, and the fit had nothing to take off."""
    calls = tuple(p for p in plan if p.kernel == "call")
    return (*calls, *networks, *(p for p in plan if p.kernel != "call"))


def splits_into_layers(layer_seconds: Sequence[float] | None, layers: Sequence[LayerCost]) -> bool:
    """Whether a network's profile times each of its ``layers`` (as ``cost`` counts them): one
    that does not, a runtime fusing what the op tables do not know, is left out, and those
    kernels are fitted to their probes."""
    return layer_seconds is not None and len(layer_seconds) == len(layers) and sum(layer_seconds) > 0


def probe_kernel(probe: Probe, size: int, channel_blocks: dict[str, int] | None) -> str:
    """The kernel a probe at ``size`` measures: its own kind (a probe's layers are counted alone,
    and ``cost`` cannot tell a stem from a full conv), ``_unblocked`` where its channels are not
    whole blocks of the runtime's ``channel_blocks``."""
    kernel = probe.kernel
    if kernel in CONV_KERNELS and not fills_blocks(probe.layers(size)[0], (channel_blocks or {}).get(kernel, 1)):
        kernel += UNBLOCKED
    return kernel


def read_by_fit(probe: Probe, size: int, profiled: Collection[str], channel_blocks: dict[str, int] | None) -> bool:
    """Whether ``fit`` reads ``probe``'s time at ``size``: a call probe's always; a layer probe's
    only where no network's profile times its kernel in place (``profiled``), since such a kernel
    is fitted to the networks' layers. ``_measure`` builds no probe the fit would not read."""
    return probe.kernel == "call" or probe_kernel(probe, size, channel_blocks) not in profiled


def _kernel_seconds(rooflines: Calibration, arch_cfg: ArchConfig, batch_size: int) -> dict[str, float]:
    """Seconds per kernel of the network ``arch_cfg`` by the rooflines alone, at ``batch_size``."""
    out: dict[str, float] = {}
    for layer in predict_with(rooflines, arch_cfg, batch_size).layers:
        out[layer.kernel] = out.get(layer.kernel, 0.0) + layer.predicted_ms / 1e3
    return out


@dataclass(frozen=True)
class Measured:
    """What ``_measure`` timed: each probe's ``timed``, how far apart the paces of the timing's
    seconds were (``drift``, ``timing.Rounds.drift``), and the median latency of each call timed
    ``beside`` the probes (seconds, in their order; read at the rounds' typical pace, as the
    probes are)."""

    timed: list[Timed]
    drift: float
    beside: list[float]
    left_out: int = 0  # probes of the plan the budget left out (not those left unbuilt as unread)


def _measure(
    backend: Backend, plan: Sequence[AnyProbe], batch_size: int, deadline: float, seconds: float, log: Log,
    found: dict[str, Any], *, every_probe: bool = False, beside: Sequence[Callable[[], object]] = (),
) -> Measured:
    """Every probe built (and each network's layers profiled, where the runtime can), then all of
    them timed together, interleaved in settled blocks, with the calls ``beside`` (their timing
    on top of the deadline's).

    Together, because the machine's speed drifts: on the shared Zen 4 of docs/latency.md the same
    network ran 0.72 ms for a few seconds and 1.3 ms the next, while a sgemm kept its speed
    (benchmarks/bench_machine_drift.py). Interleaved over the whole calibration, every probe sees
    the same mixture of fast and slow spells, so their ratios (what the fit learns) hold. Building
    stops when the time left would no longer time what is built. The backend's reference calls
    are timed in the same pass; what they teach it goes into ``found``.

    A network's profile is taken as it is built, not after the timing, so that the budget's clock
    counts it: profiled after, fifteen batch-8 networks took a calibration to 62-68 s of its 60
    (ONNX Runtime, AMX Xeon). When it runs does not matter to the fit, which scales a profile to
    the network's interleaved time.

    A probe of a kernel that the networks' profiles already time in place is not built (unless
    ``every_probe``): ``fit`` fits such a kernel to the networks' layers and would leave the probe
    unused. Where a runtime profiles its networks, that leaves the budget to the probes the fit
    reads: the call's, and the kernels no network holds (at batch 8 OpenVINO's networks had taken
    the budget before the full convs' probes were reached). The stem probes stay where the
    networks' input is converted: the conversion's bandwidth is fitted from their feeds. The
    rounds the unbuilt probes would have taken go to the rest, budget permitting, so that the
    networks' samples spread over as long a stretch as before: without them ONNX Runtime's rounds
    at batch 1 lasted a third as long, and a slow spell of a few seconds fell on every sample of
    a network (calibrations that missed their own networks by 12%, against 3-5%; Zen 4)."""
    cells: list[tuple[AnyProbe, int, Cell, tuple[float, ...] | None]] = []
    beside_s = sum(_timing_seconds(call, seconds) for call in beside)
    deadline += TIMING_ROOM * beside_s
    timing_s = beside_s  # what timing the cells built so far, and the calls beside, will take
    profiled_kernels: set[str] = set()  # the kernels that the networks' profiles time in place
    converts_input = False
    skipped = skipped_shapes = left_out = 0

    def unread(probe: AnyProbe) -> bool:  # (by what the networks built so far have profiled)
        return not every_probe and isinstance(probe, Probe) and not (probe.kernel == "stem" and converts_input) \
            and not any(read_by_fit(probe, size, profiled_kernels, backend.channel_blocks) for size in probe.sizes)

    for i, probe in enumerate(plan, 1):
        if unread(probe):
            skipped += 1
            skipped_shapes += len(probe.sizes)
            continue
        # (a probe's timing is at least a cell's worth per size, known exactly once it is built)
        # (conversions kept for later calibrations are paid once: the budget does not count them)
        end = deadline + backend.converting_s
        if time.monotonic() + TIMING_ROOM * (timing_s + TIMING_COST * seconds * len(probe.sizes)) > end:
            left = [p for p in plan[i - 1:] if not unread(p)]
            left_out = len(left)
            log(f"latency: time is up; {len(left)} probes left out ({', '.join(sorted({p.kernel for p in left}))}): "
                "their kernels borrow the most similar kernel's constants")
            break
        log(f"latency: [{i}/{len(plan)}] building {probe.describe()}")
        module = probe_module(probe, probe.sizes[0], fixed_pads=backend.fixed_pads)
        converted_before = backend.converting_s
        shaped = backend.load(module, probe.input_shape(probe.sizes[0], batch_size), largest_side=max(probe.sizes))
        if backend.converting_s > converted_before:
            log(f"latency: converted in {backend.converting_s - converted_before:.1f} s, once: kept for later "
                "calibrations, outside the budget")
        for size in probe.sizes:
            cell = shaped(probe.input_shape(size, batch_size))
            timing_s += _timing_seconds(cell.run, seconds)
            profiled = None
            if cell.profile is not None and isinstance(probe, NetworkProbe):
                profiled = tuple(cell.profile(seconds))
                layers = probe.layers(size, batch_size)
                if splits_into_layers(profiled, layers):
                    profiled_kernels.update(kernel_of(layer, backend.channel_blocks) for layer in layers)
            converts_input = converts_input or cell.feed is not None
            cells.append((probe, size, cell, profiled))
    if skipped:
        log(f"latency: {skipped} probes left unbuilt: the networks' profiles time their kernels in place")
    feeds = [i for i, (probe, _, cell, _) in enumerate(cells) if cell.feed is not None and probe.kernel == "stem"]
    # A reference decides a correction for every probe: it takes several places in the rounds.
    references = list(backend.reference_calls()) * REFERENCE_SLOTS
    runs = ([as_called(c) if isinstance(p, NetworkProbe) else c.run for p, _, c, _ in cells]
            + [cells[i][2].feed for i in feeds] + references + list(beside))
    room = (deadline + backend.converting_s - time.monotonic()) / TIMING_ROOM - timing_s
    handed_on = max(0.0, min(seconds * skipped_shapes, room))  # the unbuilt probes' rounds, to the rest
    also = f" and {len(beside)} calls beside them" if beside else ""
    log(f"latency: timing {len(cells)} probes{also} interleaved, about {timing_s + handed_on:.0f} s")
    rounds = time_rounds(runs, seconds=seconds + handed_on / len(runs), min_runs=MIN_RUNS,  # type: ignore[arg-type]
                         warmup=2, block_s=seconds / 4)
    # (each read at the rounds' typical pace: a probe timed in a few blocks meets the guest's
    # slow spells by chance, more often or less than its neighbours)
    medians = rounds.paced_medians()
    probed = len(runs) - len(beside)
    probe_seconds = medians[:probed]
    fed: dict[int, float] = dict(zip(feeds, probe_seconds[len(cells):]))
    if references:
        slots = probe_seconds[probed - len(references):]
        count = len(references) // REFERENCE_SLOTS
        found.update(backend.timed_references([float(np.median(slots[i::count])) for i in range(count)], log))
    timed = []
    for i, (probe, size, cell, profiled) in enumerate(cells):
        seconds_on_path = probe_seconds[i] if cell.to_path is None else cell.to_path(probe_seconds[i])
        # (never under half: a noisy correction must not leave a probe nothing)
        timed.append(Timed(probe, size, max(seconds_on_path, probe_seconds[i] / 2), fed.get(i), profiled))
    return Measured(timed, rounds.drift(), medians[probed:], left_out)


def as_called(cell: Cell) -> Callable[[], None]:
    """A network's call as a predictor makes it: its input converted and handed over, then run.

    The model predicts that call, and the two parts timed apart do not add up to it everywhere:
    LiteRT's int8 networks (uint8 input) ran up to a third faster right after the predictor's
    conversion than called back to back, by a cost that grows with the image (0.25-224: 0.65 ms
    run alone, 0.18 ms converting, 0.59 ms the two together; Zen 5, docs/latency.md §4,
    2026-12-05). Timed apart, the model put those networks up to a third over what a predictor takes."""
    if cell.feed is None:
        return cell.run
    feed, run = cell.feed, cell.run

    def call() -> None:
        feed()
        run()

    return call


def _timing_seconds(call: Callable[[], object], seconds: float) -> float:
    """About what timing ``call`` will take: ``seconds`` with its warm-up and settling, or, for a
    call slower than a block, ``MIN_RUNS`` blocks of one timed call and its settling calls (a
    batch-8 network at 130 ms a call takes 2.6 s, not 0.3). Its first call, timed here, also
    warms it up."""
    start = time.perf_counter()
    call()
    call_s = time.perf_counter() - start
    return max(TIMING_COST * seconds, MIN_RUNS * (1 + SETTLE_CALLS) * call_s + 3 * call_s)


def fit_handover(calls: Sequence[CallMeasurement]) -> tuple[float, float]:
    """A call's fixed seconds and the bytes per second it hands over at, from call probes at
    several sizes (ExecuTorch here: 135 µs per MB of input and output, against LiteRT's 58 through
    the same conv; docs/latency.md §4, 2026-12-04); from one size, its median and no cost per
    byte."""
    if len({c.io_bytes for c in calls}) < 2:
        return _smallest_call_s(calls), math.inf
    return fit_call(calls)


def _smallest_call_s(calls: Sequence[CallMeasurement]) -> float:
    if not calls:
        return 0.0
    least = min(c.io_bytes for c in calls)
    return float(np.median([c.seconds for c in calls if c.io_bytes == least]))

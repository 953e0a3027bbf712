"""From mult-adds to milliseconds: the time of every layer on this machine, and ``choose``.

A roofline per kind of kernel (stem, depthwise, pointwise, full conv, pool, classifier), built
from the one architecture description (``mobilenet.arch`` via ``mobilenet.cost``'s mult-adds and
bytes) and from constants calibrated here in each runtime by micro-benchmarks (``calibrate``;
within a minute, cached per CPU, runtime version, precision, threads and batch size)::

    from mobilenet.latency import predict, choose
    p = predict(ArchConfig(alpha=0.75, resolution=192), "onnxruntime")
    p.total_ms, p.shares(), p.layer("blocks.3.dw").bound     # 'memory' or 'compute'
    choose(3.0, "litert").chosen.name                        # the most accurate one within 3 ms

Importing this package (and ``mobilenet.latency.model``) does not import torch: predictions from
given constants (``predict_with``) can be studied anywhere; calibrating needs the runtime.
See docs/latency.md for the model and how well it predicts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mobilenet.arch import ArchConfig
from mobilenet.deploy.runtimes import RUNTIME_CHOICES
from mobilenet.latency.model import (
    KERNEL_LABELS,
    KERNELS,
    BlockSpeedup,
    Calibration,
    CorruptCalibration,
    LatencyPrediction,
    LayerLatency,
    Roofline,
    block_speedups,
    pareto_front,
    predict_with,
)

if TYPE_CHECKING:
    from mobilenet.latency.ranking import Choice

__all__ = [
    "KERNELS", "KERNEL_LABELS", "MEASURE_SECONDS", "RUNTIMES", "BlockSpeedup", "Calibration", "CorruptCalibration",
    "LatencyPrediction", "LayerLatency", "Roofline", "block_speedups", "cached_calibration", "calibrated", "choose",
    "compare", "pareto_front", "predict", "predict_with",
]

Log = Callable[[str], None]
# The runtimes it predicts: every one a command line may name (auto decides by measuring instead).
RUNTIMES: tuple[str, ...] = tuple(r for r in RUNTIME_CHOICES if r != "auto")
# choose's timing of each architecture, interleaved in settled blocks. Three runs of
# benchmarks/bench_choose.py comparing 0.3 s with 1 s found them alike (21 and 23 budgets of 30), and a
# call at 1 s took 2.7x as long once the networks are kept (docs/latency.md §4): --measure-seconds is there.
MEASURE_SECONDS = 0.3


def calibrated(
    runtime: str, precision: str = "fp32", batch_size: int = 1, threads: int | None = None, *,
    remeasure: bool = False, log: Log | None = None,
) -> Calibration:
    """This machine's constants for ``runtime`` at ``precision``, ``batch_size`` and ``threads``
    (None: the runtime's default): from the cache, or measured now (at most a minute, progress
    on stderr) and cached. ``remeasure``: calibrate again."""
    from mobilenet.latency.cache import calibrated as cached  # noqa: PLC0415 - needs the runtime

    return cached(runtime, precision, batch_size=batch_size, threads=threads, remeasure=remeasure, log=log)


def cached_calibration(
    runtime: str, precision: str = "fp32", batch_size: int = 1, threads: int | None = None, *,
    log: Log | None = None,
) -> Calibration | None:
    """This machine's cached constants for the request, or None where it has none yet: never
    measures (for callers that must answer at once, and offer to calibrate instead)."""
    from mobilenet.latency.cache import cached_calibration as lookup  # noqa: PLC0415 - needs the runtime

    return lookup(runtime, precision, batch_size=batch_size, threads=threads, log=log)


def predict(
    arch_cfg: ArchConfig | None, runtime: str, precision: str = "fp32", batch_size: int = 1,
    threads: int | None = None, *, remeasure: bool = False, log: Log | None = None,
) -> LatencyPrediction:
    """Predicted milliseconds of every layer of ``arch_cfg`` (None: 1.0-224) and of the whole
    call, in ``runtime`` at ``precision``, on this machine; each layer says whether it is
    compute-bound or memory-bound. Calibrates first if this machine has no constants yet."""
    return predict_with(calibrated(runtime, precision, batch_size, threads, remeasure=remeasure, log=log),
                        arch_cfg, batch_size)


def compare(
    arch_cfg: ArchConfig | None, runtime: str, precision: str = "fp32", batch_size: int = 1,
    threads: int | None = None, *, remeasure: bool = False, log: Log | None = None,
) -> list[BlockSpeedup]:
    """Each separable block's predicted speed-up over the full 3x3 conv it replaces, beside
    its mult-add savings, with the reason the two differ (``BlockSpeedup.reason``)."""
    calibration = calibrated(runtime, precision, batch_size, threads, remeasure=remeasure, log=log)
    return block_speedups(calibration, arch_cfg, batch_size)


def choose(
    budget_ms: float, runtime: str, precision: str = "fp32", batch_size: int = 1, threads: int | None = None, *,
    measure_best: int = 3, measure_seconds: float = MEASURE_SECONDS, registry: Any = None,
    calibration: Calibration | None = None, remeasure: bool = False, log: Log | None = None,
) -> Choice:
    """The most accurate published ImageNet MobileNet that runs within ``budget_ms`` per call in
    ``runtime`` at ``precision`` on this machine: ranked by published top-1 among those
    predicted to fit, then the best ``measure_best`` timed for real (0: trust the predictions),
    each for ``measure_seconds`` interleaved with the others (default ``MEASURE_SECONDS``;
    longer settles a model near the budget on a machine whose speed moves, docs/latency.md §4).
    ``registry``: the models to choose from (default ``mobilenet.weights.REGISTRY``);
    ``calibration``: constants to use instead of this machine's; ``remeasure``: calibrate again.

    A runtime whose sessions would slow each other in this process (ONNX Runtime above one
    thread, ``Backend.pools_of_their_own``) is timed in a process of its own, every candidate on
    one pool, as its calibration is (``mobilenet.latency.own_process``); ``registry`` and
    ``calibration`` must then pickle."""
    from mobilenet.latency import own_process  # noqa: PLC0415 - the parts below need torch
    from mobilenet.latency.calibrate import check_batch_size, check_runtime, log_to_stderr  # noqa: PLC0415
    from mobilenet.latency.ranking import (  # noqa: PLC0415
        Choice,
        candidates,
        check_budget,
        check_given_calibration,
        check_measure_best,
        check_measure_seconds,
        choose_from,
        margin_for,
        measure_architectures,
    )
    from mobilenet.threads import check_threads  # noqa: PLC0415

    budget_ms = check_budget(budget_ms)
    seconds = check_measure_seconds(measure_seconds)
    measure_best = check_measure_best(measure_best)
    # (before a process of its own is started for them)
    check_runtime(runtime)
    check_batch_size(batch_size)
    check_threads(threads)
    # (Not check_request: given constants, as from another machine, are judged where they are used,
    # not by this CPU; but they must be of the request, or the ranking and the timing disagree.)
    if calibration is not None:
        check_given_calibration(calibration, runtime, precision, batch_size)
    if measure_best and own_process.needed(runtime, threads):
        (log or log_to_stderr)(f"latency: choosing in a process of its own, {runtime}'s candidates on one thread pool")
        chosen, _ = own_process.call_apart("choose", {
            "budget_ms": budget_ms, "runtime": runtime, "precision": precision, "batch_size": batch_size,
            "threads": threads, "measure_best": measure_best, "measure_seconds": seconds, "registry": registry,
            "calibration": calibration, "remeasure": remeasure,
        }, runtime=runtime, threads=threads, doing=f"choosing in {runtime}", log=log or log_to_stderr)
        return chosen
    if calibration is None:
        calibration = calibrated(runtime, precision, batch_size, threads, remeasure=remeasure, log=log)
    if registry is None:
        from mobilenet.weights import REGISTRY as registry  # noqa: PLC0415, N811
    found = candidates(registry, calibration, batch_size)
    timer = measure_architectures(runtime, precision, batch_size, threads, seconds) if measure_best else None
    margin = margin_for(calibration)
    chosen, judged = choose_from(found, budget_ms, timer=timer, measure_best=measure_best, margin=margin, log=log)
    return Choice(budget_ms, calibration, batch_size, chosen, tuple(judged), margin)

"""``choose``: the most accurate published MobileNet that runs within a latency budget here.

Every ImageNet model of the registry (``mobilenet.weights.REGISTRY``: TF's float and quantized
ones, Keras, timm, transformers) gets a predicted latency from the calibrated model, and those
predicted to fit are ranked by the top-1 their publisher measured. A prediction is not a
measurement, so the best few (and those predicted a little over the budget, as far over as the
calibration's own error on whole networks says a prediction may be off: ``margin_for``) are
then built and timed for real, briefly and interleaved, and the chosen model is the most
accurate one whose *measured* time fits.

Which top-1 counts: at int8, the quantization-aware-trained TF models' own int8 figures (no
publisher measured the others at int8); at the float precisions, the float models' figures.
Models of the same architecture cost the same: each architecture is built and timed once.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.cpu import cpu_info
from mobilenet.errors import InputError, option
from mobilenet.latency import MEASURE_SECONDS
from mobilenet.latency.calibrate import log_to_stderr
from mobilenet.latency.model import Calibration, predict_with

MARGIN = 0.1  # candidates predicted up to 10% over the budget are measured too, at least
MAX_MARGIN = 0.5  # at most, however badly the calibration fitted (a worse fit wants calibrating again)
MEASURE_BEST = 3  # architectures timed for real per round
MAX_ROUNDS = 3  # rounds timing the best first; where none fits then, the rest predicted to fit are timed
# A brief measurement this close to the budget (either side) is too close to call: timed
# RETIMES more times and the median of the medians kept. On a Zen 5, 0.5-160 measured 0.82 ms
# in 0.3 s against a 0.84 ms budget and 0.91-1.07 ms in two 1 s passes (docs/latency.md §4).
BORDERLINE = 0.05
RETIMES = 2

Timer = Callable[[Sequence[ArchConfig]], list[float]]  # architectures -> measured median ms each


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    arch_cfg: ArchConfig
    top1: float
    predicted_ms: float
    measured_ms: float | None = None

    @property
    def shape(self) -> ArchConfig:
        """What its latency depends on: models alike in this run alike."""
        return self.arch_cfg.workload()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "model": self.arch_cfg.name, "top1": self.top1,
                "predicted_ms": self.predicted_ms, "measured_ms": self.measured_ms}


@dataclass(frozen=True)
class Choice:
    """The chosen model, every candidate (most accurate first), and what they were judged on."""

    budget_ms: float
    calibration: Calibration
    batch_size: int
    chosen: Candidate
    candidates: tuple[Candidate, ...] = field(default=())
    margin: float = MARGIN

    @property
    def borderline(self) -> bool:
        """Whether the chosen model measured within ``BORDERLINE`` of the budget: a time this close
        moves across it with the machine's own speed. Every budget that ``bench_choose.py`` saw
        ``choose`` lose on the Zen 5 was on a model within 6% of it (11 of 80, docs/latency.md §4)."""
        measured = self.chosen.measured_ms
        return measured is not None and measured > self.budget_ms * (1 - BORDERLINE)

    @property
    def with_headroom(self) -> Candidate | None:
        """Where the pick is ``borderline``: the most accurate model timed here that measured at
        least ``BORDERLINE`` under the budget (None where none was, or the pick is not borderline)."""
        if not self.borderline:
            return None
        return most_accurate_fitting(self.candidates, lambda c: c.measured_ms, self.budget_ms * (1 - BORDERLINE))

    @property
    def measured_over_predicted(self) -> float | None:
        """The median, over the architectures timed here, of measured over predicted time (None
        where none was timed): 1 where the machine runs as fast as when it was calibrated. Per
        architecture, as ``choose_from`` rescales: TF's checkpoint and Keras' port share one timing."""
        ratios = {c.shape: c.measured_ms / c.predicted_ms for c in self.candidates if c.measured_ms is not None}
        return statistics.median(ratios.values()) if ratios else None

    @property
    def timed_in_parallel(self) -> bool:
        """Whether the calls ran on more than one thread (``threads`` None: the runtime's default,
        every logical core here). Their times then also move with how far apart the host runs the
        cores, which a small virtual machine changes in spells of seconds: 0.25-128 took 0.28 or
        0.56 ms at 2 threads on a Zen 4 guest, and 0.40 ms at 1 in both (docs/latency.md §5)."""
        return (self.calibration.threads or cpu_info().logical_cores) > 1

    @property
    def off_calibration(self) -> bool:
        """Whether the models timed ran further from their predictions than ``margin`` allows (twice
        the calibration's own error): the machine runs at another speed than when it was calibrated.
        A calibration cached in a slow spell predicted the models ``choose`` picked a median 29%
        over their times on a Zen 4 (docs/latency.md §4); ``choose`` still picks right, timing the
        candidates, but the calibration's predictions are that far off until it is measured again."""
        ratio = self.measured_over_predicted
        return ratio is not None and abs(math.log(ratio)) > math.log1p(self.margin)

    def to_dict(self) -> dict[str, Any]:
        c = self.calibration
        safer = self.with_headroom
        return {"budget_ms": self.budget_ms, "runtime": c.runtime, "precision": c.precision,
                "batch_size": self.batch_size, "threads": c.threads, "margin": self.margin,
                "chosen": self.chosen.to_dict(), "borderline": self.borderline,
                "with_headroom": None if safer is None else safer.to_dict(),
                "measured_over_predicted": self.measured_over_predicted, "off_calibration": self.off_calibration,
                "calibrated_at": c.calibrated_at,
                "candidates": [x.to_dict() for x in self.candidates]}


def check_budget(budget_ms: object) -> float:
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not math.isfinite(budget_ms) \
            or budget_ms <= 0:
        raise InputError(f"the latency budget must be a number of milliseconds > 0, got {budget_ms!r}")
    return float(budget_ms)


def check_measure_seconds(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or not 0 < seconds <= 60:
        raise InputError(f"the seconds to time each architecture must be a number in (0, 60], got {seconds!r}")
    return float(seconds)


def check_measure_best(measure_best: object) -> int:
    if isinstance(measure_best, bool) or not isinstance(measure_best, int) or measure_best < 0:
        raise InputError(f"{option('measure_best')} must be an int >= 0 (architectures timed per round; 0: trust "
                         f"the predictions), got {measure_best!r}")
    return measure_best


def check_given_calibration(calibration: Calibration, runtime: str, precision: str, batch_size: int) -> None:
    """Refuse constants given for another request than the one asked: ranked by them and timed as
    asked, the candidates would be judged on one runtime's, precision's or batch's predictions and
    another's times."""
    per_call = 1 if calibration.fixed_batch else batch_size
    given = (calibration.runtime, calibration.precision, calibration.batch_size)
    if given != (runtime, precision, per_call):
        raise InputError(
            f"the calibration given is {calibration.runtime} {calibration.precision} at batch "
            f"{calibration.batch_size}, not the {runtime} {precision} at batch {per_call} asked for: give constants "
            "calibrated for the request "
            f"(mobilenet.latency.calibrated({runtime!r}, {precision!r}, {batch_size})), or ask for the request "
            "they were calibrated for")


def margin_for(calibration: Calibration) -> float:
    """How far over the budget a prediction may be and its model still be timed: twice the
    calibration's relative error on its whole networks (about 95% of its misses, were they
    normal), at least ``MARGIN`` and at most ``MAX_MARGIN``. A fixed 10% left out models the
    fit itself said could be 16% off (``docs/latency.md`` §4)."""
    error = calibration.network_error
    if error is None:
        return MARGIN
    return min(max(MARGIN, 2 * error), MAX_MARGIN)


def candidates(registry: Mapping[str, Any], calibration: Calibration, batch_size: int) -> list[Candidate]:
    """Every registry entry with a published top-1 for this precision, predicted, most accurate
    first (ties: the faster, then TF's own weights before their copies)."""
    int8 = calibration.precision == "int8"
    found = []
    predicted: dict[ArchConfig, float] = {}
    for name, entry in registry.items():
        top1 = entry.published.get("top1")
        if top1 is None or (entry.family == "tf-quant") != int8:
            continue
        arch_cfg = entry.arch_cfg
        if arch_cfg not in predicted:
            predicted[arch_cfg] = predict_with(calibration, arch_cfg, batch_size).total_ms
        found.append(Candidate(name, entry.family, arch_cfg, float(top1), predicted[arch_cfg]))
    return sorted(found, key=_rank)


def choose_from(
    found: Sequence[Candidate], budget_ms: float, *, timer: Timer | None, measure_best: int = MEASURE_BEST,
    margin: float = MARGIN, log: Callable[[str], None] | None = None,
) -> tuple[Candidate, list[Candidate]]:
    """(chosen, every candidate with what was measured) from ``found`` ranked by ``_rank``;
    candidates predicted up to ``margin`` (a fraction) over the budget are timed too, best first,
    ``measure_best`` architectures a round for up to ``MAX_ROUNDS`` rounds. Where none of them fits,
    the other architectures predicted to fit (and the fastest) are timed until one does, before
    refusing: at most once each. ``timer`` None or ``measure_best`` 0: choose on the predictions alone."""
    budget_ms = check_budget(budget_ms)
    if not found:
        raise InputError("no published model to choose from")
    fastest = min(found, key=lambda c: c.predicted_ms)
    within = [c for c in found if c.predicted_ms <= budget_ms * (1 + margin)]
    if timer is None or measure_best < 1:
        fits = next((c for c in within if c.predicted_ms <= budget_ms), None)
        if fits is None:
            raise InputError(
                f"nothing fits {budget_ms:g} ms: the fastest published model, {fastest.name}, is predicted to take "
                f"{fastest.predicted_ms:.3g} ms here; raise {option('budget_ms')} or try another runtime or precision"
            )
        return fits, list(found)
    # Nothing predicted near the budget: the fastest is timed before refusing (the machine may be
    # running faster than when it was calibrated, below).
    within = within or [fastest]
    say = log or log_to_stderr
    measured: dict[ArchConfig, float] = {}
    predicted = {c.shape: c.predicted_ms for c in found}

    def time_now(first: list[Candidate]) -> None:
        shapes = [c.shape for c in first]
        say(f"latency: timing {', '.join(c.name for c in first)} for real")
        measured.update(zip(shapes, timer([c.arch_cfg for c in first])))
        close = [c for c in first if abs(measured[c.shape] / budget_ms - 1) <= BORDERLINE]
        if close:
            say(f"latency: {', '.join(c.name for c in close)} within {BORDERLINE:.0%} of the budget: timing again")
            again = [timer([c.arch_cfg for c in close]) for _ in range(RETIMES)]
            for i, c in enumerate(close):
                measured[c.shape] = statistics.median([measured[c.shape], *(times[i] for times in again)])

    def pace() -> float:  # measured over predicted, the median over the architectures timed
        return statistics.median(measured[s] / predicted[s] for s in measured)

    for _ in range(MAX_ROUNDS):
        shapes = list(dict.fromkeys(c.shape for c in within if c.shape not in measured))[:measure_best]
        if not shapes:
            break
        time_now([next(c for c in within if c.shape == s) for s in shapes])
        # The machine's speed moves by tens of percent within minutes (docs/latency.md §4) and takes
        # the calibration's scale with it, not its shape: where what has been timed runs faster than
        # predicted, the predictions shrink alike, and models the calibration put out of reach are
        # timed too. Never the other way: a model only looks slow, it is not dropped untimed.
        speed = min(1.0, pace())
        widened = [c for c in found if c.predicted_ms * speed <= budget_ms * (1 + margin)]
        if len(widened) > len(within):
            say(f"latency: the models timed ran {1 / speed:.2f}x faster than predicted: "
                f"the models that may fit after all are timed too")
            within = widened
        fitting = [c for c in within if c.shape in measured and measured[c.shape] <= budget_ms]
        best_unmeasured = next((c for c in within if c.shape not in measured), None)
        # (one as accurate as the best that fits is timed too: it may be the faster copy)
        if fitting and (best_unmeasured is None or fitting[0].top1 > best_unmeasured.top1):
            break
    # Where the machine runs slower than calibrated, the rounds spend themselves on the models
    # predicted just under the budget, which all measure over it, while models predicted well under
    # it wait untimed. Before refusing, the rest predicted to fit (and the fastest) are timed: first
    # those that fit at the pace measured so far, most accurate first, then the rest fastest first,
    # until one fits. At most one timing per architecture left, said before it starts.
    if not any(t <= budget_ms for t in measured.values()):
        rest = list(dict.fromkeys(c.shape for c in [*within, fastest]
                                  if c.shape not in measured and (c.predicted_ms <= budget_ms or c is fastest)))
        if rest:
            ratio = pace()
            said = f"ran {ratio:.2f}x slower than predicted" if ratio > 1 else "measured over it"
            say(f"latency: nothing timed fits the budget (the models timed {said}): timing the {len(rest)} "
                f"more predicted to fit, those that fit at that pace first, until one fits")
            first_of = {s: next(c for c in found if c.shape == s) for s in rest}
            rank = {s: i for i, s in enumerate(rest)}
            rest.sort(key=lambda s: (0, rank[s]) if predicted[s] * ratio <= budget_ms else (1, predicted[s]))
            while rest and not any(t <= budget_ms for t in measured.values()):
                time_now([first_of[s] for s in rest[:measure_best]])
                rest = rest[measure_best:]
    timed = [replace(c, measured_ms=measured.get(c.shape)) for c in found]
    chosen = most_accurate_fitting(timed, lambda c: c.measured_ms, budget_ms)
    if chosen is None:
        # (true as said: refusing, every architecture predicted to fit has been timed, and the fastest)
        quickest = min((c for c in timed if c.measured_ms is not None), key=lambda c: c.measured_ms or 0)
        fit_by_prediction = len({c.shape for c in found if c.predicted_ms <= budget_ms})
        what = (f"the {fit_by_prediction} architectures predicted to fit and the fastest predicted"
                if fit_by_prediction else "the fastest predicted")
        raise InputError(
            f"nothing fits {budget_ms:g} ms: measured here ({what}; {len(measured)} timed in all), the quickest, "
            f"{quickest.name}, takes {quickest.measured_ms:.3g} ms (predicted {quickest.predicted_ms:.3g}); "
            f"raise {option('budget_ms')}"
        )
    return chosen, timed


def most_accurate_fitting(
    ranked: Sequence[Candidate], measured_ms: Callable[[Candidate], float | None], budget_ms: float,
) -> Candidate | None:
    """The most accurate of ``ranked`` (most accurate first) whose measured time fits the budget;
    among equally accurate ones the fastest measured (copies of one checkpoint, such as Keras' port
    of TF's, differ only in how fast they run here). None: nothing measured fits. The rule that
    ``choose`` picks by and that ``benchmarks/bench_choose.py`` judges it against."""
    fitting = [c for c in ranked if (t := measured_ms(c)) is not None and t <= budget_ms]
    if not fitting:
        return None
    return min((c for c in fitting if c.top1 == fitting[0].top1), key=lambda c: measured_ms(c) or 0.0)


def _rank(c: Candidate) -> tuple[float, float, int, str]:
    from mobilenet.weights import FAMILIES  # noqa: PLC0415

    family = FAMILIES.index(c.family) if c.family in FAMILIES else len(FAMILIES)
    return (-c.top1, c.predicted_ms, family, c.name)


def measure_architectures(
    runtime: str, precision: str, batch_size: int, threads: int | None, seconds: float = MEASURE_SECONDS,
) -> Timer:
    """A timer that builds each architecture in ``runtime`` (random weights: the time does not
    depend on them; the files kept across calls, ``backends.kept_predictor``) and times them
    interleaved in settled blocks. It keeps what it built: an architecture timed again (near the
    budget, in a later round) is not loaded again."""
    built: dict[ArchConfig, Callable[[], object]] = {}

    def timer(configs: Sequence[ArchConfig]) -> list[float]:
        import torch  # noqa: PLC0415

        from mobilenet.deploy.timing import Timing, time_interleaved  # noqa: PLC0415
        from mobilenet.latency.backends import BACKENDS, kept_predictor  # noqa: PLC0415
        from mobilenet.preprocess import sample_photos  # noqa: PLC0415
        from mobilenet.threads import torch_threads_kept  # noqa: PLC0415

        workloads = [cfg.workload() for cfg in configs]
        images = sample_photos() if precision == "int8" and any(w not in built for w in workloads) else None
        with torch_threads_kept():  # PyTorch's predictors set the process's thread count
            for w in workloads:
                if w not in built:
                    predictor = kept_predictor(w, runtime, precision, threads=threads, calibration_images=images,
                                               distributions=BACKENDS[runtime].distributions, batch_size=batch_size)
                    x = torch.rand(batch_size, w.in_channels, *w.resolution)
                    built[w] = lambda p=predictor, x=x: p(x)
            samples = time_interleaved([built[w] for w in workloads], seconds=seconds, min_runs=5)
        return [Timing.from_seconds(s).median_ms for s in samples]

    return timer

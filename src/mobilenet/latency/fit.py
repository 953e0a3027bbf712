"""Fitting a machine's constants to measured probes (numpy and scipy, no torch).

Each kind of kernel gets its roofline ``overhead + max(mult-adds / rate, bytes / bandwidth)`` by
least squares on *relative* errors (a 10 µs layer counts as much as a 10 ms one: the model is
judged by its percentage errors). The ``max`` makes the problem piecewise linear: a roofline
splits the probes by arithmetic intensity at its ridge point, and for a given split the problem
is linear in (overhead, 1/rate, 1/bandwidth) with non-negative unknowns. So every split between
two neighbouring intensities is tried, each solved exactly, and the one whose true (``max``)
error is least is kept: no starting point to guess, nothing to converge.

Two choices are learned per kernel, each a fact about the kernel rather than a free-form
correction, so that each carries to any α: the lane width its channels are padded to (among
``LANES``: the SIMD width the runtime's kernel works in), whether it pays a fixed cost per
output position (``Roofline.pixel_s``: one more unknown, solved with the others) and, for a
grouped conv, whether the channels beyond its last whole lane are padded or run one at a time
(``Roofline.tail``, at a cost per position each), and, where some of its measurements' weights
or activations lie beyond the cache, whether it pays a cost per byte of them (``Roofline.far_s``,
``Roofline.spill_s``). Each choice
beyond the simplest (one lane, no cost per position) must cut the error on the kernel's probes by
a tenth (``LANES_MARGIN``), so that a term the probes cannot tell apart from the others is left
out rather than fitted to noise. The lane widths are rival guesses of one fact, not steps of
complexity: among the fits that make the same number of choices, the best one stands, whatever
the order they were tried in (``simplest_good_fit``).

A rate or bandwidth that no probe of a kernel found binding stays infinite: the kernel is then
always bound by the other roof, which is what its probes showed over the whole range they cover.

**In-network factors** (``fit_in_network``) then scale the rooflines to whole networks: measured
network time = extra call cost + Σ factor(group) · roofline time of the group's layers, again by
least squares on relative errors with non-negative unknowns. Three groups, because a dozen
networks can tell apart only what scales differently with the width: the depthwise layers (time
∝ α), the dense ones (pointwise and full convs, ∝ α²) and the rest (stem, pool, classifier). The
factors are ratios of times with a meaning (a layer inside a network against the same layer among
its twins), so they carry to α and resolutions between and beyond the networks measured. They are
kept only where they cut the networks' error by a tenth against factors of 1 (``FACTORS_MARGIN``):
where the networks cannot tell the groups apart, least squares would pick them at random. A group
whose rooflines were fitted to its layers timed inside these very networks (a runtime with a
profiler) keeps the factor 1: its layers already are the networks' own, so a factor there could
only trade one group's residuals against another's (ONNX Runtime: factors 1.14, 1.06 and 0.38
cut the fifteen networks' error from 5.3% to 3.2% and put the stem and the classifier at 40% of
their profiled time).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from mobilenet.cost import LayerCost
from mobilenet.latency.model import CONV_KERNELS, KERNELS, UNBLOCKED, Roofline, Work, layer_work, spilled_bytes

LANES: tuple[int, ...] = (1, 4, 8, 16)
# A wider lane must cut the error by a tenth, and by a tenth of a percentage point, to be chosen.
LANES_MARGIN, LANES_MIN_GAIN = 0.9, 0.001
# The last-level cache's room for weights between calls, tried (bytes), and the tenth it must cut
# off the networks' error (``choose_cache``). A size is tried only where some calibration network
# misses at least a quarter of its weights: a cost per byte learned from a few misses is
# extrapolated to a wider network's many (PyTorch fp32 on a Zen 5: a 16 MiB cache, which the
# widest calibration network, 16.1 MiB, overflows by 0.7%, fitted 2.4 ns a byte missed and
# predicted α 1.1 at 112 px 52% slow).
CACHE_SIZES: tuple[int, ...] = tuple(2**k << 20 for k in range(6))  # 1 to 32 MiB
CACHE_MARGIN = 0.9
CACHE_MIN_MISSED = 0.25
# What the cache holds of one layer's activations, tried (bytes), chosen as the weights' cache is
# (``choose_cache``), at the sizes where some calibration network's layer spills at least a
# quarter of its activations. From 4 MiB: past a core's L2 (1-2 MiB), where a share of the L3
# is what holds them; and a batch-1 fp32 calibration, whose largest layer (1.0-224's first
# pointwise conv) moves 4.8 MB, never tries one.
LAYER_CACHE_SIZES: tuple[int, ...] = tuple(2**k << 20 for k in range(2, 6))  # 4 to 32 MiB
# In-network factors must cut the networks' error by a tenth against factors of 1 to be kept.
FACTORS_MARGIN = 0.9
# A kernel no probe measured (the calibration ran out of time) borrows from the most similar one.
TIE = 1e-12  # errors closer than this are equal
FLOOR_FRACTION = 1e-3  # a fit's target never below this share of the measured time

# After these, any kernel measured: a guess, but the calibration says which kernels it measured.
_STAND_INS: dict[str, tuple[str, ...]] = {
    "conv": ("pointwise", "stem"), "stem": ("conv", "pointwise"), "pointwise": ("conv", "fc"),
    "depthwise": ("depthwise_s2", "pool"), "depthwise_s2": ("depthwise", "pool"),
    "pool": ("depthwise", "depthwise_s2"), "fc": ("pointwise", "conv"),
}
# An unblocked variant first borrows from its unblocked neighbours, then from its own kind.
STAND_INS: dict[str, tuple[str, ...]] = _STAND_INS | {
    k + UNBLOCKED: (*(s + UNBLOCKED for s in _STAND_INS[k] if s in CONV_KERNELS), k, *_STAND_INS[k])
    for k in CONV_KERNELS
}


@dataclass(frozen=True)
class Measurement:
    """One probe: ``layers`` (a chain of identical layers of one kernel, as ``cost`` counts them at
    the calibration's batch and element size) took ``seconds`` per call, the call's own cost
    already removed."""

    kernel: str
    layers: tuple[LayerCost, ...]
    seconds: float
    weights_missed: float = 0.0  # of the layers' weights, the share its call fetched from beyond the cache


@dataclass(frozen=True)
class CallMeasurement:
    """Handing ``io_bytes`` to a runtime (or a call doing next to nothing else) took ``seconds``."""

    io_bytes: float
    seconds: float


@dataclass(frozen=True)
class NetworkMeasurement:
    """A whole network took ``seconds`` per call (the call's own cost removed), where its kernels'
    rooflines add up to ``kernel_seconds`` (per kernel)."""

    kernel_seconds: Mapping[str, float]
    seconds: float


# Kernels that share one in-network factor (see the module's docstring).
IN_NETWORK_GROUPS: dict[str, tuple[str, ...]] = {
    "depthwise": ("depthwise", "depthwise_s2", "depthwise_unblocked", "depthwise_s2_unblocked"),
    "dense": ("pointwise", "conv", "pointwise_unblocked", "conv_unblocked"),
    "edges": ("stem", "pool", "fc", "stem_unblocked"),
}


@dataclass(frozen=True)
class InNetworkFit:
    factors: dict[str, float]  # per kernel
    extra_call_s: float  # a network's call beyond the call probe's (allocating its activations, ...)
    rmspe_before: float  # on the networks, of the rooflines alone
    rmspe_after: float


def fit_in_network(measurements: Sequence[NetworkMeasurement], in_place: Collection[str] = ()) -> InNetworkFit:
    """The in-network factor of every kernel and a network call's extra fixed cost, fitted to
    whole networks. A group the fit would zero (no network told it apart) keeps the factor 1:
    a layer is never predicted free. The factors are kept only if they cut the error on the
    networks by a tenth (``FACTORS_MARGIN``) against all factors 1 with the extra cost alone:
    where the networks' totals cannot tell the groups apart, least squares picks factors at
    random along the direction they share, and the per-layer times and shares go wrong while
    the totals stay as they were (PyTorch here, its rooflines fitted to layers profiled in
    place: factors 0.12, 1.14 and 2.37 for an error of 11.9% against 11.9%, and the depthwise
    layers predicted at 4% of the time where they took 20-39%). ``in_place``: kernels whose
    rooflines were fitted to these networks' own layers; a group whose every kernel the networks
    run is among them keeps the factor 1 (see the module's docstring)."""
    groups = list(IN_NETWORK_GROUPS)
    run = {k for m in measurements for k, seconds in m.kernel_seconds.items() if seconds > 0}
    settled = {g: 1.0 for g in groups if run & set(IN_NETWORK_GROUPS[g]) <= set(in_place)}
    t = np.array([m.seconds for m in measurements], dtype=float)
    per_group = np.array([[sum(m.kernel_seconds.get(k, 0.0) for k in IN_NETWORK_GROUPS[g]) for g in groups]
                          for m in measurements], dtype=float)
    before = _rmspe(per_group.sum(axis=1), t)

    def solve(fixed: dict[str, float]) -> tuple[dict[str, float], float, float]:
        while True:
            free = [i for i, g in enumerate(groups) if g not in fixed]
            target = t - per_group[:, [groups.index(g) for g in fixed]].sum(axis=1)
            design = np.concatenate([per_group[:, free], np.ones((len(t), 1))], axis=1)
            theta = _nonnegative_least_squares(design, np.maximum(target, FLOOR_FRACTION * t), relative_to=t)
            zeroed = [groups[i] for i, value in zip(free, theta) if value <= 0]
            if not zeroed:
                break
            fixed = fixed | dict.fromkeys(zeroed, 1.0)
        by_group = fixed | {groups[i]: float(v) for i, v in zip(free, theta)}
        extra = float(theta[-1])
        return by_group, extra, _rmspe(per_group @ np.array([by_group[g] for g in groups]) + extra, t)

    fitted, ones = solve(settled), solve(dict.fromkeys(groups, 1.0))
    if ones[2] > before:  # (the floor on the targets can bend the extra cost's fit: then none at all)
        ones = (dict.fromkeys(groups, 1.0), 0.0, before)
    by_group, extra, after = fitted if fitted[2] < ones[2] * FACTORS_MARGIN else ones
    factors = {k: by_group[g] for g in groups for k in IN_NETWORK_GROUPS[g]}
    return InNetworkFit(factors, extra, before, after)


@dataclass(frozen=True)
class FittedKernels:
    kernels: dict[str, Roofline]
    rmspe: dict[str, float]  # per kernel measured, on its own probes
    probes: dict[str, int]


def fit_call(measurements: Sequence[CallMeasurement]) -> tuple[float, float]:
    """(fixed seconds, bytes per second) of handing inputs over: infinitely fast where nothing
    was measured (the runtime takes the input as given)."""
    if not measurements:
        return 0.0, math.inf
    x = np.array([[1.0, m.io_bytes] for m in measurements])
    t = np.array([m.seconds for m in measurements])
    fixed, per_byte = _nonnegative_least_squares(x, t)
    return float(fixed), (1 / per_byte if per_byte > 0 else math.inf)


def fit_kernels(measurements: Sequence[Measurement], batch_size: int, element_bytes: int,
                lanes: Mapping[str, int] | None = None, layer_cache_bytes: float = math.inf,
                position_blocks: Mapping[str, int] | None = None) -> FittedKernels:
    """Every kernel's roofline, lane width and cost per output position: for each kernel
    measured, the pair that fits its probes best (a wider lane, or the cost per position, only
    if clearly better); a kernel not measured takes the constants of the one most like it
    (``STAND_INS``). ``lanes``: a lane width decided beforehand, per kernel named, in place of
    the choice; ``layer_cache_bytes``: what the cache holds of a layer's activations (the rest
    spill, at a cost per byte where that earns its place); ``position_blocks``: per kernel named,
    the block its output positions are computed in (the runtime's, ``Roofline.position_block``)."""
    kernels: dict[str, Roofline] = {}
    rmspe: dict[str, float] = {}
    probes: dict[str, int] = {}
    for kernel in KERNELS:
        mine = [m for m in measurements if m.kernel == kernel]
        if not mine:
            continue
        fits = {}
        widths = (lanes[kernel],) if lanes and kernel in lanes else LANES
        position_block = (position_blocks or {}).get(kernel, 1)
        far_choices = (False, True) if any(m.weights_missed > 0 for m in mine) else (False,)
        tail_choices = (False, True) if any(m.layers[0].groups > 1 for m in mine) else (False,)
        spill_choices = (False, True) if any(spilled_bytes(m.layers[0], layer_cache_bytes) for m in mine) else (False,)
        for per_pixel, per_far_byte, width, tail, per_spilled_byte in itertools.product(
                (False, True), far_choices, widths, tail_choices, spill_choices):
            if tail and width == 1:
                continue  # (no lane, no tail)
            works = [layer_work(m.layers[0], batch_size, element_bytes, width, m.weights_missed, tail,
                                layer_cache_bytes, position_block) for m in mine]
            roof, error = fit_roofline(works, [len(m.layers) for m in mine], [m.seconds for m in mine], per_pixel,
                                       per_far_byte, tail, per_spilled_byte)
            fits[per_pixel, per_far_byte, width, tail, per_spilled_byte] = (
                replace(roof, lanes=width, tail=tail, position_block=position_block), error)
        kernels[kernel], rmspe[kernel] = simplest_good_fit(fits)
        probes[kernel] = len(mine)
    for kernel in KERNELS:
        stand_in = next((k for k in (kernel, *STAND_INS[kernel], *KERNELS) if k in kernels), None)
        if stand_in is None:
            raise ValueError("no probe of any kernel was measured")
        # (its rates, and the runtime's own position block for this kernel: a fact of its implementation)
        kernels[kernel] = replace(kernels[stand_in], position_block=(position_blocks or {}).get(kernel, 1))
    return FittedKernels(kernels, rmspe, probes)


def choose_cache(errors: Mapping[int, float | None], keeps_all: float | None) -> float:
    """The bytes of weights the last-level cache keeps from one call to the next
    (``model.missed_fraction``), or, called again, of a layer's activations it holds
    (``model.spilled_bytes``): of the sizes tried, with the error each fit makes on the whole
    networks (``errors``), the one that fits them best, if it cuts the error of the fit without
    (``keeps_all``) by a tenth (``CACHE_MARGIN``); else none (infinite). A
    machine-wide fact, chosen as a lane width is: where the networks cannot tell, none. (Judged
    on the networks, not on the kernels' own measurements: the XNNPACK runtimes' pointwise
    probes, chains of 16 MiB of weights, fit better with misses whose cost then predicts their
    networks worse: ExecuTorch fp32 on the Zen 5, docs/latency.md §4.)"""
    judged = {size: error for size, error in errors.items() if error is not None}
    if not judged or keeps_all is None:
        return math.inf
    size = min(judged, key=lambda s: (judged[s], s))
    return size if judged[size] < keeps_all * CACHE_MARGIN else math.inf


# (cost per position, cost per byte missed, lane width, tail, cost per activation byte spilled)
FitKey = tuple[bool, bool, int, bool, bool]


def simplest_good_fit(fits: Mapping[FitKey, tuple[Roofline, float]]) -> tuple[Roofline, float]:
    """Of a kernel's fits, keyed by (cost per position or not, cost per byte missed or not, lane
    width, tail run one channel at a time or padded, cost per activation byte spilled or not)
    with their errors: the simplest one (one lane, no cost), replaced by the best fit making one
    choice more (a wider lane, the cost per position, the cost per byte of weights beyond the
    cache, the tail, the cost per byte spilled) only where that cuts
    the error by a tenth (``LANES_MARGIN``, and ``LANES_MIN_GAIN``), then likewise by the best
    making two, and so on. Among fits making as many choices the least error wins (the narrower
    lane on a tie), so a lane 8 that beats lane 1 by 20% is not lost to a lane 4 tried before it
    that beat lane 1 by 15%."""
    def choices(key: FitKey) -> int:
        per_pixel, per_far_byte, width, tail, per_spilled_byte = key
        return int(per_pixel) + int(per_far_byte) + int(width != 1) + int(tail) + int(per_spilled_byte)

    chosen = fits[min(fits, key=lambda key: (choices(key), key[2]))]  # no choice made, unless the lane is decided
    for level in (1, 2, 3, 4, 5):
        rivals = sorted((error, key[2], key) for key, (_, error) in fits.items() if choices(key) == level)
        if not rivals:
            continue
        error, _, key = rivals[0]
        if error < chosen[1] * LANES_MARGIN and chosen[1] - error > LANES_MIN_GAIN:
            chosen = fits[key]
    return chosen


def fit_roofline(works: Sequence[Work], layers: Sequence[int], seconds: Sequence[float],
                 per_pixel: bool = False, per_far_byte: bool = False, per_tail: bool = False,
                 per_spilled_byte: bool = False) -> tuple[Roofline, float]:
    """The roofline of one kernel from probes of ``layers[i]`` identical layers of work
    ``works[i]`` taking ``seconds[i]``; and its root-mean-square percentage error on them.
    ``per_pixel``: with an overhead per output position (else none); ``per_far_byte``: with a
    cost per byte of weights fetched from beyond the cache (else none); ``per_tail``: with a
    cost per output position of each channel beyond the last whole lane (else none);
    ``per_spilled_byte``: with a cost per byte of activations spilled from the cache (else none)."""
    f = np.array([w.mult_adds for w in works], dtype=float)
    b = np.array([w.bytes for w in works], dtype=float)
    g = np.array([w.groups for w in works], dtype=float)
    px = np.array([w.pixels for w in works], dtype=float) * per_pixel
    far = np.array([w.far_bytes for w in works], dtype=float) * per_far_byte
    tail = np.array([w.tail_pixels for w in works], dtype=float) * per_tail
    spill = np.array([w.spilled_bytes for w in works], dtype=float) * per_spilled_byte
    n = np.array(layers, dtype=float)
    t = np.array(seconds, dtype=float)
    order = np.argsort(f / b)
    best = np.zeros(8)
    best_error = math.inf
    for split in range(len(t) + 1):
        compute = np.zeros(len(t), dtype=bool)
        compute[order[split:]] = True  # the more intense probes are the compute-bound ones
        design = np.stack([n, n * f * compute, n * b * ~compute, n * g, n * px, n * far, n * tail, n * spill],
                          axis=1)
        theta = _nonnegative_least_squares(design, t)
        error = _rmspe(_roofline_seconds(theta, f, b, g, px, far, tail, spill, n), t)
        if error < best_error - TIE:
            best, best_error = theta, error
    overhead, s_per_mac, s_per_byte, per_group, per_pixel, s_per_far_byte, s_per_tail, s_per_spilled_byte = (
        float(x) for x in best)
    roof = Roofline(1 / s_per_mac if s_per_mac > 0 else math.inf, 1 / s_per_byte if s_per_byte > 0 else math.inf,
                    overhead, group_s=per_group, pixel_s=per_pixel, far_s=s_per_far_byte, tail_s=s_per_tail,
                    spill_s=s_per_spilled_byte)
    return roof, best_error


def _roofline_seconds(theta: np.ndarray, f: np.ndarray, b: np.ndarray, g: np.ndarray, px: np.ndarray,
                      far: np.ndarray, tail: np.ndarray, spill: np.ndarray, n: np.ndarray) -> np.ndarray:
    return n * (theta[0] + theta[3] * g + theta[4] * px + theta[5] * far + theta[6] * tail + theta[7] * spill
                + np.maximum(theta[1] * f, theta[2] * b))


def _rmspe(predicted: np.ndarray, measured: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((predicted - measured) / measured) ** 2)))


def _nonnegative_least_squares(design: np.ndarray, t: np.ndarray, relative_to: np.ndarray | None = None) -> np.ndarray:
    """argmin over theta >= 0 of the error of ``design @ theta`` against ``t`` relative to
    ``relative_to`` (default ``t`` itself), by Lawson and Hanson's active set (scipy). (Solving
    every set of free unknowns, as this did until 2026-12-03, found the same optimum but took 6 of
    a batch-8 calibration's 60 s: 110,000 small solves for the rooflines' splits.)"""
    weights = t if relative_to is None else relative_to
    a = design / weights[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(a / scale, t / weights)
    return solution / scale

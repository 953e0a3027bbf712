"""Timing several candidates fairly on a noisy machine. Used by ``mobilenet bench``, by ``auto``'s
measurement and by the latency model's calibration and ``choose``.

Each candidate runs in **settled blocks**: a few untimed calls, then a timed block of about
``block_s``. Rounds of blocks repeat until every candidate has its time, and each round visits the
candidates in a fresh random order.

* **Why blocks, not one call per slice.** A runtime's thread pool keeps spinning for a while after
  a call returns (libgomp's spin count under PyTorch, ONNX Runtime's and OpenVINO's spin-then-sleep
  pools), and on a machine with as many threads as cores those spinning threads take the cores
  from whichever runtime runs next. Interleaved call by call, every call ran beside its
  neighbour's spin: measured at 1.0-224, batch 1, 2 threads, one call per slice gave PyTorch
  18.7 ms, ONNX Runtime 8.3 and OpenVINO 13.8; settled blocks gave 8.2, 4.4 and 4.4 ms.
* **Why untimed calls first.** They absorb most of the previous block's spin-down (at least
  ``SETTLE_CALLS`` calls and ``SETTLE_S`` seconds) and wake this candidate's own pool, so the
  timed calls see only this runtime.
* **Why rounds, in a random order.** Load from elsewhere comes in bursts; many short rounds spread a
  burst over all candidates, so their ratios survive it. The order is shuffled each round so that
  no candidate always follows the same neighbour: whatever a block leaves behind (cache contents,
  clock speed) is spread over every candidate instead of loaded onto one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Names the method in what caches a measurement (auto's decisions): one measured another way is redone.
METHOD = "settled blocks in random order"
# ...and where each call's time is read at the rounds' typical pace (``Rounds.paced_medians``).
PACED_METHOD = METHOD + ", read at the typical pace"
BLOCK_S = 0.1  # timed part of one block
SETTLE_CALLS = 3  # untimed calls opening every block...
# ...and at least this long. Not always past a neighbour's spin: ONNX Runtime's pool spins 35-40 ms
# after its last call on a Zen 5, but settling 50 ms instead moved none of its figures (docs/latency.md §0).
SETTLE_S = 0.02
MIN_ESTIMATE_S = 1e-5  # a call is never assumed faster than this when sizing blocks


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> Timing:
        ms = np.asarray(samples) * 1e3
        return cls(float(np.median(ms)), float(np.percentile(ms, 10)), float(np.percentile(ms, 90)), len(ms))


@dataclass(frozen=True)
class BlockPlan:
    """How many calls one block of a candidate makes: ``settle`` untimed, then ``timed``."""

    settle: int
    timed: int

    @classmethod
    def for_call(cls, seconds_per_call: float, *, block_s: float, settle_calls: int, settle_s: float) -> BlockPlan:
        per_call = max(seconds_per_call, MIN_ESTIMATE_S)
        return cls(max(settle_calls, math.ceil(settle_s / per_call)), max(1, int(block_s / per_call)))


def time_interleaved(
    runs: Sequence[Callable[[], Any]], *, seconds: float, min_runs: int, warmup: int = 3,
    block_s: float = BLOCK_S, settle_calls: int = SETTLE_CALLS, settle_s: float = SETTLE_S, seed: int | None = None,
) -> list[list[float]]:
    """Time zero-argument calls in settled blocks, interleaved (see the module docstring).

    Each call is first run ``warmup`` times and once more to size its blocks. Rounds then give every
    call one block, in a random order (``seed`` fixes it), until each has ``min_runs`` timed calls
    and the rounds have lasted about ``seconds`` per call. Returns each call's timed latencies
    (seconds), in the order of ``runs``; ``time_rounds`` also says how the machine's pace moved."""
    return time_rounds(runs, seconds=seconds, min_runs=min_runs, warmup=warmup, block_s=block_s,
                       settle_calls=settle_calls, settle_s=settle_s, seed=seed).samples


# The span over which ``Rounds.paces`` reads the machine's pace: the guests measured here slow
# down in spells of a second or a few (docs/latency.md §0), which longer spans average away (a
# calibration's blocks: 1.22x read per second, 1.05x per 4 s, §4); and the fewest blocks that make
# one reading.
PACE_WINDOW_S = 1.0
PACE_MIN_BLOCKS = 5
# Timings whose seconds ran at paces further apart than this (slowest over quickest,
# ``Rounds.drift``) measured a machine whose speed moved under them: they mix its spells, and what
# runs next may see either (docs/latency.md §2, "A machine that moves").
DRIFTING = 1.15


@dataclass(frozen=True)
class Block:
    """One settled block: when it began (seconds from the first round), whose
    (the call's index) and its median latency (seconds)."""

    start_s: float
    call: int
    median_s: float


@dataclass(frozen=True)
class Rounds:
    """What ``time_rounds`` measured: ``samples``, each call's timed latencies (seconds, in the
    order of the calls), and every block, in the order they ran."""

    samples: list[list[float]]
    blocks: list[Block]

    def window_s(self) -> float:
        """The span ``paces`` reads by default: ``PACE_WINDOW_S``, or longer where blocks are so
        long (training steps: a few seconds each) that a second would not hold
        ``PACE_MIN_BLOCKS`` of them on average."""
        if len(self.blocks) < 2:
            return PACE_WINDOW_S
        span = self.blocks[-1].start_s - self.blocks[0].start_s
        return max(PACE_WINDOW_S, PACE_MIN_BLOCKS * span / (len(self.blocks) - 1))

    def paces(self, window_s: float | None = None) -> list[float]:
        """How slowly the machine ran in each ``window_s`` (default: ``window_s()``) of the rounds
        against its typical pace: the median, over the blocks that began in the window, of each
        block's median over its call's median block (1.0: typical; 1.3: the calls ran about 30%
        slower). Every call runs in every round, so this is the machine's pace whatever each call
        costs. Windows of fewer than ``PACE_MIN_BLOCKS`` blocks are left out."""
        return [pace for _, pace in sorted(self._window_paces(window_s or self.window_s()).items())]

    def paced_medians(self, window_s: float | None = None) -> list[float]:
        """Each call's latency (seconds, in the order of the calls) at the rounds' typical pace:
        the median, over its blocks, of each block's median divided by the pace of the window it
        began in (``paces``; a window of too few blocks to read counts as typical).

        On a machine whose speed moves from second to second, a call timed in a few blocks meets
        the slow spells by chance, more often or less than the calls beside it, and its plain
        median moves with that luck. Read at the typical pace it does not: 25 networks timed in
        five blocks each, four times over on a moving Zen 4 (ad hoc, docs/latency.md §2), spread
        6.5% between repeats against 8.7% plainly, and their times never fell as a network grew,
        where the plain medians did 4 times."""
        window_s = window_s or self.window_s()
        paces = self._window_paces(window_s)
        per_call: dict[int, list[float]] = {}
        for b in self.blocks:
            per_call.setdefault(b.call, []).append(b.median_s / paces.get(int(b.start_s // window_s), 1.0))
        return [float(np.median(per_call[call])) if call in per_call else math.nan
                for call in range(len(self.samples))]

    def _window_paces(self, window_s: float) -> dict[int, float]:
        """``paces`` by window index (``start_s // window_s``)."""
        per_call: dict[int, list[float]] = {}
        for b in self.blocks:
            per_call.setdefault(b.call, []).append(b.median_s)
        typical = {call: float(np.median(medians)) for call, medians in per_call.items()}
        windows: dict[int, list[float]] = {}
        for b in self.blocks:
            if typical[b.call] > 0:
                windows.setdefault(int(b.start_s // window_s), []).append(b.median_s / typical[b.call])
        return {w: float(np.median(ratios)) for w, ratios in windows.items() if len(ratios) >= PACE_MIN_BLOCKS}

    def drift(self, window_s: float | None = None) -> float:
        """The slowest window's pace over the quickest's (1.0: steady, or too short to tell)."""
        paces = self.paces(window_s)
        return max(paces) / min(paces) if paces else 1.0


def time_rounds(
    runs: Sequence[Callable[[], Any]], *, seconds: float, min_runs: int, warmup: int = 3,
    block_s: float = BLOCK_S, settle_calls: int = SETTLE_CALLS, settle_s: float = SETTLE_S, seed: int | None = None,
) -> Rounds:
    """``time_interleaved``, every block kept."""
    plans = [BlockPlan.for_call(_first_call_s(fn, warmup), block_s=block_s, settle_calls=settle_calls,
                                settle_s=settle_s) for fn in runs]
    samples: list[list[float]] = [[] for _ in runs]
    blocks: list[Block] = []
    order = list(range(len(runs)))
    shuffle = random.Random(seed).shuffle
    began = time.perf_counter()
    deadline = began + seconds * len(runs)
    while time.perf_counter() < deadline or min(len(s) for s in samples) < min_runs:
        shuffle(order)
        for i in order:
            timed, start = len(samples[i]), time.perf_counter() - began
            run_block(runs[i], plans[i], samples[i])
            blocks.append(Block(start, i, float(np.median(samples[i][timed:]))))
    return Rounds(samples, blocks)


def _first_call_s(fn: Callable[[], Any], warmup: int) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_block(fn: Callable[[], Any], plan: BlockPlan, out: list[float]) -> None:
    """One settled block of ``fn``: ``plan.settle`` untimed calls, then ``plan.timed`` timed ones
    appended to ``out`` (seconds each)."""
    for _ in range(plan.settle):
        fn()
    for _ in range(plan.timed):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)


class Sgemm:
    """One fp32 ``size``^3 matrix multiply: this machine's roof for convolutions lowered to GEMM.
    Timed as one more interleaved cell, so the peak and the models see the same load. It runs
    whichever of the two GEMM libraries PyTorch ships is faster here (``library``, timed once
    at construction): MKL's (``torch.mm``) runs AMD CPUs on a path half as fast as oneDNN's
    (Zen 5, 1 thread: 107 against 238 GFLOP/s), so that a roof of MKL's alone had XNNPACK's
    convolutions at 192% of it."""

    def __init__(self, size: int = 1024) -> None:
        a, b = torch.randn(size, size), torch.randn(size, size)
        self.flop = 2 * size**3
        out = torch.empty(size, size)
        calls: dict[str, Callable[[], Any]] = {"MKL": lambda: torch.mm(a, b, out=out)}
        onednn = _onednn_matmul(a, b)
        if onednn is not None:
            calls["oneDNN"] = onednn
        self.libraries = tuple(calls)  # those it chose among
        medians = ([np.median(samples) for samples in time_interleaved(list(calls.values()), seconds=0.05, min_runs=3)]
                   if len(calls) > 1 else [0.0])
        self.library, self._call = list(calls.items())[int(np.argmin(medians))]

    def __call__(self) -> None:
        self._call()


def _onednn_matmul(a: torch.Tensor, b: torch.Tensor) -> Callable[[], Any] | None:
    """``a @ b`` by oneDNN (the library PyTorch's CPU convolutions run on), or None where this
    PyTorch has no oneDNN, or no longer the private entry point used here."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        x, weight = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        linear = torch._C._nn.mkldnn_linear
        linear(x, weight)
    except (AttributeError, RuntimeError):
        return None
    return lambda: linear(x, weight)

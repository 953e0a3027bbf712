"""Timing that survives a noisy machine: calls timed round-robin in short slices, so a burst of
load from elsewhere hits every candidate alike and their ratios hold. Used by ``mobilenet bench``
and by ``auto``'s measurement."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

SLICE_S = 0.1


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


def time_interleaved(
    runs: Sequence[Callable[[], Any]], *, seconds: float, min_runs: int, warmup: int = 3, slice_s: float = SLICE_S
) -> list[list[float]]:
    """Time several zero-argument calls round-robin. Each call is warmed up ``warmup`` times, then
    rounds give every call a slice of about ``slice_s`` until each has run ``min_runs`` times and
    the total reaches ``seconds`` per call. Returns the per-call latencies (seconds) of each."""
    for fn in runs:
        for _ in range(warmup):
            fn()
    estimates = []
    for fn in runs:
        start = time.perf_counter()
        fn()
        estimates.append(max(time.perf_counter() - start, 1e-5))
    repeats = [max(1, int(slice_s / est)) for est in estimates]
    samples: list[list[float]] = [[] for _ in runs]
    deadline = time.perf_counter() + seconds * len(runs)
    while time.perf_counter() < deadline or min(len(s) for s in samples) < min_runs:
        for fn, n, out in zip(runs, repeats, samples):
            for _ in range(n):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    return samples


class Sgemm:
    """One fp32 ``size``^3 matrix multiply: this machine's roof for convolutions lowered to GEMM.
    Timed as one more interleaved cell, so the peak and the models see the same load."""

    def __init__(self, size: int = 1024) -> None:
        self.a, self.b = torch.randn(size, size), torch.randn(size, size)
        self.out = torch.empty(size, size)
        self.flop = 2 * size**3

    def __call__(self) -> None:
        torch.mm(self.a, self.b, out=self.out)

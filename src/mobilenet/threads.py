"""How many threads a computation may use, in one place: the CPUs this process may run on, the
one check of a thread count that every runtime, the latency model, ``bench``, ``evaluate`` and
the explorer make, and PyTorch's process-wide count set for a block and put back after it.
Light to import (the command line's parser checks thread counts): torch only where it is used."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from mobilenet.errors import InputError, option


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (a container or
    ``taskset`` may allow fewer than the machine has), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_threads(threads: object) -> None:
    """The one check of a runtime's thread count (every predictor, ``make_predictor``, the latency
    model, ``bench``, the explorer): None (the runtime's default) or a whole number from 1 to
    ``usable_cpus()``. More threads than CPUs only slow a runtime down (they take turns on the same
    cores; nothing in the project measures oversubscription), and a count in the thousands makes
    ONNX Runtime or OpenVINO start that many threads, a job that grows in memory and cannot be
    stopped, so it is refused before any session is made."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise InputError(f"{option('threads')} must be an int >= 1 (or None: the runtime's default), got {threads!r}")
    cpus = usable_cpus()
    if threads is not None and threads > cpus:
        raise InputError(f"{option('threads')} is {threads}, more than the {cpus} CPU{'s' if cpus > 1 else ''} this "
                         f"process may use: ask for at most {cpus}, or leave it out for the runtime's default")


@contextlib.contextmanager
def torch_threads_kept() -> Iterator[None]:
    """PyTorch's thread count as it was before, after the block: code that sets it for the whole
    process (PyTorch has no per-module count), such as a measurement that ends (a calibration,
    ``choose``'s timings), must not leave it behind for the caller's own models."""
    import torch  # noqa: PLC0415 - see the module's docstring

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Calls inside torch_threads blocks, and the count the process had before the first of them.
_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch runs on ``threads`` threads within the block (None: as the process is set), and the
    caller's count is back after it. The count is the process's, so a predictor that has its own
    (``TorchPredictor``, ``accuracy.EagerPredictor``) sets it for each call rather than once for
    good: a library call must not change how the caller's other models run. Blocks that overlap
    (a predictor called from several threads) restore the count the first one found when the last
    one ends, never one of their own counts; between them, the latest setting holds."""
    global _threads_users, _threads_before
    if not threads:
        yield
        return
    import torch  # noqa: PLC0415 - see the module's docstring

    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
        _threads_users += 1
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)

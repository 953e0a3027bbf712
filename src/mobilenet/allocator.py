"""The process's memory allocator: glibc's, asked to keep freed memory (one owner of the setting,
in both its forms). No torch at import.

glibc hands every freed buffer above its mmap threshold (32 MiB at most) back to the OS, and the
next call or training step faults it in again, a page at a time (16,385 faults for 64 MiB; a few
microseconds each in a VM guest). PyTorch allocates its activations fresh on every call, so at
large batches it spends a large part of its time there: measured on a Zen 4, eager inference at
batch 32 went from 819 to 321 ms; on a Zen 5 an eager fp32 NCHW training step at batch 32, 224 px
from 1.83 to 0.95 s (docs/training.md). ONNX Runtime and OpenVINO keep their own arenas.

* ``keep_freed_memory()`` sets it for the rest of this process (``mallopt``): ``optimize`` and
  ``mobilenet train`` do, on a CPU.
* ``GLIBC_TUNABLES_KEEP`` is the same, as the ``GLIBC_TUNABLES`` a process starts under (read once
  at its start): what ``mobilenet bench`` and the benchmarks restart themselves with
  (``restart_keeping_freed_memory``), so that everything they load (the runtimes included)
  allocates that way from the first byte.

The cost: the process's resident size keeps its peak.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# What ``optimize(memory=)`` and training's ``memory`` setting take: glibc asked to keep freed
# memory (``keep_freed_memory``), or left to its own settings.
MEMORY_POLICIES = ("keep", "default")
# No buffer gets its own mmap, and the heap is never trimmed (16 GiB: more than a run frees at once).
GLIBC_TUNABLES_KEEP = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # from <malloc.h>
_TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt takes a C int


def glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (Linux with glibc): the allocator whose
    settings ``keep_freed_memory`` changes."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def restart_keeping_freed_memory(*, passive_omp: bool = True) -> None:
    """Run this script again (``sys.argv``) under ``GLIBC_TUNABLES_KEEP``, added to any tunables
    already set, and, with ``passive_omp``, OMP_WAIT_POLICY=PASSIVE where the policy is unset (so
    that PyTorch's OpenMP threads do not spin into the next timed call); returns at once where the
    tunables are already in place. For the benchmark scripts: call it after parsing the arguments
    (a wrong one fails without a restart) and before importing torch."""
    if GLIBC_TUNABLES_KEEP in os.environ.get("GLIBC_TUNABLES", ""):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], timing_environment(passive_omp=passive_omp))


def openmp_wait_policy() -> str | None:
    """The OpenMP wait policy this process runs under (``OMP_WAIT_POLICY``, upper-cased; None:
    OpenMP's default, which spins a while after each parallel region). It moves PyTorch's own speed:
    its batch-1 calls at 1.0-224 took 1.19x (fp32) and 1.43x (bf16) as long under PASSIVE as
    under the default on a Zen 4 (docs/performance.md). So what keeps a timing of PyTorch for
    later (``auto``'s decisions, the latency model's calibrations) keys it by the policy."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().upper()
    return policy or None


def timing_environment(*, keep_memory: bool = True, passive_omp: bool = True) -> dict[str, str]:
    """This process's environment with what a fair timing starts under: ``GLIBC_TUNABLES_KEEP``
    added to any tunables already set (``keep_memory``), and OMP_WAIT_POLICY=PASSIVE where the
    policy is unset (``passive_omp``)."""
    env = dict(os.environ)
    if keep_memory and GLIBC_TUNABLES_KEEP not in env.get("GLIBC_TUNABLES", ""):
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), GLIBC_TUNABLES_KEEP)))
    if passive_omp:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def release_freed_memory() -> bool:
    """Hand what malloc holds free back to the OS now (glibc's ``malloc_trim``), whatever
    ``keep_freed_memory`` set: for a measurement of what one call needs, taken after work that
    freed its buffers into malloc's free lists, where they stay resident. False where not glibc."""
    if not glibc_malloc():
        return False
    return bool(ctypes.CDLL(None).malloc_trim(0))


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in this process from now on (no per-buffer mmap, no
    trimming); the settings cannot be read back, so they stay. False where not glibc."""
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX))

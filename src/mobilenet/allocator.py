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
  at its start): what ``mobilenet bench`` and the benchmarks restart themselves with, so that
  everything they load (the runtimes included) allocates that way from the first byte.

The cost: the process's resident size keeps its peak.
"""

from __future__ import annotations

import ctypes
import platform

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


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in this process from now on (no per-buffer mmap, no
    trimming); the settings cannot be read back, so they stay. False where not glibc."""
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX))

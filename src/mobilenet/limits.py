"""Refusing, before allocating, a model or a batch that cannot fit in memory.

The cost model knows every layer's weights and activations exactly (``mobilenet.cost``), so the
memory a request needs is known before a single tensor exists. Without this check ``--alpha 40``
at 32 px grows a process to 20 GB over minutes before the allocator gives up (taking the machine
with it), and ``--alpha 1e9`` or a 100000-pixel input end in allocator tracebacks. With it they
stop at once with one line: the estimate, the memory available, and what to change.

What is counted, in bytes at 4 per element (fp32):

* ``build``: the weights (all parameters and BatchNorm statistics) twice — a model is never only
  built: loading a state dict, exporting or one gradient makes a second copy — plus one image's
  peak activations (the smallest forward pass).
* ``inference``: the weights once plus the batch's peak of live activations (``cost``'s
  peak: one layer's input + output).
* ``training``: the weights, their gradients, the optimizer's state (RMSprop and AdamW keep two
  tensors per weight, SGD one), an EMA copy if any, and every activation autograd keeps for the
  backward pass (about two tensors the size of each layer's output: the conv's output and
  BatchNorm's input/ReLU's output) for one micro-batch.

These are lower bounds (allocator slack, the framework itself and the data loader come on top),
so a request refused here could never have run. The memory available is Linux's ``MemAvailable``
(or the cgroup's limit, when lower); ``MOBILENET_MEMORY_LIMIT`` (bytes, or with K/M/G/T) sets it
explicitly, e.g. to keep a job to its share of a shared machine. Where it cannot be found, nothing
is refused. Pure Python: no torch (CUDA memory is asked of torch only when a device says cuda).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, ResourceError, option

Mode = Literal["build", "inference", "training"]
MODES: tuple[str, ...] = ("build", "inference", "training")
BYTES_PER_ELEMENT = 4
# Tensors per weight that training keeps beside the weight itself: its gradient and the
# optimizer's state.
OPTIMIZER_STATE = {"rmsprop": 2, "adamw": 2, "sgd": 1}
# Tensors per layer output that autograd keeps for the backward pass.
SAVED_PER_OUTPUT = 2
LIMIT_VARIABLE = "MOBILENET_MEMORY_LIMIT"


@dataclass(frozen=True)
class MemoryEstimate:
    """The bytes a request needs, by part (see the module docstring for what each counts)."""

    model: str
    mode: str
    batch_size: int
    weights: int  # all weight copies together
    weight_copies: int
    activations: int
    total: int

    def describe(self) -> str:
        batch = f", batch {self.batch_size}" if self.mode != "build" else ""
        copies = f"{self.weight_copies} × " if self.weight_copies > 1 else ""
        return (f"{self.model} ({self.mode}{batch}) needs at least {_bytes(self.total)} "
                f"(weights {copies}{_bytes(self.weights // self.weight_copies)}, "
                f"activations {_bytes(self.activations)})")


def estimate_memory(
    cfg: ArchConfig,
    batch_size: int = 1,
    *,
    mode: Mode = "inference",
    optimizer: str = "rmsprop",
    ema: bool = False,
    bytes_per_element: int = BYTES_PER_ELEMENT,
) -> MemoryEstimate:
    """What ``cfg`` needs for ``mode`` at ``batch_size`` images, from the cost model alone."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, got {mode!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be an int >= 1, got {batch_size!r}")
    net = cost.network_cost(cfg, bytes_per_element, batch_size if mode != "build" else 1)
    weights = net.total.all_params * bytes_per_element
    if mode == "build":
        copies, activations = 2, net.total.peak_activation_bytes
    elif mode == "inference":
        copies, activations = 1, net.total.peak_activation_bytes
    else:
        copies = 2 + OPTIMIZER_STATE.get(optimizer, 2) + (1 if ema else 0)
        activations = net.layers[0].in_bytes + SAVED_PER_OUTPUT * sum(x.out_bytes for x in net.layers)
    weight_bytes = copies * weights
    return MemoryEstimate(cfg.name, mode, batch_size, weight_bytes, copies, activations, weight_bytes + activations)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes this process may still allocate on ``device`` (None: unknown)."""
    explicit = os.environ.get(LIMIT_VARIABLE)
    if explicit:
        return parse_bytes(explicit)
    if str(device).startswith("cuda"):
        import torch  # noqa: PLC0415 - only a CUDA device needs torch here

        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(index if index is not None else torch.cuda.current_device())
        return int(free)
    candidates = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    if candidates:
        return min(candidates)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(
    cfg: ArchConfig,
    batch_size: int = 1,
    *,
    mode: Mode = "inference",
    optimizer: str = "rmsprop",
    ema: bool = False,
    device: str = "cpu",
    available: int | None = None,
) -> MemoryEstimate:
    """Raise ``ResourceError`` (the estimate and the memory available in one line) when ``cfg``
    cannot fit for ``mode`` at ``batch_size``; return the estimate otherwise."""
    estimate = estimate_memory(cfg, batch_size, mode=mode, optimizer=optimizer, ema=ema)
    limit = available if available is not None else available_memory(device)
    if limit is not None and estimate.total > limit:
        where = "on this GPU" if str(device).startswith("cuda") else "on this machine"
        source = f" (set by {LIMIT_VARIABLE})" if available is None and os.environ.get(LIMIT_VARIABLE) else ""
        advice = f"a smaller {option('alpha')} or {option('resolution')}" + (
            f" or {option('batch_size')}" if mode != "build" else "")
        raise ResourceError(f"{estimate.describe()}, but only {_bytes(limit)} is available {where}{source}; "
                            f"choose {advice}")
    return estimate


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5T"`` or a plain number of bytes (binary units: G = 2**30)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)i?B?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise InputError(f"{LIMIT_VARIABLE} must be a number of bytes, optionally with K, M, G or T; got {text!r}")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    # cgroup v2: memory.max ("max" when unlimited) less memory.current.
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        return None


def _bytes(n: int) -> str:
    for power, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (30, "GiB")):
        if n >= 2**power:
            return f"{n / 2**power:,.3g} {unit}" if unit == "EiB" else f"{n / 2**power:,.1f} {unit}"
    return f"{n / 2**20:,.1f} MiB"

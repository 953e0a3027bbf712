"""oneDNN Graph: a network (or a latency probe) traced and frozen as TorchScript, run with
PyTorch's oneDNN Graph (LLGA) fusion, its partitions (each conv, or pointwise conv as a matrix
product, with its bias and ReLU6) compiled once for the input's shape and then only executed.

Inductor's program has oneDNN describe every conv again on every call (about 24 µs a call on the
Zen 5, docs/pytorch.md); this one does not, and ran MobileNets faster at batch 1 there. The
fusion is switched on for the tracing and the profiling calls alone: the fused plan stays with
the program, and the process's other TorchScript is untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from mobilenet.cpu import CpuInfo, cpu_info

PROFILING_RUNS = 3  # TorchScript's profiling executor fuses on the third call
PARTITION = "LlgaPartition"  # how the profiler names a partition's run (with "_<n>")
# In a network's profile, besides the partitions: the input's conversion and the stem's pad, which
# belong to the layer after them, and the pool, a layer of its own. Anything else (a pointwise
# conv's permute into rows and back, the flatten) belongs to the layer before it.
BEFORE_OPS = ("aten::to", "aten::contiguous", "aten::pad")
POOL_OPS = ("aten::adaptive_avg_pool2d", "aten::mean")
Program = Callable[[torch.Tensor], torch.Tensor]
_FUSION_SWITCH = threading.Lock()


class Unavailable(RuntimeError):
    """oneDNN Graph cannot run here; the message says why."""


def unavailable() -> str | None:
    """Why this PyTorch cannot fuse with oneDNN Graph (None: it can)."""
    if not torch.backends.mkldnn.is_available():
        return f"PyTorch {torch.__version__} is built without oneDNN"
    if not hasattr(torch._C, "_jit_llga_enabled") or not hasattr(torch.jit, "enable_onednn_fusion"):
        return f"PyTorch {torch.__version__} has no oneDNN Graph fusion"
    return None


def measured_faster(cpu: CpuInfo | None = None) -> str | None:
    """Why oneDNN Graph is not ``optimize``'s first choice on this CPU (None: it is): it has been
    measured faster than inductor's program on an AVX-512 CPU only (the Zen 5, every batch size
    1-32, fp32 and bf16; docs/pytorch.md)."""
    if (reason := unavailable()) is not None:
        return reason
    if "avx512f" not in (cpu or cpu_info()).flags:
        return "oneDNN Graph has been measured faster only on AVX-512 CPUs; this one has none"
    return None


def build(net: nn.Module, example: torch.Tensor, *,
          must_fuse: bool = True) -> tuple[torch.jit.ScriptModule, int, float]:
    """``net`` traced on ``example``, frozen and fused: the program, its count of fused
    partitions and the seconds it took. Raises ``Unavailable`` where it cannot fuse (where it
    fuses nothing too, unless not ``must_fuse``: a pool alone has nothing to fuse)."""
    if example.device.type != "cpu":
        raise Unavailable("oneDNN Graph runs on CPU only")
    if (reason := unavailable()) is not None:
        raise Unavailable(reason)
    start = time.perf_counter()
    with _FUSION_SWITCH:  # (the switch is the process's: two threads building must not interleave)
        program, partitions = _traced_and_fused(net, example)
    if not partitions and must_fuse:
        raise Unavailable("oneDNN Graph fused nothing here")
    return program, partitions, time.perf_counter() - start


def _traced_and_fused(net: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, int]:
    before = torch._C._jit_llga_enabled()
    torch.jit.enable_onednn_fusion(True)
    try:
        with torch.inference_mode(), warnings.catch_warnings():  # (the mode its callers run it in)
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ flags TorchScript as deprecated
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            program = torch.jit.freeze(torch.jit.trace(net.eval(), example))
            for _ in range(PROFILING_RUNS):
                program(example)
            partitions = fused_partitions(program, example)
    finally:
        torch.jit.enable_onednn_fusion(before)
    return program, partitions


def fused_partitions(program: torch.jit.ScriptModule, example: torch.Tensor) -> int:
    """How many oneDNN Graph partitions ``program`` runs for inputs like ``example`` (each is named
    twice in the graph's text, where it runs and as its subgraph: counted once)."""
    return len(set(re.findall(r"prim::oneDNNFusionGroup_\d+", str(program.graph_for(example)))))


def profiled_ops(program: Program, x: torch.Tensor, seconds: float, min_runs: int = 5) -> list[list[tuple[str, float]]]:
    """Each run's top-level ops, in order, as (name, seconds), by PyTorch's profiler, running
    ``program`` on ``x`` for about ``seconds`` (the first run, warming up, left out). A
    partition's name is ``PARTITION``; every other op keeps its ATen name (``aten::pad``...)."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    profiler = profile(activities=[ProfilerActivity.CPU])
    with torch.inference_mode():
        program(x)
        with _native_stderr_silenced():
            profiler.start()
        try:
            runs, deadline = 0, time.perf_counter() + seconds
            while runs < min_runs or time.perf_counter() < deadline:
                program(x)
                runs += 1
        finally:
            with _native_stderr_silenced():
                profiler.stop()
    with _native_stderr_silenced():
        events = profiler.events()
    calls = [e for e in events if e.cpu_parent is None and e.name == "forward"]
    return [[(re.sub(r"_\d+$", "", op.name) if op.name.startswith(PARTITION) else op.name, op.cpu_time_total * 1e-6)
             for op in sorted(call.cpu_children, key=lambda e: e.time_range.start)]
            for call in calls[1:]]


def layer_seconds(program: Program, x: torch.Tensor, seconds: float) -> list[float]:
    """Each layer's median seconds in a network's ``program`` (its convs, the pool, the classifier,
    in order, as ``mobilenet.cost`` lists them), by the profiler over about ``seconds``."""
    runs = [_layers(ops) for ops in profiled_ops(program, x, seconds)]
    return [float(np.median(layer)) for layer in zip(*runs, strict=True)]


def _layers(ops: list[tuple[str, float]]) -> list[float]:
    """One run's ops as seconds per layer: each partition or pool starts the next layer."""
    layers: list[float] = []
    pending = 0.0
    for name, seconds in ops:
        if name == PARTITION or name in POOL_OPS:
            layers.append(seconds + pending)
            pending = 0.0
        elif name in BEFORE_OPS or not layers:
            pending += seconds
        else:
            layers[-1] += seconds
    if layers:
        layers[-1] += pending  # (the logits' conversion back to float32)
    return layers


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The process's stderr closed for native code: the profiler's library writes lines of its own
    there (its start and stop, a GPU it looks for) that would break a command's output."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

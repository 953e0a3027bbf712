"""The training step as it runs: what is decided once per run (``plan_execution``: compiled or
eager, the autocast dtype, the memory format, each with its reason) and the module the loop calls
(``build_step``: the model and the loss under autocast, compiled by ``torch.compile`` so that
inductor generates the forward *and* the backward graph).

The fast settings are the defaults wherever they cost no accuracy, after ``mobilenet.cpu``:

* **channels_last**: oneDNN's convolutions (and cuDNN's) run NHWC natively; NCHW costs reorders.
* **bf16 autocast** where bf16 is native (AVX512-BF16, AMX, a GPU with bf16); elsewhere oneDNN
  emulates it many times slower than fp32, so ``auto`` stays fp32 and says why. fp16 (CUDA only,
  ``--amp fp16``) runs with a gradient scaler.
* **a compiled step** on runs long enough to pay its compile back (``COMPILE_MIN_STEPS``), where
  inductor can compile (a C++ compiler on CPU, Triton on CUDA; ``mobilenet.optimized`` asks). The
  compiled model has constant TF 'SAME' pads for the fixed training size (``mobilenet.arch``), so
  dynamo never evaluates a pad from the input's shape. The compiled module shares the model's
  parameters: checkpoints, EMA and validation read the plain model, loadable by eager code.

``--no-compile`` and ``--amp none`` (with ``--no-channels-last``) give the eager fp32 NCHW step.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mobilenet import arch
from mobilenet.allocator import glibc_malloc, keep_freed_memory
from mobilenet.cpu import CpuInfo
from mobilenet.errors import option
from mobilenet.model import MobileNetV1, TFSamePad
from mobilenet.train.config import TrainConfig
from mobilenet.train.execution import autocast_choice

# A compile of the step takes about 30-90 s on a CPU (forward and backward graphs); a step it
# speeds up by a few tens of milliseconds at 32 px pays that back only over hundreds of steps.
COMPILE_MIN_STEPS = 200
AMP_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class ExecutionPlan:
    """How this run's steps are computed, and why (one line each, for the user)."""

    device: torch.device
    amp: torch.dtype | None
    amp_why: str
    channels_last: bool
    compile: bool
    compile_why: str
    # On a CPU under glibc the run keeps freed memory (``mobilenet.allocator``):
    # glibc would otherwise hand each activation buffer above 32 MiB back to the OS every step and
    # fault it in again the next (an fp32 NCHW step at batch 32, 224 px: 1.7-1.9x slower).
    keeps_freed_memory: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def needs_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range."""
        return self.amp == torch.float16

    @property
    def inductor_options(self) -> dict[str, object] | None:
        """What the compiled step asks of inductor (``compile_options``); None when eager."""
        return compile_options(self.device) if self.compile else None

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else f"NCHW ({option('channels_last', False)})"
        memory = "; freed memory kept in the process (glibc)" if self.keeps_freed_memory else ""
        return f"train: {self.compile_why}; {self.amp_why}; {layout}{memory}"

    def to_dict(self) -> dict[str, object]:
        return {"compile": self.compile, "compile_why": self.compile_why, "amp": AMP_NAMES[self.amp],
                "amp_why": self.amp_why, "memory_format": "channels_last" if self.channels_last else "nchw",
                "freed_memory_kept": self.keeps_freed_memory, "inductor_options": self.inductor_options,
                "device": str(self.device)}

    def apply_to_process(self) -> None:
        """The process-wide part of the plan, applied once before the first step (it stays for the
        rest of the process: glibc's settings cannot be read back to restore them)."""
        if self.keeps_freed_memory:
            keep_freed_memory()


def plan_execution(config: TrainConfig, device: torch.device, total_steps: int, *,
                   cpu: CpuInfo | None = None) -> ExecutionPlan:
    """What ``config`` runs on ``device`` for a run of ``total_steps`` optimizer steps. ``cpu``:
    the CPU whose bf16 decides (default: this one; tests describe others)."""
    amp, amp_why = autocast_choice(config.amp, device, cpu)
    compile_, compile_why = compile_choice(config.compile, device, total_steps)
    return ExecutionPlan(device, amp, amp_why, config.channels_last, compile_, compile_why,
                         keeps_freed_memory=device.type == "cpu" and config.memory == "keep" and glibc_malloc())


def compile_choice(setting: bool | None, device: torch.device, total_steps: int) -> tuple[bool, str]:
    """Whether to compile the step (``setting``: True insists, False refuses, None decides), and why."""
    if setting is False:
        return False, f"eager step ({option('compile', False)})"
    from mobilenet.optimized import compile_unavailable  # noqa: PLC0415 - loads the deploy code

    reason = compile_unavailable(device)
    if reason:
        return False, f"eager step, because compiling is unavailable: {reason}"
    if setting is None and total_steps < COMPILE_MIN_STEPS:
        return False, (f"eager step: {total_steps} steps are too few to pay back a compile (auto compiles runs of "
                       f"{COMPILE_MIN_STEPS} or more; {option('compile', True)} insists)")
    return True, f"compiled step (torch.compile, inductor; {option('compile', True) if setting else 'auto'})"


class ModelWithLoss(nn.Module):
    """The model and the loss under autocast: what one micro-batch's forward computes, as one
    module (and so one compiled graph, whose backward inductor generates too)."""

    def __init__(self, model: nn.Module, criterion: nn.Module, plan: ExecutionPlan) -> None:
        super().__init__()
        self.model, self.criterion = model, criterion
        self.device_type, self.amp = plan.device.type, plan.amp

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.amp, enabled=self.amp is not None):
            return self.criterion(self.model(images), labels)


def build_step(model: nn.Module, criterion: nn.Module, plan: ExecutionPlan, *,
               inductor_options: dict[str, object] | None = None) -> nn.Module:
    """The module a step calls, ``step(images, labels) -> loss``: compiled when ``plan`` says so
    (then ``model``'s TF pads are constants: ``constant_pads``), with ``inductor_options``
    (default: the plan's, ``compile_options``; the benchmarks compare others)."""
    step = ModelWithLoss(model, criterion, plan)
    if not plan.compile:
        return step
    if isinstance(model, MobileNetV1):
        constant_pads(model)
    return torch.compile(step, options=plan.inductor_options if inductor_options is None else inductor_options)


# inductor writes out a computed tensor used by two kernels once it reads more buffers than this
# (its default: 4). ReLU6's backward asks for BatchNorm's output, which the forward does not keep
# and inductor recomputes from five (the conv's output, the batch mean and inverse std, BatchNorm's
# weight and bias); with a few more allowed it is computed inside both kernels that use it.
REALIZE_READS_THRESHOLD = 8


def compile_options(device: torch.device) -> dict[str, object]:
    """inductor's settings for the compiled step on ``device`` (docs/training.md has the
    measurements):

    * ``realize_reads_threshold`` (``REALIZE_READS_THRESHOLD``), on every device. Each block's
      backward needs ReLU6's mask, which is where BatchNorm's output lies strictly between 0 and 6.
      With inductor's threshold, that output is recomputed and written out whole (103 MB for the
      first block at batch 32 in fp32), then read back by BatchNorm's backward reduction and by
      its gradient. Above it, both compute the mask from the conv's output they read anyway. (The
      heuristic is inductor's own, the same for every device; measured on CPUs only.)
    * ``force_layout_optimization``, on a CPU with oneDNN. inductor lays out every graph that holds
      a convolution channels_last (oneDNN's layout), but it decides graph by graph, and a step's
      backward graph holds only ``convolution_backward`` nodes, which it does not count
      (pytorch#189239, present in 2.14.1). That graph keeps the default layout, and its lowering
      then orders each conv's input and output gradient like the conv's weight gradient: for a
      depthwise conv's (C, 1, 3, 3) weights that is N, H, C, W, a layout oneDNN's depthwise
      backward runs 2-3x slower than channels_last, after a copy into it. Forcing the option gives
      the backward graph the forward's layout. GPUs keep inductor's own layout choice (the upstream
      report describes a GPU regression of the same cause, not measured here)."""
    options: dict[str, object] = {"realize_reads_threshold": REALIZE_READS_THRESHOLD}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        options["force_layout_optimization"] = True
    return options


def constant_pads(model: MobileNetV1) -> Callable[[], None]:
    """Replace ``model``'s TF 'SAME' pads, in place, with the constant pads of its configured
    resolution (``mobilenet.arch.layers``), which is the only size training feeds it; returns
    what puts the input-dependent pads back (for a model handed on to callers at any size)."""
    layers = {layer.name: layer for layer in arch.layers(model.arch_cfg)}
    swapped: list[tuple[nn.Module, nn.Module]] = []
    for name, module in model.conv_layers():
        if isinstance(module.pad, TFSamePad):
            (top, bottom), (left, right) = layers[name].pad
            swapped.append((module, module.pad))
            module.pad = nn.ZeroPad2d((left, right, top, bottom)) if top or bottom or left or right else nn.Identity()
    model._tf_pads = swapped  # type: ignore[attr-defined]  (restore_pads reads them back)

    def restore() -> None:
        restore_pads(model)

    return restore


def restore_pads(model: nn.Module) -> None:
    """Put back the input-dependent pads ``constant_pads`` replaced (nothing where it did not)."""
    for module, pad in getattr(model, "_tf_pads", ()):
        module.pad = pad
    if hasattr(model, "_tf_pads"):
        del model._tf_pads


class CompileClock:
    """Times the first step of a compiled step and says it once: ``torch.compile`` is lazy, so
    that step traces, lowers and compiles the forward graph and then, at ``backward()``, the
    backward graph. ``seconds`` is that first step's time (None before it, or when eager)."""

    def __init__(self, compiled: bool, log: Callable[[str], None] | None = None) -> None:
        self.pending = compiled
        self.seconds: float | None = None
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))

    @contextlib.contextmanager
    def first_step(self) -> Iterator[None]:
        if not self.pending:
            yield
            return
        from mobilenet.optimized import only_the_best_vector_isa_checked  # noqa: PLC0415 - inductor's config

        start = time.perf_counter()
        with only_the_best_vector_isa_checked():
            yield
        self.pending, self.seconds = False, time.perf_counter() - start
        self.log(f"train: compiled the training step in {self.seconds:.1f} s (its first step: forward and backward "
                 "graphs traced, lowered and compiled)")

"""How one training process runs: the signals that stop it after a step, autocast (bf16 only where
native), and what to say when the loss stops being a number."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mobilenet.cpu import CpuInfo, cpu_info
from mobilenet.errors import InputError, MobileNetError, option

if TYPE_CHECKING:
    from mobilenet.train.config import TrainConfig


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and exits after the current step."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # only rank 0 speaks
        self.requested = False
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:
            # A data-loader worker forked with this handler. A Ctrl-C (or a TERM sent to the process
            # group) reaches it too; it goes on serving the batches of the step being finished, and
            # ends as the loader shuts down (or on its own once the trainer is gone).
            return
        if self.requested:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def autocast_choice(mode: str, device: torch.device, cpu: CpuInfo | None = None) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for ``amp=mode`` on ``device`` (None: fp32) and why, in words.

    ``bf16`` is refused where it is not native, ``fp16`` off CUDA; ``auto`` is bf16 where native
    and fp32 elsewhere (fp16 is never chosen for the user: it needs a gradient scaler and can
    overflow). ``cpu``: the CPU to decide for (default: this one; tests describe others)."""
    if mode == "none":
        return None, f"fp32 ({option('amp', 'none')})"
    if mode == "fp16":
        if device.type != "cuda":
            raise InputError(f"fp16 autocast is for CUDA GPUs (on CPU use {option('amp', 'bf16')} where native, "
                             "or none)")
        return torch.float16, f"fp16 autocast with a gradient scaler ({option('amp', 'fp16')})"
    native, where = _native_bf16(device, cpu)
    if mode == "bf16" and not native:
        raise InputError(f"bf16 autocast needs native bf16 on this {device.type} ({where}); use "
                         f"{option('amp', 'none')} or auto")
    if not native:
        return None, f"fp32: no native bf16 on this {device.type} ({where}), where bf16 would be emulated many " \
                     "times slower"
    return torch.bfloat16, f"bf16 autocast (native on this {device.type}: {where})"


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 for ``amp="bf16"`` (refused where not native) or ``"auto"`` (where native), fp16 for
    ``"fp16"`` (CUDA), else None."""
    return autocast_choice(mode, device)[0]


def _native_bf16(device: torch.device, cpu: CpuInfo | None) -> tuple[bool, str]:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False), torch.cuda.get_device_name(device)
    # oneDNN "supports" bf16 on any AVX-512 CPU by emulating it, many times slower than fp32:
    # only native bf16 arithmetic counts (mobilenet.cpu, the one place that asks the CPU).
    cpu = cpu or cpu_info()
    return torch.backends.mkldnn.is_available() and cpu.native_bf16, cpu.summary()


class Diverged(MobileNetError):
    """The training loss became NaN or infinite through the updates; the message names what to change."""


def non_finite_loss(value: float, step: int, model: nn.Module, images: torch.Tensor, config: TrainConfig, *,
                    lr: float, autocast: bool) -> MobileNetError:
    """The error for a loss of ``value`` (nan, inf) with ``step`` optimizer steps done: the cause
    found by looking at the weights and the images, rather than guessed. Weights that were never
    finite, images that are not, and an overflow before any update are not a learning rate's fault."""
    where = f"the training loss became {value} at step {step + 1}"
    finite_weights = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if step == 0 and not finite_weights:
        source = (f"the weights it starts from ({option('weights', config.weights)})" if config.weights
                  else "the initial weights")
        return InputError(f"{where}, before any update: {source} hold NaN or infinite values; "
                          "convert or download them again")
    if not bool(torch.isfinite(images).all()):
        return InputError(f"{where}: the training images hold NaN or infinite values after preprocessing")
    if step == 0:
        advice = (f"run without bf16 autocast ({option('amp', 'none')})" if autocast
                  else "check the weights it starts from")
        return Diverged(f"{where}, before any update, with finite weights and images: the activations "
                        f"overflow; {advice}")
    hints = [f"lower {option('lr')} (the schedule was at {lr:.3g} of {option('lr', config.lr)})"]
    if config.clip_grad == 0:
        hints.append(f"add {option('clip_grad', 1)}")
    if config.warmup_epochs == 0:
        hints.append(f"add {option('warmup_epochs', 1)}")
    if config.optimizer == "rmsprop" and config.rmsprop_eps < 1e-3:
        hints.append(f"raise {option('rmsprop_eps')} ({config.rmsprop_eps:g}; TF's recipe uses 1.0)")
    return Diverged(f"{where}: training diverged; {', or '.join(hints)}")

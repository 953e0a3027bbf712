"""How one training process runs: the signals that stop it after a step, and bf16 autocast."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import torch

from mobilenet.cpu import cpu_info
from mobilenet.errors import InputError


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves and exits after the current step."""

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce  # only rank 0 speaks
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this step", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """bf16 for ``--amp bf16`` (refused where not native) or ``auto`` (where native), else None."""
    if mode == "none":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        # oneDNN "supports" bf16 on any AVX-512 CPU by emulating it, many times slower than fp32:
        # only native bf16 arithmetic counts (mobilenet.cpu, the one place that asks the CPU).
        supported = torch.backends.mkldnn.is_available() and cpu_info().native_bf16
    if mode == "bf16" and not supported:
        raise InputError(f"bf16 autocast needs native bf16 on this {device.type} ({cpu_info().summary()}); "
                         "use --amp none or auto")
    return torch.bfloat16 if supported else None

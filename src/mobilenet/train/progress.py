"""What a run shows while it trains: the loss since the last log point (``LossWindow``), folded
into the epoch's sums, and tqdm's progress bar on rank 0 (``ProgressBar``)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mobilenet.train.checkpoint import RunState


class LossWindow:
    """Training loss and images since the last log point; each log point folds them (and the
    time they took) into the epoch's sums."""

    def __init__(self) -> None:
        self._restart()

    def _restart(self) -> None:
        self.loss, self.images, self.start = 0.0, 0, time.perf_counter()

    def add(self, loss: float, images: int) -> None:
        self.loss += loss
        self.images += images

    def fold_into(self, state: RunState) -> None:
        state.epoch_time += time.perf_counter() - self.start
        state.epoch_loss += self.loss
        state.epoch_samples += self.images
        self._restart()


class ProgressBar:
    """tqdm's bar over an epoch's steps, on rank 0 and when asked for: loss, learning rate and
    images per second (all processes) at every log point."""

    def __init__(self, state: RunState, *, steps: int, epochs: int, world_size: int, show: bool) -> None:
        self.world_size = world_size
        self.bar = None
        if show:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, initial=state.step_in_epoch, unit="step",
                            desc=f"epoch {state.epoch + 1}/{epochs}", dynamic_ncols=True,
                            mininterval=1.0, leave=True, file=sys.stderr)

    def step(self, state: RunState, window: LossWindow, log_point: bool) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if log_point:
            elapsed = time.perf_counter() - window.start
            self.bar.set_postfix(loss=f"{window.loss / max(window.images, 1):.3f}",
                                 lr=f"{state.scheduler.get_last_lr()[0]:.2e}",
                                 img_s=f"{window.images * self.world_size / max(elapsed, 1e-9):.0f}")

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

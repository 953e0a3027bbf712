"""The one ``Predictor``, the contract every way of running MobileNet keeps (PyTorch and the
deploy runtimes alike): an NCHW float32 batch in (torch or numpy, already
preprocessed), float32 logits out (a torch tensor), and a ``description`` of what really runs."""

from __future__ import annotations

import numpy as np
import torch

from mobilenet.errors import InputError, MobileNetError


class PrecisionUnavailableError(InputError):
    """The precision asked for would not run as asked on this CPU (emulated, or silently
    replaced by another). The message says why and what to use instead."""


class PlatformUnsupportedError(MobileNetError):
    """The runtime exists only on another platform (Core ML predictions need macOS)."""


class Predictor:
    """NCHW float32 batch (torch or numpy) -> float32 logits (torch). Subclasses run one backend.

    ``precision`` and ``description`` say what actually runs, read back from the runtime where it
    can tell, never merely what was asked for. ``micro_batch``: the most images one runtime call
    gets; larger batches run in slices of this size (None: every batch whole). ``fixed_batch``:
    the batch a file was traced at or a program compiled for, which the predictor loops over
    (None: dynamic).
    """

    runtime: str = "?"
    precision: str = "fp32"
    description: str = ""
    micro_batch: int | None = None
    fixed_batch: int | None = None  # the file's or program's own batch size, where it has one (mobile files: 1)

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        step = self.micro_batch
        if step is None or len(x) <= step:
            return self._run(x)
        return torch.cat([self._run(x[i : i + step]) for i in range(0, len(x), step)])

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def native_input(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """``x``, a standard batch, as this runtime takes it natively (a file's own layout and
        dtype: ``mobilenet.deploy.runtimes.inputs``), converted once for a caller that feeds it
        many times; the predictor passes such a batch straight through. Default: ``x`` itself."""
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description})"


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A contiguous float32 numpy view of an NCHW input."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().float().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)

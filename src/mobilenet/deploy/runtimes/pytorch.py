"""PyTorch: the model through ``mobilenet.optimized``, the path users of the library get too
(oneDNN Graph's fused partitions on AVX-512 CPUs, else AOTInductor with the conv + bias + ReLU6
fused in oneDNN, else frozen TorchScript: ``optimized.default_backends``).

bf16 runs natively only where the CPU has bf16 arithmetic (AVX512-BF16, AMX-BF16): elsewhere
PyTorch emulates it, many times slower (``mobilenet.optimized.EMULATED_BF16_COST``), so
``not_native`` says so and a request is refused unless emulation is asked for. The rule is
``mobilenet.optimized``'s, applied to this module's view of the CPU.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PrecisionUnavailableError, Predictor
from mobilenet.threads import check_threads, torch_threads

PRECISIONS = ("fp32", "bf16")
# What PyTorch runs emulated where the CPU lacks it, when the caller asks for emulation.
EMULATES = ("bf16",)


def not_native(precision: str) -> str | None:
    """Why ``precision`` would not run natively on this CPU (None: it would)."""
    from mobilenet.optimized import not_native as torch_not_native  # noqa: PLC0415

    return torch_not_native(precision, "cpu", cpu_info())


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(
        self, model: MobileNetV1, precision: str = "fp32", threads: int | None = None, *, batch_size: int = 1,
        device: str | torch.device = "cpu",
    ) -> None:
        """Runs ``precision`` as given: ``make_predictor`` checks a request against ``PRECISIONS``
        and ``not_native`` first (emulated bf16 only when asked for, with its warning), once.
        ``batch_size``: what the graph is compiled for; other batches run in slices of it.
        ``device``: where it runs (cpu, cuda); the logits come back on the CPU."""
        from mobilenet.optimized import PRECISIONS as ON_DEVICE  # noqa: PLC0415
        from mobilenet.optimized import optimize  # noqa: PLC0415

        offered = ON_DEVICE.get(torch.device(device).type, PRECISIONS)
        if precision not in offered:
            raise PrecisionUnavailableError(f"PyTorch on {torch.device(device).type} runs {offered}, not {precision}")
        check_threads(threads)
        self.precision, self.threads = precision, threads
        # Compiled under the count it runs with (optimize keys its packages by it), set for the
        # build and for each call only (torch_threads): the process's count is the caller's.
        with warnings.catch_warnings(), torch_threads(threads):
            warnings.filterwarnings("ignore", message="running bf16 emulated")  # make_predictor warned once
            self.module = optimize(model, precision, batch_size, device, allow_emulation=True, cpu=cpu_info())
        self.description = self.module.description
        self.fixed_batch = self.module.batch_size  # (None where the backend runs any batch whole)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        with torch_threads(self.threads):
            return self.module(x).cpu()

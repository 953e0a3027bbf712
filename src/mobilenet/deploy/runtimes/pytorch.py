"""PyTorch: the folded model, channels_last, TorchScript-frozen (oneDNN conv + ReLU6 fused).

bf16 runs natively only where the CPU has bf16 arithmetic (AVX512-BF16, AMX-BF16): elsewhere
PyTorch emulates it, measured 24x slower than fp32 on a Zen 3 (652 ms against 27.6 ms at batch 1,
1.0-224), so ``not_native`` says so and a request is refused unless emulation is asked for.
"""

from __future__ import annotations

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PrecisionUnavailableError, Predictor

PRECISIONS = ("fp32", "bf16")
# What PyTorch runs emulated where the CPU lacks it, when the caller asks for emulation.
EMULATES = ("bf16",)
EMULATED_BF16_COST = "measured 24x slower than fp32 on an AVX2 Zen 3 (652 ms against 27.6 ms at batch 1, 1.0-224)"


def not_native(precision: str) -> str | None:
    """Why ``precision`` would not run natively on this CPU (None: it would)."""
    cpu = cpu_info()
    if precision == "bf16" and not cpu.native_bf16:
        return f"this CPU has no native bf16 ({cpu.summary()}): PyTorch would emulate it, {EMULATED_BF16_COST}"
    return None


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(self, model: MobileNetV1, precision: str = "fp32", threads: int | None = None) -> None:
        """Runs ``precision`` as given: ``make_predictor`` checks a request against ``PRECISIONS``
        and ``not_native`` first (emulated bf16 only when asked for), once."""
        from mobilenet.deploy.prepare import prepare_for_inference  # noqa: PLC0415

        if precision not in PRECISIONS:
            raise PrecisionUnavailableError(f"PyTorch runs {PRECISIONS}, not {precision}")
        native = not_native(precision) is None
        if threads:
            torch.set_num_threads(threads)  # process-wide: PyTorch has no per-module thread count
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.precision = precision
        self.module = prepare_for_inference(model, graph="jit", channels_last=True, dtype=dtype)
        kind = precision if native else "bf16 EMULATED (no native bf16 on this CPU; expect it many times slower)"
        self.description = (
            f"PyTorch {torch.__version__} {kind}, BatchNorm folded, channels_last, TorchScript frozen "
            f"(oneDNN conv+ReLU6 fused), {torch.get_num_threads()} threads"
        )

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        with torch.inference_mode():
            return self.module(x)

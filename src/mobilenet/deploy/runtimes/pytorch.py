"""PyTorch: the folded model, channels_last, TorchScript-frozen (oneDNN conv + ReLU6 fused).

bf16 runs only where the CPU has bf16 arithmetic (AVX512-BF16, AMX-BF16): elsewhere PyTorch
emulates it, measured 24x slower than fp32 on a Zen 3 (652 ms against 27.6 ms at batch 1,
1.0-224), so it is refused unless emulation is asked for explicitly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from mobilenet.cpu import cpu_info
from mobilenet.model import MobileNetV1
from mobilenet.predictor import PrecisionUnavailableError, Predictor

PRECISIONS = ("fp32", "bf16")
EMULATED_BF16_COST = "measured 24x slower than fp32 on an AVX2 Zen 3 (652 ms against 27.6 ms at batch 1, 1.0-224)"


def check_bf16(runtime: str, allow_emulation: bool) -> bool:
    """Whether bf16 runs natively here; raise ``PrecisionUnavailableError`` if not and emulation
    was not asked for. Returns False (with a warning) when emulation is allowed and needed."""
    cpu = cpu_info()
    if cpu.native_bf16:
        return True
    if not allow_emulation:
        raise PrecisionUnavailableError(
            f"this CPU has no native bf16 ({cpu.summary()}): {runtime} would emulate it, {EMULATED_BF16_COST}. "
            "Use fp32, or int8 (--runtime onnxruntime or openvino); to run emulated bf16 anyway, "
            "ask for it explicitly (allow_emulation=True, --allow-emulated-bf16)"
        )
    warnings.warn(f"bf16 is emulated on this CPU: {EMULATED_BF16_COST}", stacklevel=3)
    return False


class TorchPredictor(Predictor):
    runtime = "torch"

    def __init__(
        self, model: MobileNetV1, precision: str = "fp32", threads: int | None = None, *,
        allow_emulation: bool = False,
    ) -> None:
        from mobilenet.deploy.prepare import prepare_for_inference  # noqa: PLC0415

        if precision not in PRECISIONS:
            raise PrecisionUnavailableError(
                f"PyTorch runs {PRECISIONS}, not {precision}; for int8 use onnxruntime or openvino"
            )
        native = check_bf16("PyTorch", allow_emulation) if precision == "bf16" else True
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

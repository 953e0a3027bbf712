"""What every part of the benchmark builds the same way: inputs, predictors, timed calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from mobilenet.deploy.bench.report import BenchOptions
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.verify import photo_batch
from mobilenet.model import MobileNetV1
from mobilenet.predictor import Predictor
from mobilenet.preprocess import repeat_to_batch


def build_predictor(
    model: MobileNetV1, runtime: str, precision: str, options: BenchOptions, batch_size: int = 1
) -> Predictor:
    """``make_predictor`` with the benchmark's settings (``auto`` measures at ``batch_size``)."""
    return make_predictor(
        model, runtime, precision, preprocess=options.preprocess, calibration_images=options.calibration_images,
        threads=options.threads, batch_size=batch_size,
    )


def input_batch(model: MobileNetV1, batch_size: int, preprocess: Any) -> torch.Tensor:
    """Real photos, repeated to the batch size (content matters little for speed, but random
    noise can take different paths, e.g. through denormals, than real images do)."""
    return repeat_to_batch(photo_batch(model, preprocess=preprocess), batch_size)


def bound(predictor: Callable[[Any], Any], x: Any) -> Callable[[], Any]:
    return lambda: predictor(x)


def no_grad(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)

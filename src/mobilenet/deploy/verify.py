"""Verification: does a deployed model compute what the PyTorch model computes, on real photos?

Every export is checked here before it is kept (``mobilenet.deploy.export``; the web export too).
Tolerances are relative to the *spread* of the reference logits (the largest distance of a logit
from its image's mean logit), never absolute: an untrained network's logits are around 1e-11
(TF-slim initialisation), and an absolute 1e-3 would pass any file at all. The spread ignores a
common offset, which carries no information about the class.

The check refuses to judge a network whose logits do not depend on its input (every image gets
the same answer): there, any file that outputs that constant would pass. An untrained network
exported for its shape gets real signal from ``measure_batchnorm_statistics``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobilenet.errors import InputError, MobileNetError
from mobilenet.model import MobileNetV1

# Largest |difference| allowed, as a fraction of the reference logits' spread, per precision.
# fp32: a folded graph differs by rounding only (about 1e-6 of the spread here); 1e-4 still
# catches any real error (a wrong pad, a lost bias, one corrupted weight), which moves logits by
# a percent or more. bf16 keeps 8 bits of mantissa: 4.4% of the spread on the published 1.0-224
# weights over 28 layers, so 10%; a model that computes something else is off by 50% or more.
RELATIVE_TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 0.1}
# int8 is judged on the relative RMS error of the logits (quantization noise on the published
# 1.0-224 weights is 5-15% of the spread; a broken quantization is ~100%) and on top-1 where the
# reference decides clearly: every image whose top logit leads the next by more than a quarter of
# the spread must keep its class (near ties may flip under any rounding).
INT8_MAX_RELATIVE_RMS = 0.35
INT8_DECISIVE_MARGIN = 0.25
# Logits that vary across images by less than this fraction of their spread do not depend on the
# input: nothing can be verified on them.
MIN_INPUT_DEPENDENCE = 1e-3


class ExportMismatchError(MobileNetError, RuntimeError):
    """The exported model does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class Verification:
    """How a deployed model compared with PyTorch on real inputs."""

    runtime: str
    precision: str
    images: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    logit_spread: float
    relative_rms: float
    top1_agreement: float
    tolerance: float | None  # of max_abs_diff; None for int8 (judged on agreement and RMS)
    numerical: bool = True  # False: the file cannot run here (Core ML off macOS); checked structurally
    detail: str = ""

    @classmethod
    def structural(cls, runtime: str, precision: str, detail: str) -> Verification:
        nan = float("nan")
        return cls(runtime=runtime, precision=precision, images=0, batch_sizes=(), max_abs_diff=nan,
                   logit_spread=nan, relative_rms=nan, top1_agreement=nan, tolerance=None, numerical=False,
                   detail=detail)

    def summary(self) -> str:
        if not self.numerical:
            return (f"checked {self.runtime} {self.precision} structurally ({self.detail}); not run: "
                    f"{self.runtime} predictions need another platform")
        return (
            f"verified {self.runtime} {self.precision} on {self.images} real images at batch sizes "
            f"{', '.join(map(str, self.batch_sizes))}: max |logit difference| {self.max_abs_diff:.3g} "
            f"({self.max_abs_diff / self.logit_spread:.2g} of the logits' spread {self.logit_spread:.3g}), "
            f"relative RMS {self.relative_rms:.2g}, top-1 agreement {self.top1_agreement:.0%}"
        )


def photo_batch(model: MobileNetV1, paths: Sequence[Path] | None = None, preprocess: Any = None) -> torch.Tensor:
    """Real photos preprocessed for ``model`` (default: ``sample_photos()``, ``preprocess_for(model)``)."""
    from mobilenet.preprocess import preprocess_for, preprocess_images, sample_photos  # noqa: PLC0415

    paths = list(paths) if paths is not None else sample_photos()
    if not paths:
        raise InputError("no real images to verify the export with; pass some image files")
    pre = preprocess or preprocess_for(model)
    if tuple(pre.resolution) != tuple(model.arch_cfg.resolution):
        raise InputError(f"preprocessing resolution {pre.resolution} does not match the model's "
                         f"{model.arch_cfg.resolution}")
    return preprocess_images(paths, pre)


def measure_batchnorm_statistics(model: MobileNetV1, images: torch.Tensor) -> MobileNetV1:
    """Set every BatchNorm's running statistics to those of ``images`` (a cumulative average), as
    after training, and return ``model`` in eval mode: a fresh network's BatchNorms are the
    identity, its logits about 1e-11 and nearly the same for every image, so a verification
    would compare almost nothing."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        model.train()(images)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return model.eval()


def logit_spread(logits: torch.Tensor) -> float:
    """The largest distance of a logit from its row's mean: the scale tolerances are taken of."""
    return (logits - logits.mean(dim=1, keepdim=True)).abs().max().item()


def compare(
    expected: torch.Tensor, outputs: Sequence[torch.Tensor], *, runtime: str, precision: str,
    batch_sizes: tuple[int, ...],
) -> Verification:
    """Judge ``outputs`` (the same images run at several batch sizes) against ``expected``;
    raise ``ExportMismatchError`` if any is off. See the module docstring for the rules."""
    if precision not in (*RELATIVE_TOLERANCE, "int8"):
        raise InputError(f"cannot verify precision {precision!r}")
    for out in outputs:
        if out.shape != expected.shape:
            raise ExportMismatchError(f"{runtime} {precision} returned logits of shape {tuple(out.shape)}, "
                                      f"PyTorch {tuple(expected.shape)}")
        if not torch.isfinite(out).all():
            raise ExportMismatchError(f"{runtime} {precision} produced non-finite logits")
    spread = logit_spread(expected)
    variation = (expected - expected.mean(dim=0, keepdim=True)).abs().max().item()
    if spread == 0 or len(expected) < 2 or variation < MIN_INPUT_DEPENDENCE * spread:
        raise ExportMismatchError(
            "cannot verify: the model's logits do not depend on its input (an untrained network, or "
            "fewer than two images); verify with trained weights or BatchNorm statistics measured on data"
        )
    centred = expected - expected.mean(dim=1, keepdim=True)
    diff = max((out - expected).abs().max().item() for out in outputs)
    rms = max(((out - expected).pow(2).mean().sqrt() / centred.pow(2).mean().sqrt()).item() for out in outputs)
    agreement = min((out.argmax(1) == expected.argmax(1)).float().mean().item() for out in outputs)
    top2 = expected.topk(2, dim=1).values
    decisive = (top2[:, 0] - top2[:, 1]) > INT8_DECISIVE_MARGIN * spread
    flipped = max(int(((out.argmax(1) != expected.argmax(1)) & decisive).sum()) for out in outputs)
    tolerance = RELATIVE_TOLERANCE.get(precision)
    check = Verification(
        runtime=runtime, precision=precision, images=len(expected), batch_sizes=batch_sizes, max_abs_diff=diff,
        logit_spread=spread, relative_rms=rms, top1_agreement=agreement, tolerance=tolerance,
    )
    if tolerance is None:
        if flipped or rms > INT8_MAX_RELATIVE_RMS:
            raise ExportMismatchError(
                f"int8 model is further from PyTorch than quantization explains (needs relative RMS <= "
                f"{INT8_MAX_RELATIVE_RMS} and the same top-1 on every clearly decided image; {flipped} of "
                f"{int(decisive.sum())} changed): {check.summary()}"
            )
    elif diff > tolerance * spread:
        raise ExportMismatchError(
            f"exported model differs from PyTorch by more than {tolerance:g} of the logits' spread: {check.summary()}"
        )
    return check


def verify(
    model: MobileNetV1, predictor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, *,
    precision: str = "fp32", runtime: str | None = None, batch_sizes: tuple[int, ...] | None = None,
) -> Verification:
    """Run ``images`` through ``predictor`` one by one and as one batch (the dynamic batch
    dimension; ``batch_sizes=(1,)`` for a file with a fixed batch of 1) and ``compare`` with the
    unfolded PyTorch model."""
    with torch.no_grad():
        expected = model.eval()(images)
    sizes = batch_sizes or (1, len(images))
    outputs = []
    for size in sizes:
        outputs.append(torch.cat([predictor(images[i : i + size]) for i in range(0, len(images), size)]))
    return compare(expected, outputs, runtime=runtime or getattr(predictor, "runtime", "?"), precision=precision,
                   batch_sizes=sizes)

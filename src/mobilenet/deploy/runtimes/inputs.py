"""The input a file's runtime takes natively, and the ways to it.

Predictors take the standard NCHW float32 batch (``mobilenet.predictor``) and convert it for their
file: a transpose to the file's layout, a quantization to its uint8 or int8 input. At 0.25-224 that
conversion cost more than the network in LiteRT (0.88 ms a call for our .tflite against 0.66 ms for
TF's own, files that run at parity in the interpreter), so a predictor also takes its file's own
input as it is:

* ``predictor.native_input(x)`` converts a standard batch once, for a caller that feeds the same
  input many times (``bench`` times the runtime, not the conversion);
* ``predictor(x)`` passes a native batch straight through (told by its dtype and shape);
* ``predictor.image_transform(preprocess)`` makes the native input from an image directly: where a
  uint8 input's quantization maps each pixel value to itself (ours; TF's to half a level), the
  resized and cropped pixels are the input, with no normalisation, quantization or transpose.

A batch in neither form is refused with both shapes named (an NHWC tensor for an NCHW file, say).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mobilenet.errors import InputError
from mobilenet.predictor import as_numpy

LAYOUTS = ("nchw", "nhwc")


@dataclass(frozen=True)
class NativeInput:
    """A file's input: its declared ``shape`` (batch first), ``layout``, numpy ``dtype`` name and,
    for an integer input, its quantization (``q = round(x / scale) + zero_point``)."""

    shape: tuple[int, ...]
    layout: str
    dtype: str = "float32"
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        if len(self.shape) != 4 or self.layout not in LAYOUTS:
            raise InputError(f"expected a 4-D NCHW or NHWC image input, the file declares {self.layout} {self.shape}")

    @property
    def chw(self) -> tuple[int, int, int]:
        """(channels, height, width): the standard batch's image shape."""
        _, a, b, c = self.shape
        return (c, a, b) if self.layout == "nhwc" else (a, b, c)

    def describe(self) -> str:
        quantized = f" (scale {self.scale:.6g}, zero point {self.zero_point})" if self.dtype != "float32" else ""
        return f"{self.dtype} {self.layout.upper()} {self.shape}{quantized}"

    def is_native(self, x: torch.Tensor | np.ndarray) -> bool:
        dtype = str(x.dtype).removeprefix("torch.")
        return x.ndim == 4 and tuple(x.shape[1:]) == self.shape[1:] and dtype == self.dtype

    def convert(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``x`` as the file takes it: as it is if native already, converted from the standard NCHW
        float32 batch otherwise; anything else is an ``InputError`` naming both shapes."""
        if self._native_or_refused(x):
            return np.ascontiguousarray(x.numpy() if isinstance(x, torch.Tensor) else x)
        batch = as_numpy(x)
        if self.layout == "nhwc":
            batch = batch.transpose(0, 2, 3, 1)
        return self._quantize(batch)

    def fixed_batches(self, x: torch.Tensor | np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """``x`` in slices of the file's fixed batch (``shape[0]``), each ``convert``ed just before
        its call, the last padded with zeros; with each slice's count of real images. Converted a
        slice at a time, not the whole batch first: a LiteRT int8 batch of 8 at 0.3-240 took 12.05
        ms so, and 14.34 ms converted whole first (the same work; 1 thread, Zen 4,
        ``benchmarks/bench_fixed_batch_order.py``, docs/latency.md)."""
        self._native_or_refused(x)  # refused whole, so that the message names the caller's batch
        batch = self.shape[0]
        for start in range(0, len(x), batch):
            value = self.convert(x[start : start + batch])
            count = len(value)
            if count < batch:
                value = np.concatenate([value, np.zeros((batch - count, *value.shape[1:]), value.dtype)])
            yield value, count

    def _native_or_refused(self, x: torch.Tensor | np.ndarray) -> bool:
        """Whether ``x`` is the file's own input (else a standard batch); a batch in neither form
        is refused."""
        if self.is_native(x):
            return True
        if x.ndim != 4 or tuple(x.shape[1:]) != self.chw:
            raise self._refusal(x)
        return False

    def image_transform(self, preprocess: Any) -> Callable[[Any], np.ndarray]:
        """PIL image -> this file's input for one image (no batch axis), made by ``preprocess``
        (a ``mobilenet.preprocess.Preprocess``) itself; see the module docstring."""
        if self.dtype == "uint8" and self.pixels_are_input(preprocess):
            return _PixelInput(preprocess, self.layout)
        return _ConvertedInput(preprocess, self)

    def pixels_are_input(self, preprocess: Any) -> bool:
        """Whether q = pixel value: one mean and std for every channel, scale 1 / (255 std) and
        zero point 255 mean (to half a level: TF's (x - 127.5) / 127.5 files have 1/128 and 128)."""
        mean, std = set(preprocess.mean), set(preprocess.std)
        if self.dtype != "uint8" or preprocess.channels != 3 or len(mean) != 1 or len(std) != 1 or not self.scale:
            return False
        (m,), (s,) = mean, std
        return abs(self.scale * 255 * s - 1) < 0.01 and abs(self.zero_point - 255 * m) <= 0.5

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return np.ascontiguousarray(x, dtype=np.float32)
        if not self.scale:
            raise InputError(f"the file's {self.dtype} input has no quantization parameters")
        info = np.iinfo(self.dtype)
        return np.clip(np.round(x / self.scale) + self.zero_point, info.min, info.max).astype(self.dtype, order="C")

    def _refusal(self, x: torch.Tensor | np.ndarray) -> InputError:
        c, h, w = self.chw
        got = tuple(int(n) for n in x.shape)
        dtype = str(x.dtype).removeprefix("torch.")
        layout = {(c, h, w): "NCHW ", (h, w, c): "NHWC "}.get(got[1:], "") if len(got) == 4 else ""
        standard = f"NCHW float32 (N, {c}, {h}, {w})"
        own = f"(N, {', '.join(map(str, self.shape[1:]))})"
        takes = standard if (self.layout, self.dtype) == ("nchw", "float32") else \
            f"{standard}, or its own {self.dtype} {self.layout.upper()} {own}"
        return InputError(f"input of shape {got} ({layout}{dtype}) does not fit: this file takes {takes}")


class _ConvertedInput:
    """The standard preprocessing, converted to the file's input (picklable, for loader workers)."""

    def __init__(self, preprocess: Any, native: NativeInput) -> None:
        self.standard, self.native = preprocess.eval_transform(), native

    def __call__(self, image: Any) -> np.ndarray:
        return self.native.convert(self.standard(image)[None])[0]


class _PixelInput:
    """Resized and cropped uint8 pixels in the file's layout: the input of a pixel-valued file
    (picklable, for loader workers)."""

    def __init__(self, preprocess: Any, layout: str) -> None:
        self.preprocess, self.layout = preprocess, layout

    def __call__(self, image: Any) -> np.ndarray:
        from mobilenet.preprocess import to_rgb  # noqa: PLC0415

        pixels = np.asarray(self.preprocess.crop_and_resize(to_rgb(image)), dtype=np.uint8)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1) if self.layout == "nchw" else pixels)

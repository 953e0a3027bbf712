"""How each publisher feeds its weights: the one owner of publisher preprocessing.

The registry (published entries) and the converters (``mobilenet convert`` of the same files)
both ask here, so a file gets the same recipe whichever way it is read.

=============  ============================================================================
publisher      evaluation recipe
=============  ============================================================================
TF, Keras      TF-slim's: JPEGs decoded as TF decodes them, (x - 127.5) / 127.5, the central
               87.5 %, TF1's bilinear resize without antialiasing; a uint8 TFLite input's own
               scale and zero point
timm           mean = std = 0.5, shorter side to size / crop, bicubic; crop 0.875 (timm's
               default ``crop_pct``), 0.9 for ``mobilenetv1_125`` (its pretrained cfg)
transformers   ``MobileNetV1ImageProcessor``: shorter side to size + 32, central crop, bilinear
=============  ============================================================================
"""

from __future__ import annotations

from mobilenet.preprocess import Preprocess

# timm's pretrained cfgs (timm/models/efficientnet.py, ``mobilenetv1_*.ra4_e3600_r224_in1k``):
# crop_pct by width multiplier; any other α takes timm's default.
TIMM_CROP: dict[float, float] = {1.25: 0.9}
TIMM_DEFAULT_CROP = 0.875


def _side(resolution: int | tuple[int, int]) -> int:
    return resolution if isinstance(resolution, int) else resolution[0]


def tf_preprocess(
    resolution: int | tuple[int, int], input_quantization: tuple[float, int] | None = None
) -> Preprocess:
    """TF-slim's evaluation (TF's and Keras' weights). ``input_quantization`` (scale, zero
    point) of a uint8 model's input: q means (q - zero) * scale, i.e. mean = zero / 255 and
    std = 1 / (255 * scale) on the [0, 1] scale."""
    if input_quantization is None:
        return Preprocess(resolution=resolution, resize="tf", decoder="tf")
    scale, zero = input_quantization
    return Preprocess(resolution=resolution, mean=(zero / 255,) * 3, std=(1 / (255 * scale),) * 3, resize="tf",
                      decoder="tf")


def timm_preprocess(resolution: int | tuple[int, int], alpha: float) -> Preprocess:
    """timm's eval transform for ``mobilenetv1`` at width ``alpha``."""
    crop = TIMM_CROP.get(float(alpha), TIMM_DEFAULT_CROP)
    return Preprocess(resolution=resolution, crop_fraction=crop, interpolation="bicubic", crop_mode="resize_shorter")


def transformers_preprocess(resolution: int | tuple[int, int]) -> Preprocess:
    """``MobileNetV1ImageProcessor`` as Google's checkpoints configure it (its centre crop starts
    at half the margin rounded down, where torchvision's rounds)."""
    side = _side(resolution)
    return Preprocess(resolution=resolution, crop_fraction=side / (side + 32), crop_mode="resize_shorter",
                      crop_offset="floor")


def publisher_preprocess(
    fmt: str, resolution: int | tuple[int, int], *, alpha: float = 1.0,
    input_quantization: tuple[float, int] | None = None,
) -> Preprocess:
    """The recipe for weights read from a ``fmt`` file (one of ``convert.FORMATS``, or a TFLite
    variant such as ``tflite-uint8``): timm's, transformers', else TF-slim's."""
    if fmt == "timm":
        return timm_preprocess(resolution, alpha)
    if fmt == "transformers":
        return transformers_preprocess(resolution)
    return tf_preprocess(resolution, input_quantization)

"""JPEG decoding as TensorFlow does it, for the weights TF and Keras published.

``tf.io.decode_jpeg`` decodes with libjpeg's fast integer IDCT (``dct_method=""``, i.e.
``JDCT_IFAST``) and fancy upsampling; Pillow uses the accurate integer IDCT. On ImageNet
validation JPEGs 73 % of the input values then differ, by up to 24 levels, which moves top-1 of
TF's models by up to 0.9 point: the published accuracies were measured on TF's pixels.
libjpeg-turbo through ``simplejpeg`` with ``fastdct=True, fastupsample=False`` gives TF's pixels
bit for bit (tests/test_preprocess.py holds a reference decoded by TensorFlow itself).

``decode_like_tf(path)`` returns None for anything that is not a JPEG, and for a JPEG libjpeg-turbo
cannot turn into RGB (CMYK): Pillow then decodes it (``preprocess.load_image``), as it does every
file that cannot be read, with the same error messages.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"
# EXIF orientation -> the transposition that shows the image upright (as PIL.ImageOps.exif_transpose).
ORIENTATIONS: dict[int, tuple[Image.Transpose, ...]] = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,), 4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,), 6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}
EXIF_ORIENTATION = 0x0112


def decode_like_tf(path: str | os.PathLike[str], max_pixels: int = 0) -> Image.Image | None:
    """The JPEG at ``path`` as 8-bit RGB decoded the way ``tf.io.decode_jpeg(channels=3)`` does,
    with its EXIF rotation applied (which TF leaves to the caller); None when the file is not a
    JPEG, cannot be read, declares more than ``max_pixels`` (0: no limit) or is not one
    libjpeg-turbo decodes to RGB, so that ``load_image`` reports or decodes it."""
    import simplejpeg  # noqa: PLC0415 - a core dependency, imported where it is used

    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        if max_pixels and height * width > max_pixels:
            return None
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=False)
    except ValueError:  # truncated, corrupt, or CMYK / YCCK (no RGB conversion in libjpeg-turbo)
        return None
    image = Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")
    for step in ORIENTATIONS.get(_orientation(data), ()):
        image = image.transpose(step)
    return image


def _orientation(data: bytes) -> int:
    """The EXIF orientation a JPEG declares (1, upright, when none), read without decoding it."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            return int(header.getexif().get(EXIF_ORIENTATION, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1

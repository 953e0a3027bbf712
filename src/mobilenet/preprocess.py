"""Reading images and turning them into the tensors a set of weights expects.

``load_image(path)`` opens anything Pillow can read and returns an 8-bit RGB ``PIL.Image``:
EXIF rotation applied, transparency composited onto white, palette / grayscale / CMYK converted,
16-bit and float images scaled to 8 bits. A file that cannot be decoded raises ``ImageError``
(a ``ValueError``) naming the file and the reason.

``Preprocess`` is the evaluation recipe that travels with a set of weights::

    pre = Preprocess(resolution=224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=0.875)
    x = pre.eval_transform()(load_image("cat.jpg"))   # float32 (3, 224, 224)
    pre = preprocess_for(model)   # the model's published recipe, else Preprocess.default(resolution)

``crop_mode="central_fraction"`` (the default) is TF-slim's evaluation: keep the central
``crop_fraction`` of each side, then resize to the resolution (the aspect ratio is not kept,
exactly as TF did when it measured the published accuracy). ``crop_mode="resize_shorter"`` is
timm's, torchvision's and transformers': resize the shorter side to ``resolution / crop_fraction``
(truncated, as they do), then take a central ``resolution`` crop. Where the margin around that crop
is odd, the publishers place it differently, and ``crop_offset`` says whose rule: ``"round"``
(default) is torchvision's ``CenterCrop``, which timm's eval transform uses, ``int(round(margin /
2))`` with Python's half-to-even rounding; ``"floor"`` is transformers' ``center_crop``, ``margin //
2`` (``crop_offset`` does not touch TF's ``central_fraction`` box: ``crop_box``). Mean and std are
on the [0, 1] scale, so TF's ``(x - 127.5) / 127.5`` is mean = std = 0.5.

``resize="tf"`` resizes exactly as TF-slim's evaluation did when TensorFlow measured its published
accuracy: TF1's ``resize_bilinear`` (align_corners=False, no half-pixel centres, **no
antialiasing**) on float pixels, not rounded back to uint8 (``tf_resize_bilinear``).
``resize="pillow"`` (the default for other weights) uses Pillow's filters, which antialias when
they shrink: at 128 px that moves TF's inputs by about 4 uint8 levels and costs TF's models
points of top-1 (docs/weights.md). ``decoder="tf"`` decodes JPEGs as ``tf.io.decode_jpeg`` does
(fast integer IDCT, ``mobilenet.jpeg``), where Pillow's accurate IDCT gives other pixels; read
files with ``Preprocess.open_image`` for the decoder to apply.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mobilenet.errors import InputError, option

Interpolation = Literal["bilinear", "bicubic", "nearest"]
CropMode = Literal["central_fraction", "resize_shorter"]
Resize = Literal["pillow", "tf"]
Decoder = Literal["pillow", "tf"]
CropOffset = Literal["round", "floor"]

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
CROP_MODES: tuple[str, ...] = ("central_fraction", "resize_shorter")
RESIZES: tuple[str, ...] = ("pillow", "tf")
DECODERS: tuple[str, ...] = ("pillow", "tf")
CROP_OFFSETS: tuple[str, ...] = ("round", "floor")
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Formats whose 16-bit samples Pillow opens in its 32-bit mode "I", not "I;16": PGM with a maxval
# above 255 (Pillow rescales it to 0-65535), and 16-bit grayscale PNG in older Pillow releases.
# Neither format can hold anything wider, so "I" from them means 16 bits.
_SIXTEEN_BIT_AS_I = ("PPM", "PNG")


class ImageError(InputError):
    """An image file that cannot be read or decoded."""


def max_image_pixels() -> int:
    """Images declaring more pixels than this are refused before decoding: Pillow's own
    decompression-bomb threshold (about 89 megapixels, 0.25 GB as RGB). A 20 KB PNG can declare
    13000×13000 pixels and take 1.7 GB to decode; nothing this project classifies is that large."""
    return int(Image.MAX_IMAGE_PIXELS or 0)


def _oversized(path: str | os.PathLike[str], size: tuple[int, int] | None) -> ImageError | None:
    """The error for an image declaring too many pixels (``size`` None: Pillow refused it itself)."""
    limit = max_image_pixels()
    if not limit or (size is not None and size[0] * size[1] <= limit):
        return None
    declared = f"{size[0]}×{size[1]} pixels" if size else f"more than {2 * limit:,} pixels"
    return ImageError(f"{os.fspath(path)}: declares {declared}, more than the {limit:,} an image may have here "
                      "(a decompression bomb, or a picture to scale down first); not decoded")


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB, whatever its mode; raise ``ImageError`` if it cannot be read
    or declares more than ``max_image_pixels()`` (checked from the header, before decoding)."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit: we refuse from 1x, with our message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as img:
            error = _oversized(path, img.size)
            if error is not None:
                raise error
            img.load()  # decode now, so a truncated file fails here and not inside a transform
            if img.mode == "I" and img.format in _SIXTEEN_BIT_AS_I:
                # The file declares 16-bit samples, which Pillow hands over in its 32-bit mode: say
                # so by the mode, so that a dark picture is not taken for 8-bit data (to_rgb).
                img = img.convert("I;16")
            img = ImageOps.exif_transpose(img) or img
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{os.fspath(path)}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{os.fspath(path)}: not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise _oversized(path, None) from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow reports truncated or corrupt data as OSError (sometimes SyntaxError or ValueError).
        raise ImageError(f"{os.fspath(path)}: cannot decode image ({err})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode. Transparent areas become white, not whatever colour the
    invisible pixels happen to hold; 16-bit and 32-bit images are scaled down, not clipped."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _high_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if values.size and values.max() <= 1.0 else 255.0
    elif img.mode.startswith("I;16"):
        # The mode declares 16 bits (16-bit PNG, TIFF, PGM...): 65535 is white, however dark the
        # picture. Judging by the brightest pixel would turn a dark photo into a grey one.
        top = 65535.0
    else:
        # Pillow's 32-bit "I" declares no range: convert("I") of 8-bit data keeps 0-255 (and a
        # 32-bit TIFF saved from it), 16-bit files reach 65535; the values are all there is to go by.
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    scaled = np.clip(values * (255.0 / top), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


@dataclass(frozen=True)
class Preprocess:
    """How a set of weights wants its input. See the module docstring for the two crop modes."""

    resolution: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = TF_MEAN
    std: tuple[float, ...] = TF_STD
    crop_fraction: float = 0.875
    interpolation: Interpolation = "bilinear"
    crop_mode: CropMode = "central_fraction"
    resize: Resize = "pillow"
    decoder: Decoder = "pillow"
    crop_offset: CropOffset = "round"

    def __post_init__(self) -> None:
        res = self.resolution
        if isinstance(res, int) and not isinstance(res, bool):
            res = (res, res)
        res = tuple(res)
        if len(res) != 2 or not all(isinstance(s, int) and s >= 1 for s in res):
            raise InputError(f"resolution must be an int or (height, width), got {self.resolution!r}")
        object.__setattr__(self, "resolution", res)
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) not in (1, 3):
                raise InputError(f"{name} must have 3 values (R, G, B) or 1 (grayscale), got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if len(self.mean) != len(self.std):
            raise InputError(f"mean and std must have the same length, got {self.mean!r} and {self.std!r}")
        if any(s <= 0 for s in self.std):
            raise InputError(f"std must be > 0, got {self.std!r}")
        if not 0 < self.crop_fraction <= 1:
            raise InputError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {tuple(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.crop_mode not in CROP_MODES:
            raise InputError(f"crop_mode must be one of {CROP_MODES}, got {self.crop_mode!r}")
        if self.resize not in RESIZES:
            raise InputError(f"{option('resize')} must be one of {RESIZES}, got {self.resize!r}")
        if self.decoder not in DECODERS:
            raise InputError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise InputError(f"crop_offset must be one of {CROP_OFFSETS} (torchvision's and timm's centre crop, "
                             f"or transformers'), got {self.crop_offset!r}")
        if self.resize == "tf" and self.interpolation != "bilinear":
            raise InputError(f"resize='tf' is TF1's bilinear resize; interpolation must be 'bilinear', "
                             f"got {self.interpolation!r}")

    @classmethod
    def default(cls, resolution: int | tuple[int, int]) -> Preprocess:
        """The recipe for weights that publish none (a fresh model, a file without preprocessing
        metadata): TF's (x - 127.5) / 127.5, the central 87.5 %, Pillow's bilinear resize."""
        return cls(resolution=resolution)

    def replace(self, **changes: Any) -> Preprocess:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Preprocess(**values)

    def with_resize(self, resize: Resize | None) -> Preprocess:
        """This recipe with another resize (None: unchanged). ``tf`` is TF1's bilinear resize, so
        it brings bilinear interpolation with it."""
        if resize is None:
            return self
        return self.replace(resize=resize, **({"interpolation": "bilinear"} if resize == "tf" else {}))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["resolution"], d["mean"], d["std"] = list(self.resolution), list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown preprocessing settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def open_image(self, path: str | os.PathLike[str]) -> Image.Image:
        """The image at ``path`` as 8-bit RGB, decoded as these weights' publisher decoded it:
        ``decoder="tf"`` takes TF's JPEG decoder (``jpeg.decode_like_tf``), anything else (and every
        other file format) Pillow's ``load_image``, which also reports what cannot be read."""
        if self.decoder == "tf":
            from mobilenet.jpeg import decode_like_tf  # noqa: PLC0415

            image = decode_like_tf(path, max_pixels=max_image_pixels())
            if image is not None:
                return image
        return load_image(path)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the ``central_fraction`` crop, as ``tf.image.central_crop``
        computes it: ``int((size - size * fraction) / 2)`` off each side, start rounded down."""
        top = int((height - height * self.crop_fraction) / 2)
        left = int((width - width * self.crop_fraction) / 2)
        return left, top, width - left, height - top

    def shorter_side_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a ``resize_shorter`` recipe resizes a ``width`` x ``height`` image to, as
        timm, torchvision and transformers compute it: the shorter side becomes
        ``floor(resolution / crop_fraction)`` (timm's ``math.floor(img_size / crop_pct)``: 248 at
        224 / 0.9, not 249) and the longer side ``int(shorter * long / short)``, both truncated;
        never smaller than the crop that follows."""
        height_out, width_out = self.resolution
        # A hair of tolerance: 192 / (192 / 224) is 223.99999999999997 in floats, and means 224.
        short = math.floor(max(height_out, width_out) / self.crop_fraction + 1e-6)
        if width <= height:
            size = (short, int(short * height / width))
        else:
            size = (int(short * width / height), short)
        return max(width_out, size[0]), max(height_out, size[1])

    def centre_offset(self, size: int, crop: int) -> int:
        """Where a ``resize_shorter`` recipe's central ``crop`` starts along a side of ``size``
        pixels, by the publisher's rule (``crop_offset``): torchvision's ``CenterCrop`` (timm)
        computes ``int(round((size - crop) / 2.0))``, rounding half to even, so an odd margin of
        159 starts at 80; transformers' ``center_crop`` truncates, 79. The one place either rule
        is computed, for Pillow's resize and TF's alike."""
        if self.crop_offset == "floor":
            return (size - crop) // 2
        return round((size - crop) / 2)  # Python 3 rounds half to even, as torchvision does

    def crop_and_resize(self, img: Image.Image) -> Image.Image:
        """The geometric part of ``eval_transform`` with Pillow: an RGB image of exactly
        ``resolution`` (``resize="tf"`` rounds TF's float result to uint8 here; ``eval_transform``
        does not round)."""
        if self.resize == "tf":
            return Image.fromarray(np.clip(np.rint(self.tf_crop_and_resize(img)), 0, 255).astype(np.uint8))
        height, width = self.resolution
        resample = INTERPOLATIONS[self.interpolation]
        if self.crop_mode == "central_fraction":
            img = img.crop(self.crop_box(img.width, img.height))
            return img.resize((width, height), resample)
        resized = img.resize(self.shorter_side_size(img.width, img.height), resample)
        left, top = self.centre_offset(resized.width, width), self.centre_offset(resized.height, height)
        return resized.crop((left, top, left + width, top + height))

    def tf_crop_and_resize(self, img: Image.Image) -> np.ndarray:
        """The geometric part with TF's resize: float32 HWC on the 0-255 scale, not rounded."""
        height, width = self.resolution
        pixels = np.asarray(img, dtype=np.uint8)
        if self.crop_mode == "central_fraction":
            left, top, right, bottom = self.crop_box(img.width, img.height)
            return tf_resize_bilinear(pixels[top:bottom, left:right], (height, width))
        size = self.shorter_side_size(img.width, img.height)[::-1]
        resized = tf_resize_bilinear(pixels, size)
        top, left = self.centre_offset(size[0], height), self.centre_offset(size[1], width)
        return resized[top:top + height, left:left + width]

    @property
    def channels(self) -> int:
        """3 for RGB; 1 for models trained on grayscale (one mean and std value)."""
        return len(self.mean)

    def normalize(self, array: np.ndarray) -> torch.Tensor:
        """uint8 HWC (or NHWC) -> float32 CHW (or NCHW), scaled by mean and std. An RGB array fed
        to a grayscale recipe is converted with ITU-R 601 luma, as Pillow's "L" mode does."""
        x = torch.from_numpy(np.array(array, dtype=np.float32)).div_(255.0)
        if self.channels == 1 and x.shape[-1] == 3:
            x = (x @ torch.tensor([0.299, 0.587, 0.114])).unsqueeze(-1)
        x = (x - torch.tensor(self.mean)) / torch.tensor(self.std)
        return x.movedim(-1, -3).contiguous()

    def eval_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """PIL image (any mode) -> float32 (3, H, W) tensor, ready for the model."""
        return _EvalTransform(self)


class _EvalTransform:
    """A picklable callable (DataLoader workers need to pickle it), printing as its recipe."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if self.preprocess.resize == "tf":
            return self.preprocess.normalize(self.preprocess.tf_crop_and_resize(to_rgb(img)))
        img = self.preprocess.crop_and_resize(to_rgb(img))
        return self.preprocess.normalize(np.asarray(img, dtype=np.uint8))

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocess})"


def _tf_resize_axis(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # TF1 (align_corners=False, half_pixel_centers=False): source = output index * (in / out), in float32.
    scale = np.float32(size_in) / np.float32(size_out)
    source = np.arange(size_out, dtype=np.float32) * scale
    low = np.floor(source)
    high = np.minimum(np.ceil(source), size_in - 1).astype(np.int64)
    return low.astype(np.int64), high, (source - low).astype(np.float32)


def tf_resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """TF1's ``tf.image.resize_bilinear(images, size, align_corners=False)``: each output pixel
    samples the input at ``index * (in / out)`` and interpolates its two neighbours per axis
    (no half-pixel centres, no antialiasing however much it shrinks). HWC in, float32 HWC out."""
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = size
    if height < 1 or width < 1 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError(f"cannot resize a {image.shape[1]}x{image.shape[0]} image to {width}x{height}")
    x = image.astype(np.float32)
    y0, y1, dy = _tf_resize_axis(x.shape[0], height)
    x0, x1, dx = _tf_resize_axis(x.shape[1], width)
    dx = dx[None, :, None]
    top = x[y0][:, x0] + (x[y0][:, x1] - x[y0][:, x0]) * dx
    bottom = x[y1][:, x0] + (x[y1][:, x1] - x[y1][:, x0]) * dx
    return top + (bottom - top) * dy[:, None, None]


def preprocess_for(model: Any) -> Preprocess:
    """The preprocessing a model's weights were published with (``model.pretrained_cfg``), or
    ``Preprocess.default`` at the model's resolution for a model without published weights."""
    published = getattr(getattr(model, "pretrained_cfg", None), "preprocess", None)
    return published if published is not None else Preprocess.default(model.arch_cfg.resolution)


def preprocess_images(paths: Sequence[str | os.PathLike[str]], preprocess: Preprocess) -> torch.Tensor:
    """Load and preprocess a list of files into one NCHW batch (raises ``ImageError`` on a bad file)."""
    transform = preprocess.eval_transform()
    return torch.stack([transform(preprocess.open_image(p)) for p in paths])


def sample_photos() -> list[Path]:
    """Real photos that ship inside installed packages: matplotlib's Grace Hopper always, and
    scikit-image's cat, coffee cup and astronaut where it is installed (the ``[photos]`` extra).
    What ``mobilenet classify`` shows with no IMAGE, and what exports are verified on."""
    import matplotlib  # noqa: PLC0415 - a core dependency, but only needed here

    photos = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import skimage  # noqa: PLC0415

        data = Path(skimage.__file__).parent / "data"
        photos += [data / name for name in ("chelsea.png", "coffee.png", "astronaut.png")]
    except ImportError:
        pass
    return [p for p in photos if p.is_file()]


def repeat_to_batch(images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``images`` (N, C, H, W) repeated in order and cut to exactly ``batch_size`` (contiguous):
    real photos at any batch size, for timing and verification."""
    reps = -(-batch_size // len(images))
    return images.repeat(reps, 1, 1, 1)[:batch_size].contiguous()

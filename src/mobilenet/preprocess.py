"""Reading images and turning them into the tensors a set of weights expects.

``load_image(path)`` opens anything Pillow can read and returns an 8-bit RGB ``PIL.Image``:
EXIF rotation applied, transparency composited onto white, palette / grayscale / CMYK converted,
16-bit and float images scaled to 8 bits. A file that cannot be decoded raises ``ImageError``
(a ``ValueError``) naming the file and the reason.

``Preprocess`` is the evaluation recipe that travels with a set of weights::

    pre = Preprocess(resolution=224, mean=(0.5,) * 3, std=(0.5,) * 3, crop_fraction=0.875)
    x = pre.eval_transform()(load_image("cat.jpg"))   # float32 (3, 224, 224)

``crop_mode="central_fraction"`` (the default) is TF-slim's evaluation: keep the central
``crop_fraction`` of each side, then resize to the resolution (the aspect ratio is not kept,
exactly as TF did when it measured the published accuracy). ``crop_mode="resize_shorter"`` is
timm's and torchvision's: resize the shorter side to ``resolution / crop_fraction``, then take a
central ``resolution`` crop. Mean and std are on the [0, 1] scale, so TF's ``(x - 127.5) / 127.5``
is mean = std = 0.5.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mobilenet.errors import InputError

Interpolation = Literal["bilinear", "bicubic", "nearest"]
CropMode = Literal["central_fraction", "resize_shorter"]

INTERPOLATIONS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}
CROP_MODES: tuple[str, ...] = ("central_fraction", "resize_shorter")
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageError(InputError):
    """An image file that cannot be read or decoded."""


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB, whatever its mode; raise ``ImageError`` if it cannot be read."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and not inside a transform
            img = ImageOps.exif_transpose(img) or img
            return to_rgb(img)
    except FileNotFoundError:
        raise ImageError(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{os.fspath(path)}: is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageError(f"{os.fspath(path)}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
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
    else:
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

    def replace(self, **changes: Any) -> Preprocess:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Preprocess(**values)

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

    def crop_and_resize(self, img: Image.Image) -> Image.Image:
        """The geometric part of ``eval_transform``: an RGB image of exactly ``resolution``."""
        height, width = self.resolution
        resample = INTERPOLATIONS[self.interpolation]
        if self.crop_mode == "central_fraction":
            # tf.image.central_crop: the same fraction off every side, start rounded down.
            top = int((img.height - img.height * self.crop_fraction) / 2)
            left = int((img.width - img.width * self.crop_fraction) / 2)
            img = img.crop((left, top, img.width - left, img.height - top))
            return img.resize((width, height), resample)
        scale = max(height, width) / self.crop_fraction / min(img.width, img.height)
        resized = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))), resample)
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return resized.crop((left, top, left + width, top + height))

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

    def train_transform(
        self, scale: tuple[float, float] = (0.08, 1.0), hflip: bool = True
    ) -> Callable[[Image.Image], torch.Tensor]:
        """Random-resized crop (Inception-style, as TF-slim trained MobileNet), optional horizontal
        flip, then the same normalisation as evaluation."""
        from torchvision.transforms import v2  # torchvision: only needed for training

        steps: list[Any] = [
            v2.Lambda(to_rgb),
            v2.RandomResizedCrop(self.resolution, scale=scale, interpolation=INTERPOLATIONS[self.interpolation]),
        ]
        if hflip:
            steps.append(v2.RandomHorizontalFlip())
        steps.append(_ToNormalizedTensor(self))
        return v2.Compose(steps)


class _ToNormalizedTensor:
    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.preprocess.normalize(np.asarray(img, dtype=np.uint8))


class _EvalTransform:
    """A picklable callable (DataLoader workers need to pickle it), printing as its recipe."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.preprocess.crop_and_resize(to_rgb(img))
        return self.preprocess.normalize(np.asarray(img, dtype=np.uint8))

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocess})"


def preprocess_images(paths: Sequence[str | os.PathLike[str]], preprocess: Preprocess) -> torch.Tensor:
    """Load and preprocess a list of files into one NCHW batch (raises ``ImageError`` on a bad file)."""
    transform = preprocess.eval_transform()
    return torch.stack([transform(load_image(p)) for p in paths])

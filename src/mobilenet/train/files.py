"""Training data: ``build_splits`` for the named datasets (Fashion-MNIST, CIFAR-10) or images from
disk, an ImageFolder tree (``DIR/train``, ``DIR/val``) or ``file,label`` CSVs, read by
``mobilenet.datasets`` with its bad-file policy (``stop``: the first unreadable image ends the run
with its path before anything is lost; ``skip``: it is left out of its batch, a warning names it,
and the epoch's metrics count it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.transforms.v2 import functional as TF

from mobilenet.datasets import collate_skipping_bad, open_dataset
from mobilenet.errors import InputError
from mobilenet.train.data import (
    NAMED_DATASETS,
    Splits,
    TensorSamples,
    Transform,
    load_cifar10,
    load_fashion_mnist,
)

# TF's evaluation of photos: the central 87.5% of each side, resized to the resolution.
PHOTO_CROP_FRACTION = 0.875


class ToTensorThen:
    """PIL image -> uint8 C×H×W tensor -> a ``Transform`` (which works on tensors)."""

    def __init__(self, transform: Transform) -> None:
        self.transform = transform

    def __call__(self, image: Any) -> Any:
        return self.transform(TF.pil_to_tensor(image))


def split_paths(data: str, val_data: str | None) -> tuple[Path, Path]:
    """(train, val) locations: DIR/train and DIR/val for a folder tree, or two CSVs."""
    root = Path(data)
    if not root.exists():
        raise InputError(
            f"{root}: no such file or directory; --data takes fashion-mnist, cifar10, a folder with "
            "train/ and val/ class folders, or a file,label CSV (with --val-data)"
        )
    if root.is_dir():
        if val_data is not None:
            return root, Path(val_data)
        train, val = root / "train", root / "val"
        for split in (train, val):
            if not split.is_dir():
                raise InputError(f"{root} has no {split.name}/ folder (expected {root}/train/<class>/<images> "
                                 f"and {root}/val/<class>/<images>)")
        return train, val
    if val_data is None:
        raise InputError(f"{root} is a CSV: name the validation CSV with --val-data")
    return root, Path(val_data)


def count_classes(data: str, val_data: str | None = None) -> int:
    """Number of classes of a folder tree or CSV (without decoding any image)."""
    train, _ = split_paths(data, val_data)
    return len(open_dataset(train, bad_files="skip").classes)


def build_file_splits(config: Any, resolution: tuple[int, int], channels: int) -> Splits:
    train_path, val_path = split_paths(config.data, config.val_data)
    num_classes = config.arch.get("num_classes")
    common = {"resolution": resolution, "channels": channels}
    train_tf = Transform(train=True, min_crop=config.min_crop, hflip=config.hflip, **common)
    eval_tf = Transform(train=False, crop_fraction=PHOTO_CROP_FRACTION, **common)
    train = open_dataset(train_path, ToTensorThen(train_tf), bad_files=config.bad_files, num_classes=num_classes)
    # The validation labels must mean what the training labels mean: same class list.
    classes = train.classes if Path(train_path).is_dir() else None
    # Evaluation is Preprocess's own transform on the decoded image, as `mobilenet evaluate` runs it.
    val = open_dataset(val_path, eval_tf.preprocess.eval_transform(), classes=classes, bad_files=config.bad_files,
                       num_classes=num_classes)
    if len(train.classes) > config.arch["num_classes"]:
        raise InputError(f"{train_path} has {len(train.classes)} classes but the model has "
                         f"{config.arch['num_classes']} outputs; pass --classes {len(train.classes)}")
    if config.train_subset is not None:
        train.samples = train.samples[: config.train_subset]
    if config.val_subset is not None:
        val.samples = val.samples[: config.val_subset]
    return Splits(train, val, tuple(train.classes), 3, eval_tf, collate=collate_skipping_bad)


def build_splits(config: Any, resolution: tuple[int, int], channels: int) -> Splits:
    """Training and validation datasets for ``config.data`` (a name, a folder tree or a CSV)."""
    name = config.data.lower()
    common = {"resolution": tuple(resolution), "channels": channels}
    if name in NAMED_DATASETS:
        loader = load_fashion_mnist if name == "fashion-mnist" else load_cifar10
        train = loader("train", config.data_root).subset(config.train_subset)
        val = loader("val", config.data_root).subset(config.val_subset)
        train_tf = Transform(train=True, min_crop=config.min_crop, hflip=config.hflip, **common)
        eval_tf = Transform(train=False, **common)
        return Splits(TensorSamples(train, train_tf), TensorSamples(val, eval_tf), train.classes,
                      int(train.images.shape[1]), eval_tf)
    return build_file_splits(config, tuple(resolution), channels)

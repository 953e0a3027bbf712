"""The data of a run: ``build_splits`` for the named datasets (Fashion-MNIST, CIFAR-10) or images
from disk, an ImageFolder tree (``DIR/train``, ``DIR/val``) or ``file,label`` CSVs, read by
``mobilenet.datasets`` with its bad-file policy (``stop``: the first unreadable image ends the run
with its path before anything is lost; ``skip``: it is left out of its batch, a warning names it,
and the epoch's metrics count it)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from torchvision.transforms.v2 import functional as TF

from mobilenet.datasets import open_dataset
from mobilenet.errors import InputError, option
from mobilenet.train.config import TrainConfig
from mobilenet.train.data import (
    NAMED_DATASETS,
    NamedDataset,
    Splits,
    TensorSamples,
    TrainingAugment,
    evaluation_preprocess,
    evaluation_tensor,
)


class ToTensorThen:
    """PIL image -> uint8 C×H×W tensor -> a ``TrainingAugment`` (which works on tensors)."""

    def __init__(self, augment: TrainingAugment) -> None:
        self.augment = augment

    def __call__(self, image: Any) -> Any:
        return self.augment(TF.pil_to_tensor(image))


def split_paths(data: str, val_data: str | None) -> tuple[Path, Path]:
    """(train, val) locations: DIR/train and DIR/val for a folder tree, or two CSVs. With
    ``val_data``, a folder ``data`` still trains on its train/ folder when it has one (else it is
    the class root itself), so naming the validation data elsewhere never turns DIR's split
    folders into classes."""
    root = Path(data)
    if not root.exists():
        raise InputError(
            f"{root}: no such file or directory; {option('data')} takes fashion-mnist, cifar10, a folder with "
            f"train/ and val/ class folders, or a file,label CSV (with {option('val_data')})"
        )
    if root.is_dir():
        train, val = root / "train", root / "val"
        if val_data is not None:
            return (train if train.is_dir() else root), Path(val_data)
        for split in (train, val):
            if not split.is_dir():
                raise InputError(f"{root} has no {split.name}/ folder (expected {root}/train/<class>/<images> "
                                 f"and {root}/val/<class>/<images>, or name the validation data with "
                                 f"{option('val_data')})")
        return train, val
    if val_data is None:
        raise InputError(f"{root} is a CSV: name the validation CSV with {option('val_data')}")
    return root, Path(val_data)


def named_dataset(data: str, val_data: str | None = None) -> NamedDataset | None:
    """The named dataset ``data`` is (None: files). A named dataset brings its own validation
    split, so ``val_data`` beside it is refused rather than silently ignored."""
    named = NAMED_DATASETS.get(data.lower())
    if named is not None and val_data is not None:
        raise InputError(f"{option('val_data')} {val_data}: {data} has its own validation split; drop "
                         f"{option('val_data')}, or give your own training data in {option('data')}")
    return named


def check_class_count(source: str | Path, classes: int, num_classes: int) -> None:
    """Refuse data with more classes than the model has outputs, before anything trains: a label
    past the last output would end the run in the loss (an IndexError on CPU, a device assert on
    CUDA)."""
    if classes > num_classes:
        raise InputError(f"{source} has {classes} classes but the model has {num_classes} outputs; pass "
                         f"{option('num_classes', classes)}")


def count_classes(data: str, val_data: str | None = None) -> int:
    """Number of classes of ``data``: a named dataset's, or a folder tree's or CSV's (read without
    decoding any image)."""
    named = named_dataset(data, val_data)
    if named is not None:
        return len(named.classes)
    train, _ = split_paths(data, val_data)
    return len(open_dataset(train, bad_files="skip").classes)


def native_channels(data: str) -> int:
    """The input channels a model trained from scratch on ``data`` gets: a named dataset's own
    (Fashion-MNIST's grey fed as one channel), three for images from disk."""
    named = NAMED_DATASETS.get(data.lower())
    return named.channels if named is not None else 3


def build_splits(config: TrainConfig) -> Splits:
    """Training and validation data for ``config.data`` (a name, a folder tree or a CSV), made for
    the input of ``config.arch``."""
    named = named_dataset(config.data, config.val_data)
    return _named_splits(config, named) if named is not None else _file_splits(config)


def _named_splits(config: TrainConfig, named: NamedDataset) -> Splits:
    arch = config.arch
    check_class_count(config.data, len(named.classes), arch.num_classes)
    train = named.load("train", config.data_root).subset(config.train_subset)
    val = named.load("val", config.data_root).subset(config.val_subset)
    augment = TrainingAugment(arch.resolution, arch.in_channels, config.min_crop, config.hflip)
    # Small images are evaluated whole.
    preprocess = evaluation_preprocess(arch.resolution, arch.in_channels, crop_fraction=1.0)
    return Splits(TensorSamples(train, augment), TensorSamples(val, partial(evaluation_tensor, preprocess)),
                  train.classes, preprocess)


def _file_splits(config: TrainConfig) -> Splits:
    arch = config.arch
    train_path, val_path = split_paths(config.data, config.val_data)
    augment = TrainingAugment(arch.resolution, arch.in_channels, config.min_crop, config.hflip)
    preprocess = evaluation_preprocess(arch.resolution, arch.in_channels)  # TF's central crop of photos
    train = open_dataset(train_path, ToTensorThen(augment), bad_files=config.bad_files, num_classes=arch.num_classes)
    check_class_count(train_path, len(train.classes), arch.num_classes)
    # The validation labels must mean what the training labels mean: the validation set always
    # takes the training set's class list. A training CSV's classes are the names "0".."N-1", so a
    # validation folder "10" is class 10 (left to itself, a folder tree would number its folders in
    # text order: "0", "1", "10", "11", "2", ...); a folder naming no training class is an error.
    # Evaluation is Preprocess's own transform on the decoded image, as `mobilenet evaluate` runs it.
    val = open_dataset(val_path, preprocess.eval_transform(), classes=train.classes, bad_files=config.bad_files,
                       num_classes=arch.num_classes)
    if config.train_subset is not None:
        train.samples = train.samples[: config.train_subset]
    if config.val_subset is not None:
        val.samples = val.samples[: config.val_subset]
    return Splits(train, val, tuple(train.classes), preprocess)

"""Training data: named datasets, augmentation and the sampler that makes runs resumable.

Three ideas keep a run reproducible under interruption and any number of processes:

* The order of an epoch is one permutation of the whole dataset, seeded by (seed, epoch), cut into
  global batches of ``batch_size``. Each process takes its own contiguous slice of every global
  batch (``GlobalBatchSampler``), so the union over processes is the same batch a single process
  would see, and a mid-epoch resume just skips the global batches already done. (PyTorch's
  ``DistributedSampler`` interleaves samples across ranks and always starts an epoch from the
  beginning, which gives neither property.)
* The random augmentation of a sample is seeded by (seed, epoch, index) (``SeededSamples``): the
  same image gets the same crop whichever process or worker loads it, before or after a resume.
* Images are kept as uint8 tensors and augmented on tensors, which is fast enough at 32×32 that
  two cores spend their time in the model, not in PIL.

Grayscale data (Fashion-MNIST) is fed either natively (``in_channels=1``) or replicated to three
identical channels (``in_channels=3``), which is what pretrained RGB weights need.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from mobilenet.errors import InputError, option
from mobilenet.preprocess import TF_MEAN, TF_STD, Preprocess

# The Debian package `dataset-fashion-mnist` installs the four IDX files here.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def default_workers() -> int:
    """Data-loader processes when not given: one per two cores, at most 4, so that decoding and
    augmentation overlap the steps without taking the cores the steps compute on."""
    return min(4, max(1, (os.cpu_count() or 1) // 2))


def default_data_root() -> Path:
    return Path(os.environ.get("MOBILENET_DATA", Path.home() / ".cache" / "mobilenet" / "datasets"))


# --------------------------------------------------------------------------------------------
# Reading the data


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """An IDX file (the MNIST format; gzip or plain) as a uint8 tensor of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise InputError(f"cannot read IDX file {path}: {err}") from err
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise InputError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(torch.tensor(shape).prod())
    if len(data) != expected:
        raise InputError(f"{path} is truncated or corrupt: {len(data)} bytes, the header promises {expected}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


@dataclass
class ImageTensors:
    """A whole split in memory: images (N, C, H, W) uint8 and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise InputError(f"{len(self.images)} images but {len(self.labels)} labels")

    def subset(self, n: int | None) -> ImageTensors:
        return self if n is None else ImageTensors(self.images[:n], self.labels[:n], self.classes)


def load_fashion_mnist(split: str, root: str | os.PathLike[str] | None = None) -> ImageTensors:
    """Fashion-MNIST (60,000 train / 10,000 test, 28×28 grey, 10 classes).

    Read from ``root`` if it holds the IDX files, else from the Debian package
    (``apt-get install dataset-fashion-mnist``), else downloaded by torchvision for users online.
    """
    images_name, labels_name = FASHION_MNIST_FILES[split]
    for folder in [Path(root) for root in (root,) if root] + [FASHION_MNIST_DIR]:
        if (folder / images_name).is_file() and (folder / labels_name).is_file():
            images = read_idx(folder / images_name)
            labels = read_idx(folder / labels_name).long()
            return ImageTensors(images.unsqueeze(1), labels, FASHION_MNIST_CLASSES)
    from torchvision.datasets import FashionMNIST

    target = Path(root) if root else default_data_root()
    try:
        ds = FashionMNIST(str(target), train=split == "train", download=True)
    except Exception as err:
        raise InputError(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR} and the download into {target} failed ({err}); "
            f"install the Debian package `dataset-fashion-mnist` or give {option('data_root')}, a folder with the "
            "IDX .gz files"
        ) from err
    return ImageTensors(ds.data.unsqueeze(1).clone(), ds.targets.long().clone(), FASHION_MNIST_CLASSES)


def load_cifar10(split: str, root: str | os.PathLike[str] | None = None) -> ImageTensors:
    """CIFAR-10 (50,000 train / 10,000 test, 32×32 RGB), through torchvision's downloader."""
    from torchvision.datasets import CIFAR10

    target = Path(root) if root else default_data_root()
    try:
        ds = CIFAR10(str(target), train=split == "train", download=True)
    except Exception as err:
        raise InputError(f"CIFAR-10 is not in {target} and could not be downloaded ({err})") from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageTensors(images, torch.tensor(ds.targets, dtype=torch.long), CIFAR10_CLASSES)


@dataclass(frozen=True)
class NamedDataset:
    """A dataset ``--data`` names: its reader (split, root), classes and channels."""

    load: Callable[[str, str | os.PathLike[str] | None], ImageTensors]
    classes: tuple[str, ...]
    channels: int


NAMED_DATASETS = {
    "fashion-mnist": NamedDataset(load_fashion_mnist, FASHION_MNIST_CLASSES, channels=1),
    "cifar10": NamedDataset(load_cifar10, CIFAR10_CLASSES, channels=3),
}


# --------------------------------------------------------------------------------------------
# Augmentation (training) and evaluation


@dataclass(frozen=True)
class TrainingAugment:
    """The training split's random augmentation of one sample, uint8 C×H×W in, float C×H×W out:
    a random-resized crop covering at least ``min_crop`` of the area (aspect 3/4–4/3), a
    horizontal flip, the channels matched to the model, and TF's scaling to [-1, 1].

    Evaluation is ``mobilenet.preprocess.Preprocess`` itself (``evaluation_tensor``): the recipe
    stored in the checkpoint, so validation during training and ``mobilenet evaluate`` on the
    checkpoint compute the same tensors and the same top-1."""

    resolution: tuple[int, int]
    channels: int
    min_crop: float = 0.35
    hflip: bool = True

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        top, left, h, w = T.RandomResizedCrop.get_params(image, scale=(self.min_crop, 1.0), ratio=(3 / 4, 4 / 3))
        image = TF.resized_crop(image, top, left, h, w, list(self.resolution),
                                interpolation=InterpolationMode.BILINEAR, antialias=True)
        if self.hflip and torch.rand(()) < 0.5:
            image = TF.horizontal_flip(image)
        image = _match_channels(image, self.channels)
        x = image.float().div_(255)
        mean = torch.tensor(TF_MEAN[: self.channels]).view(-1, 1, 1)
        std = torch.tensor(TF_STD[: self.channels]).view(-1, 1, 1)
        return x.sub_(mean).div_(std)


def evaluation_preprocess(resolution: tuple[int, int], channels: int, **settings: Any) -> Preprocess:
    """The evaluation recipe of a run: TF's scaling for ``channels``, ``Preprocess``'s defaults
    (TF's central 87.5% crop of photos) unless ``settings`` say otherwise."""
    return Preprocess(resolution=tuple(resolution), mean=TF_MEAN[:channels], std=TF_STD[:channels], **settings)


def evaluation_tensor(preprocess: Preprocess, image: torch.Tensor) -> torch.Tensor:
    """``preprocess``'s evaluation of one uint8 C×H×W image, through Pillow as ``mobilenet
    evaluate`` reads a file. Grey data for a grey model stays one channel through the same crop,
    resize and normalisation (Pillow's RGB→luma round trip would move a few values by one float32
    ulp)."""
    array = image.permute(1, 2, 0).numpy()
    if array.shape[-1] == 1 and preprocess.channels == 1:
        resized = preprocess.crop_and_resize(Image.fromarray(array[..., 0], mode="L"))
        return preprocess.normalize(np.asarray(resized, dtype=np.uint8)[..., None])
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return preprocess.eval_transform()(Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB"))


def _match_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1:
        return image.expand(channels, -1, -1)  # grey replicated to RGB
    if channels == 1:
        return TF.rgb_to_grayscale(image[:3])
    raise InputError(f"cannot feed {image.shape[0]}-channel images to a {channels}-channel model")


# --------------------------------------------------------------------------------------------
# Datasets and sampling


class TensorSamples(Dataset):
    """An in-memory split with a transform: item i is (transform(images[i]), labels[i])."""

    def __init__(self, data: ImageTensors, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.data = data
        self.transform = transform
        self.classes = data.classes

    def __len__(self) -> int:
        return len(self.data.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.data.images[index]), int(self.data.labels[index])


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` draws its random augmentation from a
    generator seeded by (seed, epoch, index): independent of process, worker and resume point."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        # The CPU generator directly: torch.manual_seed also seeds every accelerator and costs
        # more than the augmentation itself. The caller's stream is restored afterwards.
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(_mix(self.seed, epoch, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(saved)


def _mix(*values: int) -> int:
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """This process's micro-batches of ``(epoch, index)`` keys for one epoch.

    The epoch is a permutation seeded by (seed, epoch), cut into ``len // global_batch`` global
    batches (the incomplete last one is dropped, as in training with drop_last). Global batch k
    is split into ``world_size × accumulation`` contiguous micro-batches; rank r gets micro-batches
    ``r·accumulation … (r+1)·accumulation − 1`` of it. ``set_epoch(epoch, start_step)`` skips the
    first ``start_step`` global batches: the mid-epoch resume.
    """

    def __init__(self, num_samples: int, global_batch: int, *, rank: int = 0, world_size: int = 1,
                 accumulation: int = 1, seed: int = 0) -> None:
        if global_batch % (world_size * accumulation):
            raise InputError(f"global batch {global_batch} is not divisible by {world_size} × {accumulation}")
        if num_samples < global_batch:
            raise InputError(
                f"the training set has {num_samples} samples, fewer than one batch of {global_batch}; "
                f"use a smaller {option('batch_size')} or more data"
            )
        self.num_samples = num_samples
        self.global_batch = global_batch
        self.rank = rank
        self.world_size = world_size
        self.accumulation = accumulation
        self.micro = global_batch // (world_size * accumulation)
        self.seed = seed
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch = epoch
        self.start_step = start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(self.num_samples, generator=g).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accumulation):
                i = self.rank * self.accumulation + a
                yield [(self.epoch, j) for j in batch[i * self.micro:(i + 1) * self.micro]]


# --------------------------------------------------------------------------------------------
# The splits of a run


@dataclass
class Splits:
    """Training and validation data of a run, and the evaluation recipe validation uses."""

    train: Dataset
    val: Dataset
    classes: tuple[str, ...]
    preprocess: Preprocess

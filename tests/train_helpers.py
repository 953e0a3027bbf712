"""Shared pieces of the training tests: a small slice of real Fashion-MNIST (from the Debian
package `dataset-fashion-mnist` where installed, else IDX files generated here), tiny configs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from mobilenet.train import TrainConfig
from mobilenet.train.data import FASHION_MNIST_DIR, FASHION_MNIST_FILES

TINY_ARCH = {"alpha": 0.25, "resolution": [32, 32], "num_classes": 10, "in_channels": 1, "dropout": 0.0}


def write_idx(path: Path, array: torch.Tensor) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.to(torch.uint8).numpy().tobytes())


def fashion_mnist_root(tmp_dir: Path) -> str | None:
    """None when the real files are installed; otherwise a folder of generated IDX files in the
    same format, whose classes are learnable (a bright bar at a class-dependent row)."""
    if all((FASHION_MNIST_DIR / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair):
        return None
    g = torch.Generator().manual_seed(0)
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        n = 512 if split == "train" else 256
        labels = torch.arange(n) % 10
        images = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        write_idx(tmp_dir / images_name, images)
        write_idx(tmp_dir / labels_name, labels)
    return str(tmp_dir)


def tiny_config(tmp_dir: Path, data_root: str | None, **changes) -> TrainConfig:
    settings = {
        "data": "fashion-mnist", "data_root": data_root, "arch": dict(TINY_ARCH), "train_subset": 128,
        "val_subset": 64, "epochs": 2, "batch_size": 32, "lr": 0.02, "output": str(tmp_dir / "run"),
        "progress": False, "deterministic": True,
    }
    settings.update(changes)
    return TrainConfig(**settings)

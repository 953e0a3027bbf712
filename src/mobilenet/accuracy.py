"""Top-1 / top-5 accuracy of any predictor over an image dataset, in one process or sharded.

    from mobilenet.accuracy import accuracy, torch_predictor
    result = accuracy(torch_predictor(model), dataset, batch_size=50)
    # {"top1": 71.2, "top5": 90.1, "images": 1300, "skipped": 0}   (percent)

``predict`` is any callable from an NCHW float32 batch to logits (N, classes): a
``mobilenet.predictor.Predictor`` (``torch_predictor`` for the PyTorch model as it is, or one from
``mobilenet.deploy.runtime``) or a plain function. Labels index the logits' columns; for TF's
1001-class outputs wrap the predictor in ``drop_background`` so that column i is ImageNet class i.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank evaluates every ``WORLD_SIZE``-th image from its
rank on (disjoint shards, together exactly the dataset: no padding, no duplicates, unlike
``DistributedSampler``), the counts are summed with ``all_reduce``, every rank gets the total and
only rank 0 draws the progress bar. A process group is created (gloo on CPU, NCCL when the
predictor runs on CUDA) if none exists, and destroyed again afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import numbers
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from mobilenet.arch import ArchConfig
from mobilenet.datasets import make_loader
from mobilenet.errors import InputError, option
from mobilenet.limits import check_memory
from mobilenet.predictor import Predictor
from mobilenet.threads import check_threads, torch_threads

Predict = Callable[[torch.Tensor], torch.Tensor]


class EagerPredictor(Predictor):
    """The PyTorch model as it is (eager, fp32, BatchNorm as built), without autograd, in eval
    mode, on ``device`` and ``threads`` (None: as the process is set); logits come back on the
    CPU. The reference every other runtime is compared with. ``arch`` lets ``accuracy`` refuse a
    batch that cannot fit before allocating it.

    The model stays the caller's: each call runs it in eval mode and puts every module's own mode
    back after (a model evaluated mid-training keeps training with BatchNorm learning), and sets
    the thread count for the call only. A model elsewhere than ``device`` is copied there once,
    when the predictor is made, never moved."""

    runtime = "torch"
    precision = "fp32"

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", threads: int | None = None) -> None:
        self.device = check_device(device)  # an InputError before anything is copied
        check_threads(threads)
        self.threads = threads
        # Moving the caller's model would move it for them (their optimizer's state, their next
        # batch's device): one on another device is copied here instead, costing its size once,
        # which only a GPU run pays. One already on the device runs as it is: copying it per
        # predictor would cost as much for nothing, and the predictor sees its weights as they are.
        if any(not _on(tensor, self.device) for tensor in itertools.chain(model.parameters(), model.buffers())):
            model = copy.deepcopy(model).to(self.device)
        self.model = model
        # Modes are switched per call, so overlapping calls would put back each other's eval mode.
        self._lock = threading.Lock()
        self.description = f"torch fp32 on {device}"
        self.arch: ArchConfig | None = getattr(model, "arch_cfg", None)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        with self._lock, torch_threads(self.threads), modes_kept(self.model), torch.inference_mode():
            return self.model.eval()(torch.as_tensor(x).to(self.device)).float().cpu()


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    """Whether ``tensor`` lives on ``device`` (``cuda`` without an index: the current GPU)."""
    if tensor.device.type != device.type:
        return False
    if device.type == "cuda" and device.index is None:
        return tensor.device.index == torch.cuda.current_device()
    return device.index is None or tensor.device.index == device.index


@contextlib.contextmanager
def modes_kept(model: torch.nn.Module) -> Iterator[None]:
    """Every module of ``model`` in its own training mode again after the block, whatever the block
    set (``model.train(mode)`` would give all of them one mode: a frozen BatchNorm would thaw)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def torch_predictor(
    model: torch.nn.Module, device: str | torch.device = "cpu", threads: int | None = None,
) -> EagerPredictor:
    """``EagerPredictor(model, device, threads)``: the model run in eval mode, on ``device``; the
    caller's model keeps its mode and device."""
    return EagerPredictor(model, device, threads)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or one line saying why it cannot be used here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{option('device')} must be cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{option('device', device)}: no CUDA GPU is available to PyTorch here; use "
                         f"{option('device', 'cpu')}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"{option('device', device)}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"{option('device')} must be cpu, cuda or cuda:N, got {device!r}")
    return dev


class BackgroundDropped(Predictor):
    """Logits over ``classes`` real classes: where those are ImageNet's 1,000, an output of 1001
    (TF's, "background" first) loses its first column; an output of exactly ``classes`` passes
    unchanged; any other width is an ``InputError`` (``mismatch`` adds what to do)."""

    def __init__(self, inner: Predict, classes: int = 1000, mismatch: str = "") -> None:
        self.inner, self.classes, self.mismatch = inner, classes, mismatch
        self.runtime = getattr(inner, "runtime", "?")
        self.precision = getattr(inner, "precision", "fp32")
        self.description = getattr(inner, "description", "")
        self.arch = getattr(inner, "arch", None)

    def _run(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        logits = self.inner(x)
        if logits.shape[1] == self.classes:
            return logits
        tf_imagenet = self.classes == 1000
        if tf_imagenet and logits.shape[1] == 1001:
            return logits[:, 1:]
        expected = f"{self.classes} logits" + (" (or 1001, TF's background first)" if tf_imagenet else "")
        raise InputError(f"expected {expected}, got {logits.shape[1]}{self.mismatch}")


def drop_background(predict: Predict, classes: int = 1000, mismatch: str = "") -> BackgroundDropped:
    """``predict``'s logits over the ``classes`` real classes (TF's background column removed)."""
    return BackgroundDropped(predict, classes, mismatch)


def _distributed_context(device_hint: str) -> tuple[int, int, bool]:
    """(rank, world size, whether we created the process group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device_hint == "cuda" and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), True


def accuracy(
    predict: Predict,
    data: Dataset | DataLoader,
    *,
    batch_size: int = 50,
    num_workers: int = 0,
    progress: bool = True,
    device: str = "cpu",
    description: str = "evaluate",
    loss: bool = False,
) -> dict[str, Any]:
    """Top-1 and top-5 accuracy (percent) of ``predict`` on ``data`` (a dataset of (image, label),
    or a DataLoader yielding (images, labels)). Unreadable images that the dataset skipped (and
    listed files that do not exist) are counted in ``skipped``; when none could be read at all
    there is no accuracy, and ``InputError`` says so. A predictor from ``torch_predictor`` carries
    its architecture, and a ``batch_size`` that cannot fit in memory is refused up front.
    ``loss=True`` adds ``loss``, the mean cross-entropy of the logits (training's validation loss)."""
    check_batching(batch_size, num_workers)
    arch = getattr(predict, "arch", None)
    if isinstance(arch, ArchConfig):  # a batch that cannot fit is refused before it is allocated
        check_memory(arch, batch_size, mode="inference", device=device)
    rank, world, created = _distributed_context(device)
    try:
        if isinstance(data, DataLoader):
            if world > 1:
                raise InputError("under torchrun pass a dataset, not a DataLoader, so it can be sharded")
            loader, expected = data, len(data.dataset)  # type: ignore[arg-type]
        else:
            shard = Subset(data, range(rank, len(data), world)) if world > 1 else data
            loader, expected = make_loader(shard, batch_size, num_workers=num_workers), len(shard)
        counts = torch.zeros(5, dtype=torch.float64)  # top-1 hits, top-5 hits, images, images expected, loss
        counts[3] = expected
        bar = tqdm(total=expected, desc=description, unit="img", file=sys.stderr,
                   disable=not progress or rank != 0, dynamic_ncols=True)
        with bar:
            for images, labels in loader:
                if len(labels):
                    logits = predict(images)
                    k = min(5, logits.shape[1])
                    top = logits.topk(k, dim=1).indices.cpu()
                    hits = top == labels.view(-1, 1)
                    counts[0] += hits[:, 0].sum().item()
                    counts[1] += hits.any(dim=1).sum().item()
                    counts[2] += len(labels)
                    if loss:
                        counts[4] += F.cross_entropy(logits.float(), labels, reduction="sum").item()
                bar.update(len(labels))  # skipped (unreadable) files leave the bar short of its total
        if world > 1:  # (on the predictor's device: NCCL reduces GPU tensors only)
            counts = counts.to(device)
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
            counts = counts.cpu()
    finally:
        if created:
            dist.destroy_process_group()
    seen = int(counts[2])
    if not seen:
        # No accuracy exists: a NaN would print as invalid JSON and exit 0. Every rank sees the
        # same summed counts, so under torchrun all of them stop here together.
        raise InputError(f"none of the {int(counts[3])} images could be read (each unreadable file is named "
                         "above); nothing to evaluate")
    result = {
        "top1": 100.0 * counts[0].item() / seen,
        "top5": 100.0 * counts[1].item() / seen,
        "images": seen,
        "skipped": int(counts[3]) - seen,
    }
    if loss:
        result["loss"] = counts[4].item() / seen
    return result


def check_batching(batch_size: int, workers: int, workers_name: str = "num_workers") -> None:
    """The one check of how ``accuracy`` loads the data (``evaluate`` makes it before reading any
    weights): ``batch_size`` an int >= 1, ``workers`` (named ``workers_name`` to the caller) an int
    >= 0, where the DataLoader would raise its own traceback after the weights are loaded."""
    if not _is_int(batch_size) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be >= 1, got {batch_size!r}")
    if not _is_int(workers) or workers < 0:
        raise InputError(f"{option(workers_name)} must be an int >= 0 (worker processes loading images; 0 loads "
                         f"them in this process), got {workers!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_main_process() -> bool:
    """True outside torchrun and on rank 0 inside it (the rank that prints)."""
    return int(os.environ.get("RANK", "0")) == 0

"""The training configuration: every choice of a run, as one flat dataclass.

``arch`` is the ``ArchConfig`` of the network to train; it becomes a dict only inside files:
``config.json`` in the run directory holds ``to_dict()`` whole, and a checkpoint stores the
architecture once, as its own ``"arch"``, beside the other settings (``"config"``). A run can
be resumed, compared and reproduced from its files alone.

Defaults are the paper's recipe as TF-slim ran it (Howard et al. 2017, Sec. 3.2): RMSprop with
decay 0.9, momentum 0.9 and epsilon 1.0, weight decay 4e-5 that skips depthwise filters, BatchNorm
and biases, little augmentation (random-resized crops no smaller than 35% of the image, flips), no
label smoothing, learning rate 0.045 × 0.94 every 2.5 epochs (for a global batch of 96; scale it
with the batch).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError

ARCH_FIELDS = frozenset(f.name for f in fields(ArchConfig))
OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")
AMP_MODES = ("none", "bf16", "auto")
BAD_FILE_POLICIES = ("skip", "stop")
# What a resumed run may change: settings that do not change the optimisation. (``micro_batch``
# changes what BatchNorm sees, and may have to when the recorded one does not fit the processes.)
RESUME_OVERRIDES = ("epochs", "num_workers", "progress", "log_every", "device", "micro_batch")


@dataclass
class TrainConfig:
    # Data. ``data`` is a dataset name (fashion-mnist, cifar10), an ImageFolder tree with train/ and
    # val/, or a `file,label` CSV (then ``val_data`` names the validation CSV).
    data: str = "fashion-mnist"
    val_data: str | None = None
    data_root: str | None = None  # where downloaders put cifar10 / fashion-mnist (default ~/.cache)
    train_subset: int | None = None  # first N training samples (tests, quick looks)
    val_subset: int | None = None
    bad_files: str = "stop"  # an unreadable image: stop with its path, or skip it and count it
    num_workers: int = 0
    # Model: in_channels 1 keeps grayscale native, 3 replicates it. With ``weights`` the
    # architecture is the weights' own (``mobilenet.train.model_to_train`` settles the two).
    arch: ArchConfig = field(default_factory=ArchConfig)
    weights: str | None = None  # pretrained NAME|FILE for fine-tuning
    freeze_body: bool = False  # train only the classifier (BatchNorm statistics of the body frozen too)
    # Optimisation. ``batch_size`` is the global batch of one optimizer step, whatever the world size.
    epochs: int = 10
    batch_size: int = 96
    micro_batch: int | None = None  # per process and forward pass; default batch_size / world size
    optimizer: str = "rmsprop"
    lr: float = 0.045
    momentum: float = 0.9
    weight_decay: float = 4e-5
    rmsprop_decay: float = 0.9
    rmsprop_eps: float = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "exponential"
    warmup_epochs: float = 0.0
    decay_rate: float = 0.94
    decay_epochs: float = 2.5
    min_lr_ratio: float = 0.0  # cosine ends at lr × this
    label_smoothing: float = 0.0
    ema_decay: float = 0.0  # 0 disables the exponential moving average of weights
    clip_grad: float = 0.0  # max global gradient norm; 0 disables clipping
    # Augmentation (training split only).
    min_crop: float = 0.35  # smallest area of a random-resized crop, as a fraction of the image
    hflip: bool = True
    # Execution.
    amp: str = "none"  # bf16 autocast: none, bf16, or auto (bf16 where the CPU/GPU supports it)
    channels_last: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP (GPU only: PyTorch's SyncBatchNorm needs CUDA)
    device: str = "auto"
    # torch intra-op threads. The number of threads changes how sums are split, so the count a run
    # used (the machine's default when not given) is recorded and a resume uses it again.
    threads: int | None = None
    seed: int = 0
    deterministic: bool = False
    output: str = "runs"  # run directory
    progress: bool = True
    log_every: int = 20

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # type: ignore[assignment]
        _check(isinstance(self.arch, ArchConfig),
               f"arch must be an ArchConfig, got {type(self.arch).__name__} (from_dict reads a stored dict)")
        _check(self.weights is not None or not self.freeze_body,
               "freeze_body needs weights to start from (a body trained from scratch cannot stay frozen)")
        _check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check(self.amp in AMP_MODES, f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        _check(self.bad_files in BAD_FILE_POLICIES, f"bad_files must be one of {BAD_FILE_POLICIES}")
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.micro_batch is None or self.micro_batch >= 1, "micro_batch must be >= 1")
        _check(self.lr > 0 and math.isfinite(self.lr), f"lr must be a number > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1) (0 = off), got {self.ema_decay}")
        _check(0 < self.min_crop <= 1, f"min_crop must be in (0, 1], got {self.min_crop}")
        _check(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        _check(self.decay_epochs > 0, "decay_epochs must be > 0")
        _check(self.num_workers >= 0, "num_workers must be >= 0")
        _check(self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        _check(_is_device(self.device), f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (config.json, checkpoints): the architecture as ``ArchConfig.to_dict()``."""
        return asdict(self) | {"arch": self.arch.to_dict(), "adam_betas": list(self.adam_betas)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown training settings {sorted(unknown)}")
        return cls(**(d | {"arch": ArchConfig.from_dict(d.get("arch", {}))}))

    def differences(self, settings: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{name: (given, ours)}`` for the settings (fields of this class or of ``ArchConfig``)
        whose value differs from this configuration's. Compared as the dataclasses store them, so
        ``resolution=32`` equals ``(32, 32)`` and ``lr=1`` equals ``1.0``."""
        changed = {}
        for name, value in settings.items():
            if name in ARCH_FIELDS:
                ours, given = getattr(self.arch, name), getattr(self.arch.replace(**{name: value}), name)
            elif name in {f.name for f in fields(self)}:
                ours, given = getattr(self, name), getattr(replace(self, **{name: value}), name)
            else:
                raise InputError(f"unknown training setting {name!r}")
            if given != ours:
                changed[name] = (given, ours)
        return changed

    def accumulation_steps(self, world_size: int) -> tuple[int, int]:
        """(micro-batch per process, micro-batches per optimizer step) that make up ``batch_size``.

        The global batch is fixed by the configuration, not by the number of processes: that is
        what lets a checkpoint resume under any world size and reproduce the same optimisation."""
        micro = self.micro_batch or self.batch_size // world_size
        per_step = micro * world_size
        if micro < 1 or self.batch_size % per_step:
            raise InputError(
                f"the global batch {self.batch_size} does not split into {world_size} process(es) × "
                f"micro-batches of {micro}; choose a --micro-batch that divides {self.batch_size} // {world_size}"
            )
        return micro, self.batch_size // per_step


def _is_device(name: str) -> bool:
    kind, _, index = str(name).partition(":")
    return (kind in ("auto", "cpu") and not index) or (kind == "cuda" and (not index or index.isdigit()))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)

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

Every setting is checked here, once, before anything is read or written: a value outside its
range (``RANGES``) or choices raises ``SettingError``, which names the setting (the command line
puts its flag in that place).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from mobilenet.allocator import MEMORY_POLICIES
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, option

ARCH_FIELDS = frozenset(f.name for f in fields(ArchConfig))
OPTIMIZERS = ("rmsprop", "sgd", "adamw")
SCHEDULES = ("exponential", "cosine", "constant")
AMP_MODES = ("none", "bf16", "fp16", "auto")
BAD_FILE_POLICIES = ("skip", "stop")


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: an interval, never NaN or an infinity."""

    low: float
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    integer: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            bound = f"{'>' if self.open_low else '>='} {self.low:g}"
            return f"{bound} (a whole number)" if self.integer else f"finite and {bound}"
        interval = f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"
        return f"{interval} (a whole number)" if self.integer else interval


# The allowed values of every numeric setting, checked by TrainConfig (the one owner) before
# anything is read or written. A learning rate that a negative decay rate turns negative, a
# momentum above 1, an epsilon of 0: each would train on, silently wrong, or divide by zero.
RANGES: dict[str, Range] = {
    "train_subset": Range(1, integer=True), "val_subset": Range(1, integer=True),
    "num_workers": Range(0, integer=True),
    "epochs": Range(1, integer=True), "batch_size": Range(1, integer=True), "micro_batch": Range(1, integer=True),
    "lr": Range(0, open_low=True),
    "momentum": Range(0, 1, open_high=True),  # 1 never forgets a step: the updates grow without bound
    "weight_decay": Range(0),
    "rmsprop_decay": Range(0, 1, open_high=True),
    "rmsprop_eps": Range(0, open_low=True),  # inside a square root that divides the gradient
    "warmup_epochs": Range(0),
    "decay_rate": Range(0, 1, open_low=True),  # lr × rate^k: negative flips the sign, above 1 grows
    "decay_epochs": Range(0, open_low=True),
    "min_lr_ratio": Range(0, 1),
    "label_smoothing": Range(0, 1, open_high=True),
    "ema_decay": Range(0, 1, open_high=True),  # 0 is off; 1 would never move from the initial weights
    "clip_grad": Range(0),  # 0 is off
    "min_crop": Range(0, 1, open_low=True),
    "threads": Range(1, integer=True),
    "log_every": Range(1, integer=True),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": OPTIMIZERS, "schedule": SCHEDULES, "amp": AMP_MODES, "bad_files": BAD_FILE_POLICIES,
    "memory": MEMORY_POLICIES,
}


class SettingError(InputError):
    """A setting outside its allowed values; ``setting`` is the field's name."""

    def __init__(self, setting: str, requirement: str, value: Any, *, default: Any = None) -> None:
        self.setting, self.value = setting, value
        said_default = "" if default is None else f" (the default is {default})"
        super().__init__(f"{option(setting)} must be {requirement}, got {value!r}{said_default}")
# What a resumed run may change: settings that do not change the optimisation. (``micro_batch``
# changes what BatchNorm sees, and may have to when the recorded one does not fit the processes.)
# (``compile`` changes only how the same step is computed; a resume that changes it says so.)
RESUME_OVERRIDES = ("epochs", "num_workers", "progress", "log_every", "device", "micro_batch", "compile", "memory")


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
    num_workers: int | None = None  # data-loader processes; None: one per two cores, at most 4
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
    # Execution. The fast settings are the defaults wherever they cost no accuracy
    # (mobilenet.train.step.plan_execution decides and says why): bf16 autocast where the CPU or GPU
    # computes bf16 natively, channels_last, and a compiled training step on runs long enough to
    # pay the compile back.
    amp: str = "auto"  # autocast: none, bf16, fp16 (CUDA, with a gradient scaler), or auto (bf16 where native)
    channels_last: bool = True
    compile: bool | None = None  # torch.compile the step (model, loss, backward); None: auto
    # On a CPU under glibc, "keep" asks it to keep freed memory for the rest of the process (faster
    # steps, a resident size that keeps its peak; mobilenet.allocator); "default" leaves it alone.
    memory: str = "keep"
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
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise SettingError(name, f"one of {', '.join(allowed)}", getattr(self, name))
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value not in allowed and not (value is None and name in OPTIONAL):
                raise SettingError(name, str(allowed), value, default=_DEFAULTS.get(name))
        if len(self.adam_betas) != 2 or any(beta not in Range(0, 1, open_high=True) for beta in self.adam_betas):
            raise SettingError("adam_betas", "two numbers in [0, 1)", self.adam_betas,
                               default=_DEFAULTS["adam_betas"])
        _check(_is_device(self.device), f"{option('device')} must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        _check(self.compile in (None, True, False), f"compile must be True, False or None (auto), got {self.compile!r}")

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
                f"micro-batches of {micro}; choose a {option('micro_batch')} that divides "
                f"{self.batch_size} // {world_size}"
            )
        return micro, self.batch_size // per_step


# Settings that may be None ("not given": the data's, the machine's or the run's own value).
OPTIONAL = frozenset(f.name for f in fields(TrainConfig) if f.default is None)
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if not isinstance(f.default, type(MISSING))}


def _is_device(name: str) -> bool:
    kind, _, index = str(name).partition(":")
    return (kind in ("auto", "cpu") and not index) or (kind == "cuda" and (not index or index.isdigit()))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)

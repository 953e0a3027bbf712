"""The state of a run (``RunState``) and its checkpoints, written atomically.

A checkpoint is ``RunState.to_checkpoint()``: a plain dict of tensors, numbers, strings and
containers — no pickled classes — so ``torch.load(path, weights_only=True)`` opens it safely, and
``mobilenet.weights.read_checkpoint`` (through it ``--weights`` and ``mobilenet evaluate``) reads
its ``"arch"`` and ``"model"``. Keys:

    model       the unwrapped model's state_dict (no ``module.`` prefix from DDP)
    arch        ArchConfig.to_dict(): the architecture, stored once
    config      TrainConfig.to_dict() without its "arch" (``read_config`` puts the two together)
    preprocess  resolution, mean, std, crop_fraction, interpolation: what evaluation should use
    classes     the class names, in label order
    ema         the EMA model's state_dict (absent when EMA is off), ema_updates
    scaler      the fp16 gradient scaler's state (present only under --amp fp16)
    optimizer, scheduler
    epoch       the epoch in progress (0-based); step_in_epoch global batches of it are done
    step        optimizer steps done in total
    rng         every process's random state, in rank order (gathered to rank 0, which writes):
                torch's CPU generator and its CUDA device's, numpy's and Python's (``rng_state``);
                a resume under the same world size continues each stream where it stopped, so
                dropout draws on every rank are an uninterrupted run's
    metrics     best validation top-1 so far and the epoch it was reached (best.pt is written
                before last.pt, so the weights of the best epoch are on disk once any file says so)
    epoch_loss, epoch_samples, epoch_time   the epoch in progress so far, summed over processes
    world_size  processes of the run that wrote it (any world size may resume; another one is
                announced: it sums gradients in another order, and new ranks draw new streams)
    train_samples  the training images the sampler cut into batches: with (seed, epoch,
                step_in_epoch) the sampler's whole position (a resume on other data is announced)
    launch      the torchrun launch that wrote it (host, agent PID, rendezvous id; None outside
                torchrun): a worker group that torchrun --max-restarts restarts continues it
    device, amp, compiled   what "auto" resolved to; a resume that differs says so, as it does for another
                micro-batch (config["micro_batch"], the one used) on another world size
    (config["threads"] is the intra-op thread count used; a resume sets it again)
"""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from mobilenet.errors import InputError, option
from mobilenet.files import atomic_write
from mobilenet.train.config import RESUME_OVERRIDES, TrainConfig
from mobilenet.train.optim import ModelEma, build_optimizer, build_scheduler

REQUIRED_KEYS = ("model", "arch", "optimizer", "scheduler", "epoch", "step", "config")


@dataclass
class RunState:
    """Everything a checkpoint holds and a resume restores: the model and its optimisation, where
    the run is, and the epoch in progress so far."""

    config: TrainConfig
    model: nn.Module  # unwrapped, never DDP's wrapper
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    ema: ModelEma | None
    scaler: torch.amp.GradScaler | None  # fp16 autocast's loss scaling, else None
    # Stored beside the state, never changed by it: the evaluation recipe, the classes, the world
    # size, and what "auto" resolved to (device, amp).
    facts: dict[str, Any]
    epoch: int = 0  # the epoch in progress (0-based)
    step: int = 0  # optimizer steps done in the whole run
    step_in_epoch: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"top1": -1.0, "epoch": -1})
    # The epoch in progress so far, summed over all processes (rank 0 holds the sums).
    epoch_loss: float = 0.0
    epoch_samples: float = 0
    epoch_time: float = 0.0

    @classmethod
    def start(cls, config: TrainConfig, model: nn.Module, steps_per_epoch: int, facts: dict[str, Any], *,
              scaler: bool = False) -> RunState:
        """A new run: a fresh optimizer, schedule and EMA for ``model`` (and a gradient scaler for
        fp16 autocast, where ``scaler``)."""
        optimizer = build_optimizer(model, config)
        scheduler = build_scheduler(optimizer, config, steps_per_epoch)
        ema = ModelEma(model, config.ema_decay) if config.ema_decay > 0 else None
        device = next(model.parameters()).device.type
        grad_scaler = torch.amp.GradScaler(device) if scaler else None
        return cls(config, model, optimizer, scheduler, ema, grad_scaler, facts)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], config: TrainConfig, model: nn.Module, steps_per_epoch: int,
                        facts: dict[str, Any], *, rank: int, scaler: bool = False) -> RunState:
        """The run ``ckpt`` saved, continued in process ``rank`` (of any world size)."""
        model.load_state_dict(ckpt["model"])
        state = cls.start(config, model, steps_per_epoch, facts, scaler=scaler)
        if state.scaler is not None and "scaler" in ckpt:
            state.scaler.load_state_dict(ckpt["scaler"])
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        if state.ema is not None and "ema" in ckpt:
            state.ema.load_state_dict(ckpt["ema"], int(ckpt.get("ema_updates", ckpt["step"])))
        state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
        state.step_in_epoch = int(ckpt.get("step_in_epoch", 0))
        state.best = dict(ckpt.get("metrics", state.best))
        # best.pt is written before last.pt: after a kill between the two it holds a better epoch
        # than last.pt records, and that epoch is the best one (its weights are on disk).
        on_disk = best_record(config.output)
        if on_disk is not None and on_disk["top1"] > state.best["top1"]:
            state.best = on_disk
        if rank == 0:  # the sums over all processes of the interrupted epoch so far, counted once
            state.epoch_loss = float(ckpt.get("epoch_loss", 0.0))
            state.epoch_samples = int(ckpt.get("epoch_samples", 0))
        state.epoch_time = float(ckpt.get("epoch_time", 0.0))
        saved = saved_rng_states(ckpt)
        if rank < len(saved):
            set_rng_state(saved[rank])
        else:  # a rank the saving run did not have: a stream of its own (announced by resume_notes)
            torch.manual_seed(config.seed * 1_000_003 + rank * 7919 + state.step)
        return state

    def to_checkpoint(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The checkpoint of this state; ``rng`` is every process's ``rng_state()`` in rank order
        (``distributed.gather_to_main``), this process's alone when not given."""
        config = self.config.to_dict()
        ckpt: dict[str, Any] = {
            "model": self.model.state_dict(), "arch": config.pop("arch"), "config": config,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
            "rng": rng if rng is not None else [rng_state()],
            "metrics": self.best, "epoch_loss": self.epoch_loss, "epoch_samples": self.epoch_samples,
            "epoch_time": self.epoch_time, **self.facts,
        }
        if self.ema is not None:
            ckpt["ema"], ckpt["ema_updates"] = self.ema.state_dict(), self.ema.updates
        if self.scaler is not None:
            ckpt["scaler"] = self.scaler.state_dict()
        return ckpt

    def next_epoch(self) -> None:
        self.epoch += 1
        self.step_in_epoch, self.epoch_loss, self.epoch_samples, self.epoch_time = 0, 0.0, 0, 0.0


def read_config(ckpt: dict[str, Any]) -> TrainConfig:
    """The ``TrainConfig`` of the run that wrote ``ckpt``: its settings and its architecture."""
    return TrainConfig.from_dict(ckpt["config"] | {"arch": ckpt["arch"]})


class RecipeChange(InputError):
    """Settings given for a resume that would change the run's recipe (``lr=0.1`` on a run at
    0.045): refused, never silently ignored. ``changes`` is ``{setting: (given, the run's)}``."""

    def __init__(self, changes: dict[str, tuple[Any, Any]]) -> None:
        self.changes = changes
        listed = ", ".join(f"{name}={given!r} (the run has {ours!r})" for name, (given, ours) in changes.items())
        super().__init__(f"a resumed run keeps its configuration; not applied: {listed}. "
                         f"Only {', '.join(RESUME_OVERRIDES)} may change")


def config_for_resume(run_dir: str | Path, **settings: Any) -> TrainConfig:
    """The configuration a run was started with (from its last checkpoint), for
    ``train(config_for_resume(run_dir), resume=run_dir)``.

    ``settings`` are fields of ``TrainConfig`` or ``ArchConfig`` (None: not given). The ones in
    ``RESUME_OVERRIDES`` apply (``epochs`` extends a run; ``micro_batch`` may have to change when
    the recorded one does not fit the new number of processes: the optimizer still sees the same
    global batch, only BatchNorm sees other slices); any other may only repeat the run's value
    (``RecipeChange`` otherwise)."""
    recorded = read_config(load(run_dir))
    run_dir = run_dir_of(run_dir)
    given = {name: value for name, value in settings.items() if value is not None}
    overrides = {name: given.pop(name) for name in RESUME_OVERRIDES if name in given}
    output = given.pop("output", None)
    changes = recorded.differences(given)
    if output is not None and Path(output).resolve() != run_dir.resolve():
        changes["output"] = (output, str(run_dir))
    if changes:
        raise RecipeChange(changes)
    return replace(recorded, output=str(run_dir), **overrides)


def run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run directory that ``path`` names: itself, or the one holding a checkpoint file
    (``--resume RUN/best.pt`` continues RUN from its best epoch)."""
    path = Path(path)
    return path.parent if path.is_file() else path


def resume_notes(ckpt: dict[str, Any], config: TrainConfig, facts: dict[str, Any]) -> list[str]:
    """The allowed changes on resume that still change the numbers (the world size, the device,
    autocast, BatchNorm's micro-batch, the training data): said out loud rather than silently."""
    notes = []
    saved_world, world = ckpt.get("world_size", 1), facts["world_size"]
    if saved_world != world:
        notes.append(f"the run was saved by {saved_world} process(es) and continues on {world}: gradients are "
                     "summed in another order")
    streams = len(saved_rng_states(ckpt))
    if streams < world and config.arch.dropout > 0:
        notes.append(f"the checkpoint holds the random state of {streams} process(es): dropout on process(es) "
                     f"{streams}..{world - 1} draws from new streams")
    saved_samples = ckpt.get("train_samples", facts["train_samples"])
    if saved_samples != facts["train_samples"]:
        notes.append(f"the training set had {saved_samples} images and now has {facts['train_samples']}: the "
                     "epoch's order and batches differ")
    if ckpt.get("device", facts["device"]) != facts["device"]:
        notes.append(f"the run trained on {ckpt['device']}, it continues on {facts['device']}")
    if ckpt.get("amp", facts["amp"]) != facts["amp"]:
        notes.append(f"autocast was {ckpt['amp']}, it is now {facts['amp']} ({option('amp', config.amp)} on this "
                     "machine)")
    if ckpt.get("compiled", facts.get("compiled")) != facts.get("compiled"):
        was, now = ("compiled", "eager") if ckpt["compiled"] else ("eager", "compiled")
        notes.append(f"the step was {was}, it is now {now}: its sums round differently")
    saved_micro = ckpt["config"].get("micro_batch")
    if saved_micro is not None and saved_micro != config.micro_batch:
        notes.append(f"BatchNorm saw micro-batches of {saved_micro}, now {config.micro_batch}")
    return notes


def save_atomic(obj: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """torch.save through ``mobilenet.files.atomic_write``: a reader (or a crash) sees the old file
    or the new one, never half of one; a kill mid-write leaves a ``.last.pt.*.tmp`` that the next
    start of the run removes (``remove_stale_temporaries``)."""
    # Serialised in memory first: torch.save reports a failed write (a full disk) as a RuntimeError
    # without the OS error, while writing the bytes ourselves gives atomic_write the errno, and so
    # the user one line that says what happened.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def find(path: str | os.PathLike[str]) -> Path | None:
    """The checkpoint a run continues from: a file itself, or in a run directory ``last.pt``, else
    ``best.pt``. (A kill during the very first ``last.pt`` write leaves ``best.pt`` alone, written
    just before it from the same state.) None where there is neither."""
    path = Path(path)
    if not path.is_dir():
        return path if path.is_file() else None
    return next((path / name for name in ("last.pt", "best.pt") if (path / name).is_file()), None)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (``find``'s, for a run directory), with a clear error for a
    missing, corrupt or foreign file."""
    found = find(path)
    if found is None:
        where = Path(path) / "last.pt" if Path(path).is_dir() else path
        raise InputError(f"no checkpoint at {where} (expected RUN_DIR/last.pt from `mobilenet train`)")
    path = found
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise InputError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(f"{path} is not a `mobilenet train` checkpoint: expected keys {REQUIRED_KEYS}, found {have}")
    return ckpt


def best_record(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What ``RUN_DIR/best.pt`` holds, ``{"top1", "epoch"}``, or None where it is absent or unreadable."""
    path = Path(run_dir) / "best.pt"
    if not path.is_file():
        return None
    try:
        metrics = torch.load(path, map_location="cpu", weights_only=True).get("metrics")
    except Exception:  # a foreign or damaged file: last.pt's record stands
        return None
    return dict(metrics) if isinstance(metrics, dict) and "top1" in metrics else None


def rng_state() -> dict[str, Any]:
    """This process's random state as plain tensors and numbers (``weights_only`` loads them):
    torch's CPU generator, its current CUDA device's (where CUDA is in use), numpy's and Python's."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what ``rng_state`` took (an older checkpoint's torch-only state too)."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state(("MT19937", saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"],
                             saved["gauss"]))
    if "python" in state:
        saved = state["python"]
        random.setstate((saved["version"], tuple(saved["words"].tolist()), saved["gauss"]))
    if isinstance(state.get("cuda"), torch.Tensor) and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def saved_rng_states(ckpt: dict[str, Any]) -> list[dict[str, Any]]:
    """The random states ``ckpt`` holds, in rank order (older checkpoints hold rank 0's alone)."""
    saved = ckpt.get("rng")
    return list(saved) if isinstance(saved, list) else [saved] if isinstance(saved, dict) else []

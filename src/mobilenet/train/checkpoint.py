"""Checkpoints: written atomically, loadable with ``torch.load(path, weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings and containers — no pickled classes — so
it can be opened safely and read by ``mobilenet.weights.load_pretrained`` and ``mobilenet
evaluate``. Keys:

    model       the unwrapped model's state_dict (no ``module.`` prefix from DDP)
    arch        ArchConfig.to_dict()
    preprocess  resolution, mean, std, crop_fraction, interpolation: what evaluation should use
    ema         the EMA model's state_dict (absent when EMA is off), ema_updates
    optimizer, scheduler
    epoch       the epoch in progress (0-based); step_in_epoch global batches of it are done
    step        optimizer steps done in total
    rng         torch (and CUDA) generator states of rank 0, as uint8 tensors
    config      TrainConfig.to_dict()
    metrics     best validation top-1 so far and the epoch it was reached (best.pt is written
                before last.pt, so the weights of the best epoch are on disk once any file says so)
    world_size  processes of the run that wrote it (informational: any world size may resume)
    device, amp, micro_batch   what "auto" resolved to; a resume that differs says so
    (config["threads"] is the intra-op thread count used; a resume sets it again)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from mobilenet.errors import InputError
from mobilenet.files import atomic_write

REQUIRED_KEYS = ("model", "arch", "optimizer", "scheduler", "epoch", "step", "config")


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


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint, with a clear error for a missing, corrupt or foreign file."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise InputError(f"no checkpoint at {path} (expected RUN_DIR/last.pt from `mobilenet train`)")
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
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])

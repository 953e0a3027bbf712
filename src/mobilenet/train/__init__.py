"""Training and fine-tuning MobileNet v1, in one process or many under torchrun (DDP).

    from mobilenet.train import TrainConfig, model_to_train, train
    arch, weights = model_to_train("fashion-mnist", alpha=0.5, resolution=32)  # classes, channels: the data's
    result = train(TrainConfig(data="fashion-mnist", arch=arch, epochs=15), weights=weights)

``train(config_for_resume(run_dir), resume=run_dir)`` continues a run. See docs/training.md for
the recipe, the checkpoint format and distributed runs. Names are imported on first use, so that
``mobilenet.train.config`` (and the command line's parser) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mobilenet.train.checkpoint import RecipeChange, RunState, config_for_resume
    from mobilenet.train.config import TrainConfig
    from mobilenet.train.loop import TrainResult, train
    from mobilenet.train.network import model_to_train
    from mobilenet.train.optim import RMSpropTF, param_groups

# name -> the module that owns it
_OWNERS = {
    "RecipeChange": "checkpoint", "RunState": "checkpoint", "config_for_resume": "checkpoint",
    "TrainConfig": "config", "TrainResult": "loop", "train": "loop", "model_to_train": "network",
    "RMSpropTF": "optim", "param_groups": "optim",
}
__all__ = [
    "RMSpropTF", "RecipeChange", "RunState", "TrainConfig", "TrainResult", "config_for_resume", "model_to_train",
    "param_groups", "train",
]


def __getattr__(name: str) -> Any:
    if name not in _OWNERS:
        raise AttributeError(f"module 'mobilenet.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mobilenet.train.{_OWNERS[name]}"), name)

"""Training and fine-tuning MobileNet v1, in one process or many under torchrun (DDP).

    from mobilenet.train import TrainConfig, train
    summary = train(TrainConfig(data="fashion-mnist", arch={"alpha": 0.5, "resolution": [32, 32],
                                                          "num_classes": 10, "in_channels": 1}))

See docs/training.md for the recipe, the checkpoint format and distributed runs.
"""

from mobilenet.train.config import TrainConfig
from mobilenet.train.loop import config_for_resume, evaluate, train
from mobilenet.train.optim import RMSpropTF, param_groups

__all__ = ["RMSpropTF", "TrainConfig", "config_for_resume", "evaluate", "param_groups", "train"]

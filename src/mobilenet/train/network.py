"""The network a run trains: its architecture chosen for the data (and the pretrained weights it
starts from), checked against the memory available, then built once and placed on the device.

    arch, weights = model_to_train("photos/", weights="tf_mobilenet_v1_1.0_224", resolution=224)
    train(TrainConfig(data="photos/", arch=arch, weights="tf_mobilenet_v1_1.0_224"), weights=weights)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, option
from mobilenet.limits import check_memory
from mobilenet.model import MobileNetV1
from mobilenet.train.config import TrainConfig
from mobilenet.train.files import count_classes, native_channels

if TYPE_CHECKING:
    from mobilenet.weights import LoadedWeights


def model_to_train(data: str, val_data: str | None = None, *, weights: str | None = None,
                   **settings: Any) -> tuple[ArchConfig, LoadedWeights | None]:
    """The architecture to train on ``data``, and the pretrained weights it starts from (None:
    from scratch), loaded here once, for ``train(config, weights=...)``.

    ``settings`` are ``ArchConfig`` fields (None: not given). The class count not given is the
    data's, and dropout the recipe's (TF's 0.001, whatever the weights were trained with). From
    scratch, the input channels are the data's own (Fashion-MNIST's grey fed as one channel). With
    ``weights`` the weights fix the layers: a setting that contradicts them is a
    ``mobilenet.weights.WeightsMismatch`` (an ``InputError``); resolution and dropout are free, and
    another class count gets a fresh classifier."""
    given = {name: value for name, value in settings.items() if value is not None}
    given.setdefault("num_classes", count_classes(data, val_data))
    if weights is None:
        return ArchConfig(**{"in_channels": native_channels(data), **given}), None
    loaded = load_pretrained(weights, {"dropout": ArchConfig().dropout, **given})
    return loaded.arch_cfg, loaded


def load_pretrained(weights: str, settings: dict[str, Any]) -> LoadedWeights:
    """``mobilenet.weights.load_weights``, with weights that cannot be fetched (offline, no local
    copy) reported as the user's to fix, in one line."""
    from mobilenet.weights import FetchError, load_weights

    try:
        return load_weights(weights, **settings)
    except FetchError as err:
        raise InputError(f"{option('weights', weights)}: {err}") from err


def build_model(config: TrainConfig, weights: LoadedWeights | None, device: torch.device, *,
                micro_batch: int, val_batch: int, sync_bn: bool) -> nn.Module:
    """``config.arch`` built once on ``device``: from ``weights`` (the pretrained ones of a
    fine-tune), else freshly initialised. Before anything is allocated, the cost model says
    whether training at ``micro_batch`` and validating at ``val_batch`` fit in memory."""
    arch = config.arch
    check_memory(arch, micro_batch, mode="training", optimizer=config.optimizer, ema=config.ema_decay > 0,
                 device=device.type)
    check_memory(arch, val_batch, mode="inference", device=device.type)
    if weights is not None:
        from mobilenet.weights import model_from_weights

        if weights.arch_cfg != arch:
            raise InputError(f"the weights are {weights.arch_cfg}, the configuration asks for {arch}; "
                             "take the architecture from model_to_train()")
        model = model_from_weights(weights).train()
    else:
        model = MobileNetV1(arch)
    if config.freeze_body:  # only the classifier learns; train_mode keeps the body's BatchNorm statistics
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    if sync_bn:
        if device.type == "cpu":
            raise InputError(f"{option('sync_bn', True)} needs GPUs (PyTorch's SyncBatchNorm does not run on CPU)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def train_mode(model: nn.Module, freeze_body: bool) -> None:
    """Training mode, except that a frozen body keeps its BatchNorm statistics too."""
    model.train()
    if freeze_body:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.weight.requires_grad:
                module.eval()


def pretrained_for(config: TrainConfig) -> LoadedWeights | None:
    """The weights a new run of ``config`` starts from, for a caller that has not loaded them."""
    if config.weights is None:
        return None
    return load_pretrained(config.weights, config.arch.to_dict())

"""Optimizers, parameter groups and learning-rate schedules.

The paper (Sec. 3.2) puts "very little or no weight decay (l2 regularization) on the depthwise
filters since there are so few parameters in them"; TF-slim applies its 4e-5 to the regular and
pointwise convolutions and the classifier only. ``param_groups`` does the same and also spares
BatchNorm parameters and biases, as PyTorch recipes do.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from mobilenet.errors import InputError


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise conv: one group per input channel (groups == in_channels > 1)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: conv/FC weights with ``weight_decay``; depthwise filters, BatchNorm and biases
    without. Frozen parameters (requires_grad False) are left out. Each group carries ``names``."""
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            full = f"{module_name}.{name}" if module_name else name
            spared = name == "bias" or param.ndim <= 1 or is_depthwise(module)
            (no_decay if spared else decay)[full] = param
    return [
        {"params": list(decay.values()), "names": list(decay), "weight_decay": weight_decay},
        {"params": list(no_decay.values()), "names": list(no_decay), "weight_decay": 0.0},
    ]


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow computes it, which the published MobileNets were trained with.

    Differs from ``torch.optim.RMSprop`` in two ways that matter at TF's epsilon of 1.0: the mean
    square starts at 1 instead of 0, and epsilon sits inside the square root::

        ms  = decay · ms + (1 − decay) · g²
        mom = momentum · mom + lr · g / sqrt(ms + eps)
        w  -= mom

    Weight decay is L2 (added to the gradient), as TF-slim's regularizer does.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.045, decay: float = 0.9, momentum: float = 0.9,
                 eps: float = 1.0, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "decay": decay, "momentum": momentum, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            square_avgs, moms = [], []
            for p in params:
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                square_avgs.append(state["square_avg"])
                moms.append(state["momentum_buffer"])
            decay = group["decay"]
            torch._foreach_mul_(square_avgs, decay)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - decay)
            denom = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denom)
            torch._foreach_mul_(moms, group["momentum"])
            torch._foreach_addcdiv_(moms, grads, denom, value=group["lr"])
            torch._foreach_sub_(params, moms)
        return loss


def build_optimizer(model: nn.Module, config: Any) -> torch.optim.Optimizer:
    groups = param_groups(model, config.weight_decay)
    for g in groups:
        g.pop("names")
    if config.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=config.lr, decay=config.rmsprop_decay, momentum=config.momentum,
                         eps=config.rmsprop_eps)
    # PyTorch's fused kernels (one pass over all parameters, CPU and CUDA) where they exist;
    # RMSpropTF is written in foreach operations (a few passes over all of them).
    kernels = {"fused": True} if _fusable(groups) else {"foreach": True}
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               **kernels)
    if config.optimizer == "adamw":
        # AdamW's decay is decoupled from the gradient; the groups still spare depthwise/BN/bias.
        return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.adam_betas), **kernels)
    raise InputError(f"unknown optimizer {config.optimizer!r}")


def _fusable(groups: list[dict[str, Any]]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)


def lr_factor(step: int, *, steps_per_epoch: int, total_steps: int, config: Any) -> float:
    """Multiplier of ``config.lr`` after ``step`` optimizer steps: linear warm-up from ~0, then
    cosine to ``min_lr_ratio``, TF's staircase ``decay_rate ** floor(epoch / decay_epochs)``, or
    constant."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "exponential":
        return config.decay_rate ** math.floor(step / (config.decay_epochs * steps_per_epoch))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: Any, steps_per_epoch: int) -> LambdaLR:
    """A per-step schedule. Its state is just the step count, so a checkpoint restores it."""
    total = config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        return lr_factor(step, steps_per_epoch=steps_per_epoch, total_steps=total, config=config)

    return LambdaLR(optimizer, factor)


class ModelEma:
    """Exponential moving average of a model's weights (and copy of its buffers).

    ``decay`` is reached gradually, min(decay, (1 + n) / (10 + n)) after n updates, so an average
    started from random weights is useful after a few hundred steps rather than tens of thousands.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_state = self.module.state_dict()
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                target.lerp_(value, 1 - d)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates

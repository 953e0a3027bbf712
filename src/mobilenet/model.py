"""The PyTorch MobileNet v1, built layer for layer from ``mobilenet.arch``.

Module tree (the names the weight converters and exporters rely on)::

    stem              ConvBNAct (3x3 conv, stride 2)
    blocks.{i}        DepthwiseSeparable(dw: ConvBNAct, pw: ConvBNAct)   variants separable, shallow
                      ConvBNAct                                          variant conv
    pool              global average pool
    dropout
    classifier        nn.Linear (TF's 1x1 logits conv, flattened)

Initialisation follows TF-slim's ``mobilenet_v1_arg_scope``: every conv and the classifier draw
from a normal distribution with standard deviation 0.09 truncated at two deviations, biases are
zero, BatchNorm starts at gamma 1, beta 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mobilenet import arch
from mobilenet.arch import ArchConfig, Layer
from mobilenet.errors import InputError
from mobilenet.kernels import batch_norm, strided_depthwise_conv2d

INIT_STD = 0.09
# Keras' ZeroPadding2D(((0, 1), (0, 1))) before a strided conv, in F.pad's (left, right, top, bottom).
KERAS_PAD = (0, 1, 0, 1)


class TFSamePad(nn.Module):
    """TensorFlow 'SAME' padding, computed from the input actually seen, so the sampling of the
    published weights is reproduced at any input size (even sizes pad right/bottom only)."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (arch.same_padding(s, self.kernel, self.stride) for s in x.shape[-2:])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}"


class ConvBNAct(nn.Module):
    """Convolution, BatchNorm, ReLU6 (or ReLU): one row of the paper's Table 1.

    After ``fold_batchnorm()`` the BatchNorm is an ``nn.Identity`` and the conv carries a bias:
    the form of TFLite files and of the inference path.
    """

    def __init__(self, layer: Layer, cfg: ArchConfig) -> None:
        super().__init__()
        k, s = layer.kernel, layer.stride
        # Stride 1 'SAME' is symmetric for odd kernels, so only strided convs need a pad of their own:
        # TF 'SAME' computed from the input actually seen, or Keras' fixed zero row and column.
        keras_pad = cfg.padding == "keras" and s > 1 and layer.name != "stem"
        dynamic = s > 1 and (cfg.padding == "tf" or (cfg.padding == "keras" and not keras_pad))
        self.pad: nn.Module = (
            nn.ZeroPad2d(KERAS_PAD) if keras_pad else TFSamePad(k, s) if dynamic else nn.Identity()
        )
        self.conv = nn.Conv2d(
            layer.in_channels, layer.out_channels, k, s,
            padding=0 if dynamic or keras_pad else k // 2, groups=layer.groups, bias=False,
        )
        self.bn: nn.Module = nn.BatchNorm2d(layer.out_channels, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        self.act = nn.ReLU6(inplace=True) if cfg.activation == "relu6" else nn.ReLU(inplace=True)
        # Trained through mobilenet.kernels, whose backward outruns oneDNN's for these (bf16, CPU).
        self.strided_depthwise = layer.kind == "depthwise" and s > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, conv = self.pad(x), self.conv
        if self.strided_depthwise and self.training and torch.is_grad_enabled() and conv.bias is None:
            x = strided_depthwise_conv2d(x, conv.weight, conv.stride[0], conv.padding[0])  # type: ignore[index]
        else:
            x = conv(x)
        return self.act(batch_norm(self.bn, x))  # in a step compiled for a CPU: mobilenet.kernels

    @property
    def folded(self) -> bool:
        return isinstance(self.bn, nn.Identity)

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold the BatchNorm (in eval form, running statistics) into the conv's weight and bias."""
        if self.folded:
            return
        bn = self.bn
        assert isinstance(bn, nn.BatchNorm2d)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = self.conv
        folded = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
            padding=conv.padding, groups=conv.groups, bias=True,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
        self.conv = folded
        self.bn = nn.Identity()

    def unfold_structure(self) -> None:
        """Give the layer the folded structure (conv with bias, no BatchNorm) without values: used
        to load weights that were folded elsewhere, such as TFLite files."""
        if self.folded:
            return
        conv = self.conv
        self.conv = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
            padding=conv.padding, groups=conv.groups, bias=True,
        )
        nn.init.zeros_(self.conv.bias)
        self.conv.weight.data.copy_(conv.weight.data)
        self.bn = nn.Identity()


class DepthwiseSeparable(nn.Module):
    """A 3x3 depthwise conv (one filter per channel, times the depth multiplier) and a 1x1
    pointwise conv, each with BatchNorm and activation."""

    def __init__(self, dw: Layer, pw: Layer, cfg: ArchConfig) -> None:
        super().__init__()
        self.dw = ConvBNAct(dw, cfg)
        self.pw = ConvBNAct(pw, cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    """MobileNet v1 for one ``ArchConfig``. ``forward`` returns logits (no softmax)."""

    def __init__(self, cfg: ArchConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        check_arch_settings(overrides)
        cfg = (cfg or ArchConfig()).replace(**overrides) if overrides else (cfg or ArchConfig())
        self.arch_cfg = cfg
        spec = arch.layers(cfg)
        self.stem = ConvBNAct(spec[0], cfg)
        blocks: list[nn.Module] = []
        convs = spec[1:-2]
        if cfg.variant == "conv":
            blocks = [ConvBNAct(layer, cfg) for layer in convs]
        else:
            blocks = [DepthwiseSeparable(dw, pw, cfg) for dw, pw in zip(convs[0::2], convs[1::2])]
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(cfg.dropout)
        fc = spec[-1]
        self.num_features = fc.in_channels
        self.classifier = nn.Linear(fc.in_channels, fc.out_channels)
        # Cumulative stride -> index into self.blocks (-1: the stem) of the last layer at that stride.
        self._stage_ends = {
            stride: (-1 if layer.block is None else layer.block) for stride, layer in arch.feature_stages(cfg).items()
        }
        self.reset_parameters()

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """timm-style: channels and reduction of the maps ``forward_intermediates`` can return."""
        stages = arch.feature_stages(self.arch_cfg)
        return [
            {"module": layer.name, "num_chs": layer.out_channels, "reduction": stride}
            for stride, layer in sorted(stages.items())
        ]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling: (N, 1024·α, H/32, W/32)."""
        return self.blocks(self.stem(x))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.pool(features), 1))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, strides: tuple[int, ...] = (8, 16, 32)) -> list[torch.Tensor]:
        """Feature maps at the given output strides (a backbone for detection or segmentation)."""
        unknown = [s for s in strides if s not in self._stage_ends]
        if unknown:
            raise InputError(f"strides {unknown} are not available; choose from {sorted(self._stage_ends)}")
        wanted = {self._stage_ends[s]: s for s in strides}
        maps: dict[int, torch.Tensor] = {}
        x = self.stem(x)
        if -1 in wanted:
            maps[wanted[-1]] = x
        last = max(wanted)
        for i, block in enumerate(self.blocks):
            if i > last:
                break
            x = block(x)
            if i in wanted:
                maps[wanted[i]] = x
        return [maps[s] for s in strides]

    def conv_layers(self) -> Iterator[tuple[str, ConvBNAct]]:
        """(arch layer name, module) for every conv layer, in order."""
        for name, module in self.named_modules():
            if isinstance(module, ConvBNAct):
                yield name, module

    def fold_batchnorm(self) -> MobileNetV1:
        """Fold every BatchNorm into its conv (for inference; the model must be in eval mode)."""
        if self.training:
            raise RuntimeError("fold_batchnorm() uses the running statistics: call model.eval() first")
        for _, module in self.conv_layers():
            module.fold_batchnorm()
        return self

    def reset_classifier(self, num_classes: int) -> None:
        """A new, freshly initialised classifier for ``num_classes`` (fine-tuning), on the old one's
        device and in its dtype. A model loaded with weights keeps their name and preprocessing in
        ``pretrained_cfg``, but none of their classes: it becomes what
        ``mobilenet_v1(weights=..., num_classes=num_classes)`` gives (``PretrainedCfg.with_fresh_classifier``):
        a custom label set of ``num_classes``, no published accuracy."""
        arch_cfg = self.arch_cfg.replace(num_classes=num_classes)  # (checks num_classes before anything changes)
        old = self.classifier.weight
        # Drawn in float32 on the CPU, as at construction, then cast: the same numbers
        # whatever the model's dtype, and a bf16 or fp16 model's forward finds one dtype throughout.
        classifier = nn.Linear(self.num_features, num_classes)
        nn.init.trunc_normal_(classifier.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
        nn.init.zeros_(classifier.bias)
        cfg = getattr(self, "pretrained_cfg", None)
        if cfg is not None:  # (the weights' config owns what a fresh classifier means for it)
            self.pretrained_cfg = cfg.with_fresh_classifier(arch_cfg)
        self.classifier = classifier.to(device=old.device, dtype=old.dtype)
        self.arch_cfg = arch_cfg


# Other libraries' names for settings this one has (timm's in_chans, torchvision's width_mult),
# said beside the refusal so that a user who reaches for them finds ours.
ARCH_SETTING_ALIASES = {"in_chans": "in_channels", "drop_rate": "dropout", "width_mult": "alpha",
                        "img_size": "resolution", "input_size": "resolution"}


def check_arch_settings(settings: Mapping[str, Any]) -> None:
    """Refuse, in one line that lists the accepted ones, a setting that is no ``ArchConfig`` field
    (``ArchConfig(**settings)`` would raise a bare ``TypeError``): the one check of the names
    ``MobileNetV1``, ``mobilenet_v1``, ``load_model`` and ``weights.settle`` take."""
    known = [f.name for f in fields(ArchConfig)]
    unknown = sorted(set(settings) - set(known))
    if not unknown:
        return
    hints = [f"for {name} give {ARCH_SETTING_ALIASES[name]}" for name in unknown if name in ARCH_SETTING_ALIASES]
    raise InputError(f"unknown architecture setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                     + (f" ({'; '.join(hints)})" if hints else "") + f"; the settings are {', '.join(known)}")


def state_shapes(cfg: ArchConfig, folded: bool = False) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the state dict of ``MobileNetV1(cfg)`` (with the folded
    structure if ``folded``), without allocating it: what a weights file must provide."""
    with torch.device("meta"):
        model = MobileNetV1(cfg)
        if folded:
            for _, module in model.conv_layers():
                module.unfold_structure()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}

"""MobileNet v1 as data: the one description of the architecture.

Everything else in the project reads this module: the cost model counts it, the PyTorch model is
built from it, the weight converters name their tensors after it and the exporters trace what it
builds. Nothing downstream re-derives channel counts, strides or padding. Pure Python: no torch.

Table 1 of Howard et al. 2017 (arXiv 1704.04861), with the last depthwise stride corrected to 1
as in TF-slim's ``mobilenet_v1.py`` (the paper prints 2, which would leave a 4x4 map before the
7x7 average pool).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from mobilenet.errors import InputError, option

Variant = Literal["separable", "conv", "shallow"]
Padding = Literal["tf", "symmetric", "keras"]
Rounding = Literal["tf", "timm"]
Activation = Literal["relu6", "relu"]
LayerKind = Literal["conv", "depthwise", "pointwise", "pool", "fc"]

VARIANTS: tuple[str, ...] = ("separable", "conv", "shallow")
PADDINGS: tuple[str, ...] = ("tf", "symmetric", "keras")
ROUNDINGS: tuple[str, ...] = ("tf", "timm")
ACTIVATIONS: tuple[str, ...] = ("relu6", "relu")

STEM_CHANNELS = 32
STEM_STRIDE = 2
KERNEL_SIZE = 3
# Table 1, after the stem: (output channels, depthwise stride) of the 13 separable blocks.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
# Table 5's "Shallow MobileNet" drops the five 14x14x512 blocks (indices 6..10 above).
SHALLOW_REMOVED: tuple[int, ...] = (6, 7, 8, 9, 10)
MIN_RESOLUTION = 32
TF_MIN_DEPTH = 8


def scale_channels(channels: int, alpha: float, rounding: Rounding = "tf") -> int:
    """Channels of a layer of the base network after the width multiplier alpha.

    ``tf``: ``max(int(channels * alpha), 8)``, TF-slim's ``depth()`` with ``min_depth=8``.
    ``timm``: round to the nearest multiple of 8 (never below 8, never more than 10% down),
    timm's ``make_divisible``. They agree for alpha in {0.25, 0.5, 0.75, 1.0}; at 0.35 a 32-channel
    layer is 11 channels in TF and 16 in timm.
    """
    if rounding == "tf":
        return max(int(channels * alpha), TF_MIN_DEPTH)
    if rounding == "timm":
        value = channels * alpha
        rounded = max(8, int(value + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * value else rounded
    raise InputError(f"{option('rounding')} must be one of {ROUNDINGS}, got {rounding!r}")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's 'SAME' along one axis: the output is ceil(size/stride)
    and any odd excess goes after, so a stride-2 3x3 conv on an even input pads (0, 1)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def conv_padding(padding: Padding, size: int, kernel: int, stride: int, *, stem: bool = False) -> tuple[int, int]:
    """(before, after) padding of one conv along one axis, for each padding mode.

    ``tf``: TensorFlow 'SAME' (``same_padding``). ``symmetric``: PyTorch ``padding=k//2``.
    ``keras``: Keras' ``MobileNet``, which builds its stem conv with 'SAME' but pads every other
    strided conv with ``ZeroPadding2D(((0, 1), (0, 1)))`` and then convolves 'valid'; stride-1
    convs are 'SAME'. That equals 'SAME' where the strided conv's input is even and gives one
    row and column less where it is odd (at 200x200 the map after block 5 is 12x12, not 13x13).
    """
    if padding == "tf" or (padding == "keras" and (stem or stride == 1)):
        return same_padding(size, kernel, stride)
    if padding == "keras":
        return (0, 1)
    if padding == "symmetric":
        return (kernel // 2, kernel // 2)
    raise InputError(f"{option('padding')} must be one of {PADDINGS}, got {padding!r}")


NUMERIC_ONLY = ("bn_eps", "bn_momentum", "dropout")  # settings that change no shape and no work (ArchConfig.workload)


@dataclass(frozen=True)
class ArchConfig:
    """Every choice that changes the network. Validated on construction.

    ``resolution`` is (height, width) of the input; ``dropout`` is the drop probability before the
    classifier (TF-slim and Keras use 0.001). ``bn_eps`` defaults to TensorFlow's 1e-3 because the
    published weights were trained with it; timm's weights use 1e-5.
    """

    alpha: float = 1.0
    resolution: tuple[int, int] = (224, 224)
    variant: Variant = "separable"
    depth_multiplier: int = 1
    num_classes: int = 1000
    activation: Activation = "relu6"
    padding: Padding = "tf"
    rounding: Rounding = "tf"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    dropout: float = 0.001
    in_channels: int = 3

    def __post_init__(self) -> None:
        res = self.resolution
        if isinstance(res, int) and not isinstance(res, bool):
            res = (res, res)
        if isinstance(res, list):
            res = tuple(res)
        object.__setattr__(self, "resolution", res)
        _check(
            isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0
            and math.isfinite(self.alpha),
            f"{option('alpha')} (the width multiplier) must be a number > 0, got {self.alpha!r}; "
            "the published values are 0.25, 0.5, 0.75 and 1.0",
        )
        _check(
            isinstance(res, tuple) and len(res) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= MIN_RESOLUTION for s in res),
            f"{option('resolution')} must be an int or (height, width) of ints >= {MIN_RESOLUTION}, got "
            f"{self.resolution!r}; the published sizes are 224, 192, 160 and 128",
        )
        _check(self.variant in VARIANTS, f"{option('variant')} must be one of {VARIANTS}, got {self.variant!r}")
        _check(
            _is_positive_int(self.depth_multiplier),
            f"{option('depth_multiplier')} must be an int >= 1 (depthwise outputs per input channel), got "
            f"{self.depth_multiplier!r}",
        )
        _check(
            _is_positive_int(self.num_classes),
            f"{option('num_classes')} must be an int >= 1 (1000 for ImageNet, 1001 with TF's background class), "
            f"got {self.num_classes!r}",
        )
        _check(self.activation in ACTIVATIONS,
               f"{option('activation')} must be one of {ACTIVATIONS}, got {self.activation!r}")
        _check(self.padding in PADDINGS, f"{option('padding')} must be one of {PADDINGS}, got {self.padding!r}")
        _check(self.rounding in ROUNDINGS, f"{option('rounding')} must be one of {ROUNDINGS}, got {self.rounding!r}")
        _check(
            isinstance(self.bn_eps, (int, float)) and self.bn_eps > 0,
            f"{option('bn_eps')} must be a number > 0, got {self.bn_eps!r}",
        )
        _check(
            isinstance(self.bn_momentum, (int, float)) and 0 <= self.bn_momentum <= 1,
            f"{option('bn_momentum')} must be in [0, 1] (PyTorch's convention: TF's decay 0.9997 is 0.0003), "
            f"got {self.bn_momentum!r}",
        )
        _check(
            isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
            f"{option('dropout')} must be a probability in [0, 1), got {self.dropout!r}",
        )
        _check(
            _is_positive_int(self.in_channels),
            f"{option('in_channels')} must be an int >= 1 (3 for RGB, 1 for grayscale), got {self.in_channels!r}",
        )

    @property
    def height(self) -> int:
        return self.resolution[0]

    @property
    def width(self) -> int:
        return self.resolution[1]

    @property
    def name(self) -> str:
        """Short name in the style of the TF releases: ``mobilenet_v1_0.75_192``."""
        h, w = self.resolution
        size = str(h) if h == w else f"{h}x{w}"
        prefix = {"separable": "mobilenet_v1", "conv": "conv_mobilenet_v1", "shallow": "shallow_mobilenet_v1"}
        return f"{prefix[self.variant]}_{float(self.alpha)!r}_{size}"

    def replace(self, **changes: Any) -> ArchConfig:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return ArchConfig(**values)

    def workload(self) -> ArchConfig:
        """This architecture with the settings that change only its numbers (BatchNorm's epsilon
        and momentum, dropout) at their defaults: networks of one workload do the same work, so
        they run alike (TF's checkpoints and Keras' ports of them differ only in ``bn_eps``)."""
        return self.replace(**{f.name: f.default for f in fields(self) if f.name in NUMERIC_ONLY})

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, stored in checkpoints and safetensors metadata."""
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown architecture settings {sorted(unknown)}; known: {sorted(known)}")
        values = dict(d)
        if "resolution" in values:
            values["resolution"] = tuple(values["resolution"])
        return cls(**values)


@dataclass(frozen=True)
class Layer:
    """One layer as the paper counts them: a convolution (+ BatchNorm + activation), the pool or
    the fully connected classifier. Sizes are (height, width); ``pad`` is ((top, bottom),
    (left, right)) at this configuration's input size."""

    name: str
    kind: LayerKind
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    groups: int
    in_size: tuple[int, int]
    out_size: tuple[int, int]
    pad: tuple[tuple[int, int], tuple[int, int]]
    batchnorm: bool
    activation: bool
    bias: bool
    block: int | None  # index of the separable block (or of the full conv replacing it); None for stem/pool/fc

    @property
    def in_elements(self) -> int:
        return self.in_channels * self.in_size[0] * self.in_size[1]

    @property
    def out_elements(self) -> int:
        return self.out_channels * self.out_size[0] * self.out_size[1]

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """PyTorch layout: conv (out, in/groups, k, k); fc (out, in); pool ()."""
        if self.kind == "pool":
            return ()
        if self.kind == "fc":
            return (self.out_channels, self.in_channels)
        return (self.out_channels, self.in_channels // self.groups, self.kernel, self.kernel)


def _conv_layer(
    cfg: ArchConfig, name: str, kind: LayerKind, in_ch: int, out_ch: int, kernel: int, stride: int,
    groups: int, in_size: tuple[int, int], block: int | None,
) -> Layer:
    pad = tuple(conv_padding(cfg.padding, s, kernel, stride, stem=name == "stem") for s in in_size)
    out_size = tuple(conv_output_size(s, kernel, stride, p) for s, p in zip(in_size, pad))
    return Layer(
        name=name, kind=kind, in_channels=in_ch, out_channels=out_ch, kernel=kernel, stride=stride,
        groups=groups, in_size=in_size, out_size=out_size, pad=pad,  # type: ignore[arg-type]
        batchnorm=True, activation=True, bias=False, block=block,
    )


def block_settings(variant: Variant = "separable") -> list[tuple[int, int]]:
    """(output channels, stride) of the blocks after the stem, before the width multiplier."""
    if variant == "shallow":
        return [b for i, b in enumerate(BLOCKS) if i not in SHALLOW_REMOVED]
    return list(BLOCKS)


def layers(cfg: ArchConfig) -> list[Layer]:
    """The network, layer by layer, for one configuration.

    Names follow the PyTorch module tree built by ``mobilenet.model``: ``stem``, ``blocks.{i}.dw``
    and ``blocks.{i}.pw`` (or ``blocks.{i}`` for the full-conv variant), ``pool``, ``classifier``.
    """
    ch = lambda c: scale_channels(c, cfg.alpha, cfg.rounding)
    size = cfg.resolution
    in_ch = ch(STEM_CHANNELS)
    out: list[Layer] = [
        _conv_layer(cfg, "stem", "conv", cfg.in_channels, in_ch, KERNEL_SIZE, STEM_STRIDE, 1, size, None)
    ]
    size = out[-1].out_size
    for i, (channels, stride) in enumerate(block_settings(cfg.variant)):
        out_ch = ch(channels)
        if cfg.variant == "conv":
            layer = _conv_layer(cfg, f"blocks.{i}", "conv", in_ch, out_ch, KERNEL_SIZE, stride, 1, size, i)
            out.append(layer)
        else:
            dw_ch = in_ch * cfg.depth_multiplier
            dw = _conv_layer(cfg, f"blocks.{i}.dw", "depthwise", in_ch, dw_ch, KERNEL_SIZE, stride, in_ch, size, i)
            pw = _conv_layer(cfg, f"blocks.{i}.pw", "pointwise", dw_ch, out_ch, 1, 1, 1, dw.out_size, i)
            out += [dw, pw]
        size = out[-1].out_size
        in_ch = out_ch
    no_pad = ((0, 0), (0, 0))
    out.append(Layer("pool", "pool", in_ch, in_ch, 0, 1, 1, size, (1, 1), no_pad, False, False, False, None))
    out.append(
        Layer("classifier", "fc", in_ch, cfg.num_classes, 1, 1, 1, (1, 1), (1, 1), no_pad, False, False, True, None)
    )
    return out


def feature_stages(cfg: ArchConfig) -> dict[int, Layer]:
    """The last convolution at each cumulative stride (2, 4, 8, 16, 32): where a backbone taps its
    feature maps. Strides are multiplied, not read off the sizes, which round up at odd inputs."""
    stages: dict[int, Layer] = {}
    stride = 1
    for layer in layers(cfg):
        if layer.kind in ("pool", "fc"):
            break
        stride *= layer.stride
        stages[stride] = layer
    return stages


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)

"""Exact cost of MobileNet v1, layer by layer, counted from ``mobilenet.arch``. Pure Python: importing
this module never imports torch, so costs can be studied anywhere.

Conventions (the paper's; see docs/cost.md):

* **mult-adds** are the multiply-accumulates of convolution and fully connected weights only.
  BatchNorm, activations, pooling and biases are not mult-adds. FLOPs = 2 x mult-adds. Tools that
  count BatchNorm and ReLU6 (fvcore, ptflops, thop) report 1.8-3.6% more for the same network.
* **weights** are conv + FC weights (the paper's "Million Parameters"); ``trainable_params`` adds the
  FC bias and BatchNorm gamma/beta (what PyTorch counts); ``all_params`` adds BatchNorm running
  mean/variance (what Keras' ``count_params`` prints).
* **activation memory** is counted in bytes at ``bytes_per_element`` (fp32 4, fp16 2, int8 1) for
  ``batch_size`` images. A layer holds its input and output; layers run one after another and a
  buffer is freed once consumed (BatchNorm and activation work in place), so the network's peak is
  the largest input + output of any one layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mobilenet import arch
from mobilenet.arch import ArchConfig, Layer
from mobilenet.errors import InputError, option

# Said beside every number this module prints or serialises: counting tools disagree by up to 3.6%
# on MobileNet because they count BatchNorm and activations, so the unit must be impossible to miss.
CONVENTION = (
    "mult-adds = multiply-accumulates of conv and FC weights only (the paper's unit; BatchNorm, "
    "activations, pooling and biases excluded); FLOPs = 2 × mult-adds"
)

# Table 2's rows, in the paper's order and with its names.
TABLE2_ROWS: tuple[tuple[str, str], ...] = (
    ("pointwise", "Conv 1×1"),
    ("depthwise", "Conv DW 3×3"),
    ("conv", "Conv 3×3"),
    ("fc", "Fully Connected"),
)


@dataclass(frozen=True)
class LayerCost:
    """The cost of one layer. Shapes are (channels, height, width) of one image."""

    name: str
    kind: arch.LayerKind
    block: int | None
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: int
    stride: int
    groups: int
    mult_adds: int
    weights: int
    biases: int
    bn_params: int  # gamma and beta
    bn_stats: int  # running mean and variance (not trainable)
    in_bytes: int
    out_bytes: int

    @property
    def trainable_params(self) -> int:
        return self.weights + self.biases + self.bn_params

    @property
    def activation_bytes(self) -> int:
        return self.in_bytes + self.out_bytes


@dataclass(frozen=True)
class Totals:
    mult_adds: int
    conv_mult_adds: int
    fc_mult_adds: int
    weights: int
    conv_weights: int
    fc_weights: int
    biases: int
    bn_params: int
    bn_stats: int
    trainable_params: int
    all_params: int
    peak_activation_bytes: int
    peak_layer: str

    @property
    def flops(self) -> int:
        return 2 * self.mult_adds


@dataclass(frozen=True)
class Share:
    """One row of the paper's Table 2: a layer type's share of mult-adds and of weights."""

    kind: str
    label: str
    mult_adds: int
    weights: int
    mult_adds_fraction: float
    weights_fraction: float


@dataclass(frozen=True)
class LayerComparison:
    """A standard K x K convolution against the depthwise separable pair that replaces it.

    For the same output map the ratio of mult-adds (and of weights) is exactly
    d/N + d/K^2 with depth multiplier d: 1/N + 1/K^2 in the paper.
    """

    standard: LayerCost
    depthwise: LayerCost
    pointwise: LayerCost

    @property
    def separable_mult_adds(self) -> int:
        return self.depthwise.mult_adds + self.pointwise.mult_adds

    @property
    def separable_weights(self) -> int:
        return self.depthwise.weights + self.pointwise.weights

    @property
    def separable_trainable_params(self) -> int:
        return self.depthwise.trainable_params + self.pointwise.trainable_params

    @property
    def standard_peak_bytes(self) -> int:
        return self.standard.activation_bytes

    @property
    def separable_peak_bytes(self) -> int:
        return max(self.depthwise.activation_bytes, self.pointwise.activation_bytes)

    @property
    def mult_adds_ratio(self) -> float:
        """separable / standard: the paper's 1/N + 1/K² (below 1)."""
        return self.separable_mult_adds / self.standard.mult_adds

    @property
    def savings(self) -> float:
        """standard / separable: how many times fewer mult-adds the separable pair needs (above 1)."""
        return self.standard.mult_adds / self.separable_mult_adds

    @property
    def weights_ratio(self) -> float:
        return self.separable_weights / self.standard.weights

    @property
    def formula_ratio(self) -> float:
        """d/N + d/K^2: the paper's 1/N + 1/D_K^2 generalised to a depth multiplier d."""
        d = self.depthwise.out_shape[0] / self.depthwise.in_shape[0]
        n = self.pointwise.out_shape[0]
        k = self.standard.kernel
        return d / n + d / (k * k)

    def to_dict(self) -> dict[str, Any]:
        """The standard conv, its two replacements and their sum, with the ratios (``mobilenet layer --json``)."""
        return {
            "input": list(self.standard.in_shape),
            "output": list(self.standard.out_shape),
            "standard": {"mult_adds": self.standard.mult_adds, "weights": self.standard.weights,
                         "peak_activation_bytes": self.standard_peak_bytes},
            "depthwise": {"mult_adds": self.depthwise.mult_adds, "weights": self.depthwise.weights},
            "pointwise": {"mult_adds": self.pointwise.mult_adds, "weights": self.pointwise.weights},
            "separable": {"mult_adds": self.separable_mult_adds, "weights": self.separable_weights,
                          "peak_activation_bytes": self.separable_peak_bytes},
            "mult_adds_ratio": self.mult_adds_ratio,
            "weights_ratio": self.weights_ratio,
            "formula_ratio": self.formula_ratio,
            "convention": CONVENTION,
        }


@dataclass(frozen=True)
class NetworkCost:
    config: ArchConfig
    bytes_per_element: int
    batch_size: int
    layers: tuple[LayerCost, ...]
    total: Totals

    def layer(self, name: str) -> LayerCost:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {[x.name for x in self.layers]}")

    def shares(self) -> list[Share]:
        """The paper's Table 2: share of mult-adds and of weights by layer type. Fractions are of
        the totals (conv + FC), so the rows add up to 1."""
        rows = []
        for kind, label in TABLE2_ROWS:
            mult_adds = sum(x.mult_adds for x in self.layers if x.kind == kind)
            weights = sum(x.weights for x in self.layers if x.kind == kind)
            rows.append(
                Share(kind, label, mult_adds, weights, mult_adds / self.total.mult_adds, weights / self.total.weights)
            )
        return rows

    def block_comparisons(self) -> list[LayerComparison]:
        """For every separable block, the standard 3x3 convolution it replaces (same input, output
        channels and stride). Empty for the full-convolution variant, which has no such blocks."""
        by_block: dict[int, list[LayerCost]] = {}
        for layer in self.layers:
            if layer.kind in ("depthwise", "pointwise") and layer.block is not None:
                by_block.setdefault(layer.block, []).append(layer)
        comparisons = []
        for dw, pw in by_block.values():
            standard = _layer_cost(
                arch.Layer(
                    name=f"blocks.{dw.block}", kind="conv", in_channels=dw.in_shape[0], out_channels=pw.out_shape[0],
                    kernel=dw.kernel, stride=dw.stride, groups=1, in_size=dw.in_shape[1:], out_size=pw.out_shape[1:],
                    pad=((0, 0), (0, 0)), batchnorm=True, activation=True, bias=False, block=dw.block,
                ),
                self.bytes_per_element, self.batch_size,
            )
            comparisons.append(LayerComparison(standard, dw, pw))
        return comparisons

    def to_dict(self) -> dict[str, Any]:
        """Every layer, the totals and Table 2's shares, units named (``mobilenet cost --json``)."""
        return {
            "model": self.config.name,
            "config": self.config.to_dict(),
            "convention": CONVENTION,
            "bytes_per_element": self.bytes_per_element,
            "batch_size": self.batch_size,
            "layers": [asdict(x) | {"trainable_params": x.trainable_params} for x in self.layers],
            "total": asdict(self.total) | {"flops": self.total.flops},
            "shares": [asdict(s) for s in self.shares()],
        }


@dataclass(frozen=True)
class Footprint:
    """What a whole network needs: mult-adds, weights (conv + FC), trainable parameters, peak
    activation memory."""

    mult_adds: int
    weights: int
    trainable_params: int
    peak_activation_bytes: int

    @classmethod
    def of(cls, layers: list[LayerCost]) -> Footprint:
        return cls(
            mult_adds=sum(x.mult_adds for x in layers),
            weights=sum(x.weights for x in layers),
            trainable_params=sum(x.trainable_params for x in layers),
            peak_activation_bytes=max(x.activation_bytes for x in layers),
        )


@dataclass(frozen=True)
class NetworkComparison:
    """A separable network against the same network with every separable block replaced by the
    full convolution it stands for (``mobilenet compare``)."""

    network: NetworkCost
    blocks: tuple[LayerComparison, ...]
    separable: Footprint
    standard: Footprint

    @property
    def savings(self) -> float:
        """standard / separable mult-adds of the whole network (8.56 at 1.0-224)."""
        return self.standard.mult_adds / self.separable.mult_adds

    def to_dict(self) -> dict[str, Any]:
        separable, standard = asdict(self.separable), asdict(self.standard)
        return {
            "model": self.network.config.name,
            "config": self.network.config.to_dict(),
            "convention": CONVENTION,
            "blocks": [
                {
                    "block": c.depthwise.block,
                    "input": list(c.depthwise.in_shape),
                    "output": list(c.pointwise.out_shape),
                    "stride": c.depthwise.stride,
                    "standard": {"mult_adds": c.standard.mult_adds, "weights": c.standard.weights,
                                 "peak_activation_bytes": c.standard_peak_bytes},
                    "separable": {"mult_adds": c.separable_mult_adds, "weights": c.separable_weights,
                                  "peak_activation_bytes": c.separable_peak_bytes},
                    "mult_adds_ratio": c.mult_adds_ratio,
                    "weights_ratio": c.weights_ratio,
                    "formula_ratio": c.formula_ratio,
                }
                for c in self.blocks
            ],
            "total": {
                "separable": separable,
                "standard": standard,
                "mult_adds_ratio": separable["mult_adds"] / standard["mult_adds"],
                "weights_ratio": separable["weights"] / standard["weights"],
                "peak_activation_ratio": separable["peak_activation_bytes"] / standard["peak_activation_bytes"],
            },
        }


def network_cost(cfg: ArchConfig | None = None, bytes_per_element: int = 4, batch_size: int = 1) -> NetworkCost:
    """Every layer's cost and the totals for one configuration (default: MobileNet 1.0-224)."""
    cfg = cfg or ArchConfig()
    _check_memory_scale(bytes_per_element, batch_size)
    layers = tuple(_layer_cost(layer, bytes_per_element, batch_size) for layer in arch.layers(cfg))
    conv = [x for x in layers if x.kind in ("conv", "depthwise", "pointwise")]
    fc = [x for x in layers if x.kind == "fc"]
    peak = max(layers, key=lambda x: x.activation_bytes)
    weights = sum(x.weights for x in layers)
    biases = sum(x.biases for x in layers)
    bn_params = sum(x.bn_params for x in layers)
    bn_stats = sum(x.bn_stats for x in layers)
    total = Totals(
        mult_adds=sum(x.mult_adds for x in layers),
        conv_mult_adds=sum(x.mult_adds for x in conv),
        fc_mult_adds=sum(x.mult_adds for x in fc),
        weights=weights,
        conv_weights=sum(x.weights for x in conv),
        fc_weights=sum(x.weights for x in fc),
        biases=biases,
        bn_params=bn_params,
        bn_stats=bn_stats,
        trainable_params=weights + biases + bn_params,
        all_params=weights + biases + bn_params + bn_stats,
        peak_activation_bytes=peak.activation_bytes,
        peak_layer=peak.name,
    )
    return NetworkCost(cfg, bytes_per_element, batch_size, layers, total)


def compare(cfg: ArchConfig | None = None, bytes_per_element: int = 4, batch_size: int = 1) -> NetworkComparison:
    """Every separable block of ``cfg`` (default 1.0-224) against the full convolution it replaces,
    and the two whole networks. The full-convolution variant has nothing to compare: an error."""
    net = network_cost(cfg, bytes_per_element, batch_size)
    if net.config.variant == "conv":
        raise InputError("compare starts from a separable network: use variant 'separable' or 'shallow' "
                         "(the conv variant is what it compares against)")
    blocks = tuple(net.block_comparisons())
    kept = [x for x in net.layers if x.kind not in ("depthwise", "pointwise")]
    standard = Footprint.of(kept + [c.standard for c in blocks])
    return NetworkComparison(net, blocks, Footprint.of(list(net.layers)), standard)


def layer_comparison(
    kernel: int,
    in_channels: int,
    out_channels: int,
    in_size: int | tuple[int, int],
    stride: int = 1,
    padding: arch.Padding = "tf",
    depth_multiplier: int = 1,
    bytes_per_element: int = 4,
    batch_size: int = 1,
) -> LayerComparison:
    """One arbitrary layer: a standard K x K x M x N convolution against its depthwise separable
    replacement, on the same input (e.g. Table 3: ``layer_comparison(3, 512, 512, 14)``)."""
    for value, what in ((kernel, "kernel"), (in_channels, "in_channels"), (out_channels, "out_channels"),
                        (stride, "stride"), (depth_multiplier, "depth_multiplier")):
        _check_positive_int(value, what, "a whole number >= 1")
    _check_memory_scale(bytes_per_element, batch_size)
    size = (in_size, in_size) if isinstance(in_size, int) else tuple(in_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise InputError(f"in_size must be an int or (height, width) of ints >= 1, got {in_size!r}")
    if padding not in arch.PADDINGS:
        raise InputError(f"{option('padding')} must be one of {arch.PADDINGS}, got {padding!r}")

    def conv(kind: arch.LayerKind, k: int, s: int, c_in: int, c_out: int, groups: int, at: tuple[int, int]) -> Layer:
        pad = tuple(arch.conv_padding(padding, x, k, s) for x in at)
        out = tuple(arch.conv_output_size(x, k, s, p) for x, p in zip(at, pad))
        if min(out) < 1:
            raise InputError(f"a {k}x{k} stride-{s} convolution on {at[0]}x{at[1]} leaves no output")
        return Layer(kind, kind, c_in, c_out, k, s, groups, at, out, pad, True, True, False, 0)  # type: ignore[arg-type]

    standard = conv("conv", kernel, stride, in_channels, out_channels, 1, size)
    dw_channels = in_channels * depth_multiplier
    dw = conv("depthwise", kernel, stride, in_channels, dw_channels, in_channels, size)
    pw = conv("pointwise", 1, 1, dw_channels, out_channels, 1, dw.out_size)
    return LayerComparison(*(_layer_cost(x, bytes_per_element, batch_size) for x in (standard, dw, pw)))


def _layer_cost(layer: Layer, bytes_per_element: int, batch_size: int) -> LayerCost:
    out_h, out_w = layer.out_size
    if layer.kind == "pool":
        mult_adds = weights = 0
    else:
        # Each output element of a conv is one dot product over (in/groups) x K x K inputs.
        weights = _product(layer.weight_shape)
        mult_adds = weights * out_h * out_w
    bn = 2 * layer.out_channels if layer.batchnorm else 0
    scale = bytes_per_element * batch_size
    return LayerCost(
        name=layer.name,
        kind=layer.kind,
        block=layer.block,
        in_shape=(layer.in_channels, *layer.in_size),
        out_shape=(layer.out_channels, out_h, out_w),
        kernel=layer.kernel,
        stride=layer.stride,
        groups=layer.groups,
        mult_adds=mult_adds,
        weights=weights,
        biases=layer.out_channels if layer.bias else 0,
        bn_params=bn,
        bn_stats=bn,
        in_bytes=layer.in_elements * scale,
        out_bytes=layer.out_elements * scale,
    )


def _product(values: tuple[int, ...]) -> int:
    result = 1
    for v in values:
        result *= v
    return result


def _check_memory_scale(bytes_per_element: object, batch_size: object) -> None:
    """The one check of what scales activation memory, for every entry point that takes it: a
    value < 1 would print negative or zero bytes rather than fail."""
    _check_positive_int(bytes_per_element, "bytes_per_element", "4 for fp32, 2 for fp16/bf16, 1 for int8")
    _check_positive_int(batch_size, "batch_size", "images per batch")


def _check_positive_int(value: object, name: str, meaning: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{option(name)} must be an int >= 1 ({meaning}), got {value!r}")


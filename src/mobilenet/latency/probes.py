"""What the calibration measures: micro-benchmarks of one kind of kernel each. Pure Python.

A probe is a short chain of identical layers (a depthwise, pointwise or full 3x3 conv that keeps
its input's shape, repeated) or a single layer (the stem, a strided depthwise conv, the pool, the
classifier), built in the runtime at one input size and timed at a few. Strided layers are padded
as TF-slim's 'SAME' pads them (the published models' padding), which some runtimes run as a
separate kernel: that cost is theirs, measured with them. Their channel counts and sizes span what the
published models and the validation grid hold (8 to about 1,100 channels, maps from 4x4 to
120x120), and several are not multiples of 8 or 16, so that the fit can tell the runtime's SIMD
lane width (see ``mobilenet.latency.fit``). None is a layer of the validation grid's networks.

The layers are counted by ``mobilenet.cost`` like any network's: the chainable convs through
``cost.layer_comparison`` (one standard, depthwise and pointwise layer on the same input), the
pool and classifier as the last layers of a network with that many channels.

The list is in priority order: a calibration that runs out of time drops the last probes, and the
kernels they measure fall back to the most similar kernel measured (``fit.STAND_INS``). The full
3x3 conv, which only Table 4's network uses, comes last.

**Network probes** (``NetworkProbe``) are whole networks: the published widths at the published
resolutions (α 0.25 to 1.0, 128 to 224), none of them in the validation grid. A layer inside a
network does not run as it does in a chain of its twins: its neighbours' activations and weights
share the caches, and some runtimes reorder the layout between kernels of different kinds. The
networks measure that, and ``fit.fit_in_network`` learns from them one factor per kind of layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from mobilenet import arch, cost
from mobilenet.arch import ArchConfig

CHAIN = 4  # identical layers in a chained probe: the call's own cost is spread over them
# The call probe: one 1x1 conv on a tiny image, about the least a network can do; at growing
# sizes in a full calibration, what a call costs per byte handed over to the runtime and back.
CALL_CHANNELS, CALL_SIZE = 3, 8
CALL_SIZES = (CALL_SIZE, 56, 112)


PADDING: arch.Padding = "tf"  # how strided probes pad: as the published models do


@dataclass(frozen=True)
class Probe:
    """``kernel`` (one of ``model.KERNELS``, or ``"call"``) on ``channels`` input channels (the
    stem: output channels), timed at each square input size in ``sizes``."""

    kernel: str
    channels: int
    sizes: tuple[int, ...]

    @property
    def repeats(self) -> int:
        return CHAIN if self.kernel in ("depthwise", "pointwise", "conv") else 1

    @property
    def stride(self) -> int:
        return 2 if self.kernel in ("stem", "depthwise_s2") else 1

    def describe(self) -> str:
        named = {"call": "a call (1x1 conv on an RGB image)", "stem": f"stem conv 3->{self.channels}",
                 "fc": f"classifier {self.channels}->1000",
                 "depthwise_s2": f"stride-2 depthwise on {self.channels} channels"}
        what = named.get(self.kernel, f"{self.kernel} on {self.channels} channels")
        chain = f" x{self.repeats}" if self.repeats > 1 else ""
        sizes = "" if self.kernel == "fc" else f" at {', '.join(f'{s}x{s}' for s in self.sizes)}"
        return what + chain + sizes

    def layers(self, size: int, batch_size: int = 1, bytes_per_element: int = 4) -> tuple[cost.LayerCost, ...]:
        """The probe's layers on a ``size`` x ``size`` input, as ``cost`` counts them."""
        if self.kernel in ("pool", "fc"):
            # The last layers of a network whose final map has this many channels and this size.
            cfg = ArchConfig(alpha=(self.channels + 0.5) / arch.BLOCKS[-1][0],
                             resolution=max(size * 32, arch.MIN_RESOLUTION))
            net = cost.network_cost(cfg, bytes_per_element, batch_size)
            return (net.layer("pool" if self.kernel == "pool" else "classifier"),)
        if self.kernel == "call":
            pair = cost.layer_comparison(1, CALL_CHANNELS, CALL_CHANNELS, size, 1, "symmetric",
                                         bytes_per_element=bytes_per_element, batch_size=batch_size)
            return (pair.standard,)
        c_in = 3 if self.kernel == "stem" else self.channels
        pair = cost.layer_comparison(arch.KERNEL_SIZE, c_in, self.channels, size, self.stride, PADDING,
                                     bytes_per_element=bytes_per_element, batch_size=batch_size)
        layer = {"stem": pair.standard, "depthwise": pair.depthwise, "depthwise_s2": pair.depthwise,
                 "pointwise": pair.pointwise, "conv": pair.standard}[self.kernel]
        return (layer,) * self.repeats

    def input_shape(self, size: int, batch_size: int = 1) -> tuple[int, ...]:
        """NCHW (the classifier: NC) input of the probe at ``size``."""
        first = self.layers(size)[0]
        return (batch_size, first.in_shape[0]) if self.kernel == "fc" else (batch_size, *first.in_shape)


@dataclass(frozen=True)
class NetworkProbe:
    """The whole separable network of width ``alpha`` (TF 'SAME' padding, as the published models),
    timed at each square resolution in ``sizes``."""

    alpha: float
    sizes: tuple[int, ...]
    kernel = "network"  # (a class attribute: what ``Probe.kernel`` is for the others)
    repeats = 1

    def arch_cfg(self, size: int) -> ArchConfig:
        return ArchConfig(alpha=self.alpha, resolution=size, padding=PADDING)

    def describe(self) -> str:
        return f"network {self.alpha:g} at {', '.join(str(s) for s in self.sizes)}"

    def layers(self, size: int, batch_size: int = 1, bytes_per_element: int = 4) -> tuple[cost.LayerCost, ...]:
        return cost.network_cost(self.arch_cfg(size), bytes_per_element, batch_size).layers

    def input_shape(self, size: int, batch_size: int = 1) -> tuple[int, ...]:
        return (batch_size, 3, size, size)


AnyProbe = Probe | NetworkProbe


def default_networks() -> tuple[NetworkProbe, ...]:
    """The whole networks a full calibration times (15; 7 builds in the runtimes that convert
    once and resize): the published α at the published resolutions, whose channels are whole
    blocks of 8 or 16, and three α whose channels are not (0.35, 0.7, 0.9), none of the
    validation grid's."""
    return (NetworkProbe(1.0, (128, 160, 224)), NetworkProbe(0.25, (128, 224)), NetworkProbe(0.5, (160, 224)),
            NetworkProbe(0.75, (128, 192)), NetworkProbe(0.35, (128, 224)), NetworkProbe(0.7, (160, 224)),
            NetworkProbe(0.9, (128, 192)))


def default_plan() -> tuple[Probe, ...]:
    """The probes of a full calibration, most needed first (25 models, about 60 shapes). Where a
    runtime profiles its networks, only those whose kernel no network profile covers are built
    (``calibrate._measure``): the call's and the full conv's, and the stem's where the input is
    converted.

    Two more pointwise chains, on 128 and 1024 channels, give a pointwise conv blocked by 32
    channels (XNNPACK's at fp32 on AVX-512, ``backends.base.xnnpack_channel_blocks``) probes at a
    network's widths. Of the others only 64 channels fill those blocks, and a blocked twin fitted
    to that short chain alone bent ExecuTorch fp32's in-network factors to 0 for the depthwise
    layers and 3.5 for the stem, pool and classifier (Zen 5, docs/latency.md §4, 2026-12-05)."""
    chains = ((40, (28, 56, 112)), (300, (7, 14, 28)), (120, (14, 28, 56)), (1000, (4, 7, 10)),
              (12, (56, 112)), (64, (28, 56)))
    plan = [Probe("call", CALL_CHANNELS, CALL_SIZES)]
    for channels, sizes in chains:
        plan += [Probe("pointwise", channels, sizes), Probe("depthwise", channels, sizes)]
    plan += [Probe("pointwise", 128, (14, 28, 56)), Probe("pointwise", 1024, (4, 7, 10))]
    plan += [Probe("stem", 32, (128, 176, 224)), Probe("depthwise_s2", 40, (56, 112)),
             Probe("depthwise_s2", 300, (14, 28)), Probe("stem", 12, (128, 224)), Probe("depthwise_s2", 120, (28, 56)),
             Probe("fc", 1000, (1,)), Probe("fc", 300, (1,)), Probe("pool", 500, (4, 7)),
             Probe("conv", 40, (28, 56)), Probe("conv", 300, (7, 14))]
    return tuple(plan)


def quick_plan() -> tuple[Probe, ...]:
    """A few-second calibration (tests, a first look): one or two probes per kernel."""
    return (Probe("call", CALL_CHANNELS, (CALL_SIZE,)), Probe("pointwise", 40, (14, 56)),
            Probe("pointwise", 300, (7, 14)), Probe("depthwise", 40, (14, 56)), Probe("depthwise", 300, (7, 14)),
            Probe("depthwise_s2", 100, (14, 28, 56)), Probe("stem", 16, (96, 128, 160)), Probe("fc", 500, (1,)),
            Probe("pool", 500, (5,)))


def quick_networks() -> tuple[NetworkProbe, ...]:
    """Three small networks for a quick calibration: channels in whole blocks and not."""
    return (NetworkProbe(0.25, (128,)), NetworkProbe(0.35, (128,)), NetworkProbe(1.0, (128,)))

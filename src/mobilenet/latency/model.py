"""The latency model itself: given a machine's constants, the time of every layer. Pure Python:
like ``mobilenet.cost`` it never imports torch, so predictions can be studied anywhere.

Every layer of ``mobilenet.arch`` runs as one kernel (a convolution with its folded BatchNorm and
ReLU6 is one fused kernel in every runtime measured), of one of seven kinds: the stem conv, a
depthwise conv (stride 1, or stride 2 with its TF 'SAME' pad, which some runtimes run apart), a
pointwise conv, a full 3x3 conv (Table 4's network), the average pool and the classifier. Each
kind has a **roofline** on the machine at hand, for one (CPU, runtime, precision, threads, batch
size)::

    time = overhead + max(mult-adds / compute rate, bytes / bandwidth)

* ``mult-adds`` are ``mobilenet.cost``'s (conv and FC weights, the paper's unit) times the batch,
  counted on channels rounded up to the runtime's SIMD lane width (a 9-channel layer keeps a
  16-lane register as busy as a 16-channel one);
* ``bytes`` are what the kernel must move at least once: its input and output activations
  (``cost``'s ``in_bytes + out_bytes`` at the precision's element size, batch included) and its
  weights;
* the layer is **compute-bound** when its arithmetic intensity (mult-adds per byte) is above the
  kernel's ridge point (compute rate / bandwidth), **memory-bound** below it;
* the overhead is what one kernel costs however small: dispatch, and waking and joining threads.

Inside a whole network a kernel does not run quite as it does in a chain of its twins (the
neighbours' activations and weights share the caches; some runtimes reorder the layout between
kernels of different kinds), so each kind's roofline time is multiplied by its **in-network
factor** (``Calibration.in_network``), learned from whole networks of the published sizes.

A call reads every weight of the network once. Those the last-level cache cannot keep from one
call to the next (``Calibration.cache_bytes``, ``missed_fraction``) come from memory at every
call, at a further cost per byte (``Roofline.far_s``): so a wide network on a small image, whose
time is mostly its weights, runs slower than a roofline fitted to networks whose weights stay.

A layer's own activations stay in the cache while they fit (``Calibration.layer_cache_bytes``,
``spilled_bytes``); beyond that its input and output stream from memory, at a further cost per
byte (``Roofline.spill_s``): at batch 8 OpenVINO runs a layer over the whole batch, and its first
five depthwise convs in 1.1-240 (16-40 MB of activations, input and output together) ran 3.3-3.7
times their roofline's time, where the same layers of 0.3-240, a quarter of the bytes, ran 1.0-2.2
times it (Zen 4, docs/latency.md §4, 2026-12-06).

A call adds a fixed cost of its own (``call_s``: entering the runtime and leaving it), a cost per
byte of its input and output handed over to the runtime and back (``handover_bytes_per_s``: a
probe hands over far more than a network's image, ExecuTorch 2.3x as slowly as LiteRT here) and,
where the predictor converts the input in Python before the call (LiteRT's and ExecuTorch's NHWC
input), the time to convert the image (``feed_bytes_per_s``). The constants come
from ``mobilenet.latency.calibrate``: micro-benchmarks and whole networks in the runtime itself.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, option

CONV_KERNELS: tuple[str, ...] = ("stem", "depthwise", "depthwise_s2", "pointwise", "conv")
# A runtime with a blocked layout runs a conv whose channels are not whole blocks by another,
# slower implementation. ONNX Runtime on the Zen 4: its depthwise conv is about 4x faster on
# channels that are multiples of 4 (44 at 56x56: 47 µs; 43, 45 or 46: 183-195 µs), its pointwise
# conv faster on multiples of 16 (NCHWc: 16 a block on AVX-512, 8 on AVX2). Such a conv is a
# kernel of its own; each runtime says its blocks per kind (``Calibration.channel_blocks``).
UNBLOCKED = "_unblocked"
KERNELS: tuple[str, ...] = (*CONV_KERNELS, "pool", "fc", *(k + UNBLOCKED for k in CONV_KERNELS))
_LABELS = {
    "stem": "stem 3x3 conv", "depthwise": "depthwise 3x3", "depthwise_s2": "depthwise 3x3, stride 2",
    "pointwise": "pointwise 1x1", "conv": "full 3x3 conv", "pool": "average pool", "fc": "classifier (FC)",
}
KERNEL_LABELS: dict[str, str] = _LABELS | {k + UNBLOCKED: _LABELS[k] + ", channels off the block" for k in CONV_KERNELS}
# The layer types time is shared among (the paper's Table 2 rows, the stem told apart).
LAYER_TYPES: tuple[str, ...] = ("stem", "depthwise", "pointwise", "conv", "pool", "fc")
BOUNDS: tuple[str, ...] = ("compute", "memory")
# Bytes of one activation (and weight) element as the runtime moves it. LiteRT's fp16 files store
# float16 weights but dequantize them at load and run float32 kernels, so they move 4 bytes.
ELEMENT_BYTES: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
# A predictor takes a float32 batch whatever precision runs inside.
IO_ELEMENT_BYTES = 4
MODEL_VERSION = 19  # bump when the meaning of the constants changes: cached calibrations are redone


class CorruptCalibration(InputError):
    """Stored constants that do not describe a calibration (a damaged or foreign cache entry)."""


def kernel_of(layer: cost.LayerCost, channel_blocks: Mapping[str, int] | None = None) -> str:
    """The kind of kernel a layer runs as: ``cost``'s kinds, with the stem told from full convs
    and strided depthwise convs from the others; a conv whose channels are not whole blocks of
    its kind's ``channel_blocks`` (none: 1) is the kind's ``_unblocked`` variant."""
    if layer.kind == "conv":
        kernel = "stem" if layer.block is None else "conv"
    elif layer.kind == "depthwise" and layer.stride > 1:
        kernel = "depthwise_s2"
    else:
        kernel = layer.kind
    if kernel in CONV_KERNELS and not fills_blocks(layer, (channel_blocks or {}).get(kernel, 1)):
        return kernel + UNBLOCKED
    return kernel


def fills_blocks(layer: cost.LayerCost, channel_block: int) -> bool:
    """Whether a conv's channels are whole blocks of ``channel_block`` (an RGB input always is:
    a blocked runtime reads the image as it is)."""
    c_in, c_out = layer.in_shape[0], layer.out_shape[0]
    return c_out % channel_block == 0 and (c_in % channel_block == 0 or c_in <= 4)


def base_kernel(kernel: str) -> str:
    """The kind of a kernel, its ``_unblocked`` variant told apart no more."""
    return kernel.removesuffix(UNBLOCKED)


def layer_type(kernel: str) -> str:
    """The layer type a kernel's time counts toward (``LAYER_TYPES``)."""
    kernel = base_kernel(kernel)
    return "depthwise" if kernel == "depthwise_s2" else kernel


def element_bytes(runtime: str, precision: str) -> int:
    """Bytes per activation element that ``runtime`` moves at ``precision``."""
    if precision not in ELEMENT_BYTES:
        raise InputError(f"{option('precision')} must be one of {tuple(ELEMENT_BYTES)}, got {precision!r}")
    return 4 if (runtime, precision) == ("litert", "fp16") else ELEMENT_BYTES[precision]


def padded(channels: int, lanes: int) -> int:
    return -(-channels // lanes) * lanes


@dataclass(frozen=True)
class Work:
    """What one layer asks of the machine: mult-adds (batch included, channels padded to the lane
    width, or with a tail counted on the whole lanes alone, and positions to their block), the
    bytes it moves at least once, its groups (a depthwise conv's channels, batch included; 0 for a
    dense layer), its output positions (a conv's output pixels, batch included; 0 for the pool
    and the classifier), of its weights' bytes those the call fetches from beyond the last-level
    cache (``missed_fraction``: once per call, whatever the batch), for a kernel that runs the
    channels beyond its last whole lane one at a time (``Roofline.tail``), those channels'
    output positions, and of its activations' bytes those beyond what the cache holds for one
    layer (``spilled_bytes``)."""

    mult_adds: float
    bytes: float
    groups: int = 0
    pixels: int = 0
    far_bytes: float = 0.0
    tail_pixels: int = 0
    spilled_bytes: float = 0.0

    @property
    def intensity(self) -> float:
        return self.mult_adds / self.bytes if self.bytes else math.inf


CONV_KINDS = ("conv", "depthwise", "pointwise")  # cost's kinds that run over output positions


def layer_work(layer: cost.LayerCost, batch_size: int, weight_bytes: int, lanes: int = 1,
               weights_missed: float = 0.0, tail: bool = False, layer_cache_bytes: float = math.inf,
               position_block: int = 1) -> Work:
    """The work of ``layer`` (a ``cost.LayerCost`` counted at ``batch_size`` and the activation
    element size), its weights at ``weight_bytes`` each, channels padded to ``lanes``, and
    ``weights_missed`` of its weights fetched from beyond the cache (``missed_fraction``).
    ``tail``: a grouped conv's channels beyond its last whole lane are not padded but run one
    at a time (``Work.tail_pixels``), its mult-adds counted on the whole lanes alone.
    ``layer_cache_bytes``: what the cache holds of a layer's activations (``spilled_bytes``).
    ``position_block``: a conv's output positions, per image, are computed in whole blocks of it
    (``Roofline.position_block``)."""
    c_in, c_out = layer.in_shape[0], layer.out_shape[0]
    scale, tail_channels = 1.0, 0
    if layer.mult_adds and position_block > 1 and layer.kind in CONV_KINDS:
        positions = layer.out_shape[1] * layer.out_shape[2]
        scale = padded(positions, position_block) / positions
    if layer.mult_adds and lanes > 1 and tail and layer.groups > 1:
        tail_channels = c_out % lanes
        scale *= (c_out - tail_channels) / c_out
    elif layer.mult_adds and lanes > 1:
        scale *= padded(c_out, lanes) / c_out
        if layer.groups == 1 and c_in > 3:  # a dense layer reads every input channel (not the RGB stem)
            scale *= padded(c_in, lanes) / c_in
    groups = layer.groups * batch_size if layer.groups > 1 else 0
    pixels = layer.out_shape[1] * layer.out_shape[2] * batch_size if layer.kind in CONV_KINDS else 0
    weights = layer.weights * weight_bytes
    return Work(layer.mult_adds * batch_size * scale, layer.in_bytes + layer.out_bytes + weights, groups, pixels,
                weights * weights_missed, pixels * tail_channels, spilled_bytes(layer, layer_cache_bytes))


def spilled_bytes(layer: cost.LayerCost, layer_cache_bytes: float) -> float:
    """Of ``layer``'s input and output activations (counted at their batch), the bytes beyond
    ``layer_cache_bytes``, what the cache holds of them: those stream from memory."""
    return max(0.0, layer.in_bytes + layer.out_bytes - layer_cache_bytes)


def call_weight_bytes(layers: Iterable[cost.LayerCost], weight_bytes: int) -> int:
    """The weights one call reads (every layer's, at ``weight_bytes`` each): what the cache must
    keep from one call to the next for none of them to come from memory."""
    return sum(layer.weights for layer in layers) * weight_bytes


def missed_fraction(call_weights: float, cache_bytes: float) -> float:
    """The share of a call's weights that come from beyond a last-level cache keeping
    ``cache_bytes`` of them between calls: none while they fit, then all but what it keeps.

    Each call reads every weight once, in the same order, and between two reads of one weight
    the call's other weights pass through the cache: the weights that do not fit come from
    memory at every call, whatever the batch. A wide network on a small image waits on them
    (α 1.1 at 112 px, 19 MiB at fp32: its pointwise layers on 4x4 maps and its classifier ran
    30-45% slower than a roofline fitted to networks of up to 16 MiB, oneDNN Graph on a Zen 5,
    docs/latency.md §4); at int8 the same network's weights fit."""
    return max(0.0, 1.0 - cache_bytes / call_weights) if call_weights > 0 else 0.0


@dataclass(frozen=True)
class Roofline:
    """One kind of kernel on one machine: compute rate (mult-adds/s), bandwidth (bytes/s), a
    fixed overhead (s) per layer, an overhead per group (s; a grouped conv that loops over its
    channels one small convolution at a time, as ONNX Runtime's unblocked depthwise conv does,
    pays it per channel), an overhead per output position (s; a kernel that does fixed work per
    output pixel whatever its channels, as LiteRT's int8 convs do: about 30 ns a pixel on the AMX
    Xeon, where a 16-channel pointwise conv then runs at 8 GMAC/s and a 300-channel one at 230),
    a cost per byte of weights fetched from beyond the last-level cache (s; ``Work.far_bytes``:
    memory's bandwidth, and its latency where the kernel cannot hide it behind its arithmetic),
    the lane width its channels are padded to, and the block its output positions are computed in
    (``position_block``: each image's positions padded to whole blocks, as a matrix product over
    them computes its columns; ONNX Runtime's NCHW convs, off the NCHWc block, pack them in 16s:
    a 1x1 conv on 563 channels costs the same at 7x7 as at 8x8). With ``tail``, a grouped conv's channels
    beyond its last whole lane are not padded but run one at a time, at ``tail_s`` an output
    position each (ONNX Runtime's int8 depthwise conv: about 5 ns a position for each of them,
    against 0.8 ns for a channel in a whole lane; Zen 5, docs/latency.md §1), and a cost per
    byte of activations beyond what the cache holds of a layer (s; ``Work.spilled_bytes``). An
    infinite rate or bandwidth is a roof the calibration never saw bind."""

    macs_per_s: float
    bytes_per_s: float
    overhead_s: float
    lanes: int = 1
    group_s: float = 0.0
    pixel_s: float = 0.0
    far_s: float = 0.0
    tail: bool = False
    tail_s: float = 0.0
    spill_s: float = 0.0
    position_block: int = 1

    @property
    def ridge(self) -> float:
        """Mult-adds per byte above which a layer is compute-bound."""
        return self.macs_per_s / self.bytes_per_s

    def compute_s(self, work: Work) -> float:
        return work.mult_adds / self.macs_per_s

    def memory_s(self, work: Work) -> float:
        return work.bytes / self.bytes_per_s

    def far_memory_s(self, work: Work) -> float:
        """Waiting on the weights from beyond the cache, and on the activations that spill from
        it, which the arithmetic does not hide."""
        return self.far_s * work.far_bytes + self.spill_s * work.spilled_bytes

    def seconds(self, work: Work) -> float:
        fixed = (self.overhead_s + self.group_s * work.groups + self.pixel_s * work.pixels
                 + self.tail_s * work.tail_pixels + self.far_memory_s(work))
        return fixed + max(self.compute_s(work), self.memory_s(work))

    def bound(self, work: Work) -> str:
        """Which roof binds: memory's where moving the bytes (weights from beyond the cache and
        activations spilled from it included) takes longer than the arithmetic."""
        waits = self.memory_s(work) + self.far_memory_s(work)
        return "compute" if self.compute_s(work) >= waits else "memory"

    def to_dict(self) -> dict[str, float | None]:
        return {"macs_per_s": _finite_or_none(self.macs_per_s), "bytes_per_s": _finite_or_none(self.bytes_per_s),
                "overhead_s": self.overhead_s, "lanes": self.lanes, "group_s": self.group_s, "pixel_s": self.pixel_s,
                "far_s": self.far_s, "tail": self.tail, "tail_s": self.tail_s, "spill_s": self.spill_s,
                "position_block": self.position_block}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Roofline:
        keys = ("macs_per_s", "bytes_per_s", "overhead_s", "lanes", "group_s", "pixel_s", "far_s", "tail_s",
                "spill_s")
        rate, bandwidth, overhead, lanes, per_group, per_pixel, per_far_byte, per_tail, per_spilled_byte = (
            d.get(k) for k in keys)
        values = [math.inf if v is None else v for v in (rate, bandwidth)] + [overhead, per_group, per_pixel,
                                                                              per_far_byte, per_tail, per_spilled_byte]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        tail, position_block = d.get("tail"), d.get("position_block")
        blocks = all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in (lanes, position_block))
        if not numbers or not (values[0] > 0 and values[1] > 0 and all(0 <= v < math.inf for v in values[2:])) \
                or not blocks or not isinstance(tail, bool):
            raise CorruptCalibration(f"not a roofline: {dict(d)!r}")
        return cls(float(values[0]), float(values[1]), float(values[2]), lanes, float(values[3]), float(values[4]),
                   float(values[5]), tail, float(values[6]), float(values[7]), position_block)


@dataclass(frozen=True)
class Calibration:
    """A machine's constants for one (CPU, runtime, precision, threads, batch size).

    ``fixed_batch``: the runtime runs a batch as that many batch-1 calls (LiteRT and ExecuTorch
    files have batch 1), so it is calibrated at batch 1 and a batch costs that many calls.
    ``channel_blocks``: per conv kind, the channels its fast implementation needs whole blocks of
    (a kind not named: 1, no unblocked variant; see ``UNBLOCKED``).
    ``in_network``: each kernel's in-network factor (a kernel not named: 1).
    ``cache_bytes``: the weights the last-level cache keeps from one call to the next;
    ``layer_cache_bytes``: what it holds of one layer's activations (infinite: all of them).
    ``key``: what the constants were measured on
    (see ``mobilenet.latency.cache``); ``fit``: how well each roofline fits its probes."""

    runtime: str
    precision: str
    batch_size: int
    threads: int | None
    kernels: dict[str, Roofline]
    call_s: float
    feed_bytes_per_s: float
    fixed_batch: bool = False
    channel_blocks: dict[str, int] = field(default_factory=dict)
    in_network: dict[str, float] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    handover_bytes_per_s: float = math.inf
    cache_bytes: float = math.inf
    layer_cache_bytes: float = math.inf

    @property
    def element_bytes(self) -> int:
        return element_bytes(self.runtime, self.precision)

    @property
    def network_error(self) -> float | None:
        """Its RMSPE on its own whole networks, in-network factors applied (None: it timed none):
        how far off its predictions may be."""
        error = self.fit.get("in_network", {}).get("rmspe_after")
        return float(error) if isinstance(error, (int, float)) and math.isfinite(error) else None

    @property
    def machine_drift(self) -> float | None:
        """How far apart the machine's paces were from second to second while it timed, slowest
        over quickest (``timing.Rounds.drift``; 1.0: a steady machine; None where it does not say:
        calibrations cached before it was recorded)."""
        drift = self.fit.get("machine_drift")
        return float(drift) if isinstance(drift, (int, float)) and math.isfinite(drift) else None

    @property
    def measured_at(self) -> datetime.datetime | None:
        """When it was measured (UTC; None where it does not say: calibrations cached before it
        was recorded). The machine's speed moves between spells (docs/latency.md §4), and a
        calibration keeps the speed of its own."""
        found = self.fit.get("measured_at")
        try:
            when = datetime.datetime.fromisoformat(found) if isinstance(found, str) else None
        except ValueError:
            return None
        return when if when is None or when.tzinfo is not None else when.replace(tzinfo=datetime.timezone.utc)

    @property
    def calibrated_at(self) -> str | None:
        """``measured_at`` as the JSON reports give it (ISO 8601, UTC), or None."""
        when = self.measured_at
        return None if when is None else when.isoformat()

    def measured_when(self, now: datetime.datetime | None = None) -> str:
        """"2026-12-06 14:02 UTC, 3 h ago", as the command line and the explorer say it; "" where
        it does not say when."""
        at = self.measured_at
        if at is None:
            return ""
        ago = max(((now or datetime.datetime.now(datetime.timezone.utc)) - at).total_seconds(), 0.0)
        age = (f"{ago / 86400:.0f} days" if ago >= 2 * 86400 else f"{ago / 3600:.0f} h" if ago >= 3600
               else f"{ago / 60:.0f} min")
        return f"{at.astimezone(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {age} ago"

    def factor(self, kernel: str) -> float:
        """How much longer ``kernel`` takes inside a network than its roofline says."""
        return self.in_network.get(kernel, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": MODEL_VERSION, "runtime": self.runtime, "precision": self.precision,
            "batch_size": self.batch_size, "threads": self.threads, "call_s": self.call_s,
            "feed_bytes_per_s": _finite_or_none(self.feed_bytes_per_s),
            "handover_bytes_per_s": _finite_or_none(self.handover_bytes_per_s),
            "fixed_batch": self.fixed_batch, "channel_blocks": self.channel_blocks,
            "cache_bytes": _finite_or_none(self.cache_bytes),
            "layer_cache_bytes": _finite_or_none(self.layer_cache_bytes),
            "kernels": {k: r.to_dict() for k, r in self.kernels.items()},
            "in_network": self.in_network, "key": self.key, "fit": self.fit,
        }

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        """The calibration ``d`` describes; ``CorruptCalibration`` if it describes none (never a
        half-read one: a damaged cache is measured again, not trusted)."""
        try:
            if d["model_version"] != MODEL_VERSION:
                raise CorruptCalibration(f"model version {d['model_version']!r}, not {MODEL_VERSION}")
            kernels = {k: Roofline.from_dict(d["kernels"][k]) for k in KERNELS}
            call_bytes = math.inf if d["feed_bytes_per_s"] is None else float(d["feed_bytes_per_s"])
            handover = math.inf if d["handover_bytes_per_s"] is None else float(d["handover_bytes_per_s"])
            cache = math.inf if d["cache_bytes"] is None else float(d["cache_bytes"])
            layer_cache = math.inf if d["layer_cache_bytes"] is None else float(d["layer_cache_bytes"])
            calibration = cls(
                runtime=str(d["runtime"]), precision=str(d["precision"]), batch_size=int(d["batch_size"]),
                threads=None if d["threads"] is None else int(d["threads"]), kernels=kernels,
                call_s=float(d["call_s"]), feed_bytes_per_s=call_bytes,
                fixed_batch=bool(d["fixed_batch"]),
                channel_blocks={str(k): int(v) for k, v in d["channel_blocks"].items()},
                in_network={str(k): float(v) for k, v in d["in_network"].items()},
                key=dict(d["key"]), fit=dict(d["fit"]), handover_bytes_per_s=handover, cache_bytes=cache,
                layer_cache_bytes=layer_cache,
            )
        except CorruptCalibration:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CorruptCalibration(f"not a calibration ({type(err).__name__}: {err})") from None
        c = calibration
        # What the properties read without checking again (``network_error``: ``fit["in_network"]``)
        # must have the shape they read: dict() makes a dict of a list of pairs as well.
        if not (isinstance(d["fit"], dict) and isinstance(d["key"], dict)
                and isinstance(c.fit.get("in_network", {}), dict)):
            raise CorruptCalibration("a calibration whose fit or key is not a mapping of its own")
        factors_ok = all(k in KERNELS and 0 < v < math.inf for k, v in c.in_network.items())
        rates_ok = c.feed_bytes_per_s > 0 and c.handover_bytes_per_s > 0 and c.cache_bytes > 0 \
            and c.layer_cache_bytes > 0
        if not (c.call_s >= 0 and rates_ok and c.batch_size >= 1 and c.precision in ELEMENT_BYTES
                and factors_ok and all(k in CONV_KERNELS and v >= 1 for k, v in c.channel_blocks.items())):
            raise CorruptCalibration("a calibration with impossible constants")
        return calibration


@dataclass(frozen=True)
class LayerLatency:
    """One layer's predicted time and why: its work, its intensity against the kernel's ridge
    point, and which roof binds."""

    name: str
    kind: str  # cost's kind: conv, depthwise, pointwise, pool, fc
    kernel: str  # one of KERNELS
    mult_adds: float
    bytes: float
    intensity: float  # mult-adds per byte
    ridge: float  # the kernel's ridge point on this machine (mult-adds per byte)
    bound: str  # "compute" | "memory"
    predicted_ms: float
    spilled_bytes: float = 0.0  # of its activations, the bytes beyond what the cache holds of a layer

    @property
    def attained_macs_per_s(self) -> float:
        """Mult-adds per second at the predicted time (counted as ``mult_adds`` is): where the
        layer sits under its kernel's compute roof. The pointwise convs run near the machine's
        best; a depthwise conv, with no reuse of its inputs across output channels, far below it."""
        return self.mult_adds / (self.predicted_ms * 1e-3) if self.predicted_ms > 0 else 0.0

    @property
    def attained_bytes_per_s(self) -> float:
        """Bytes per second at the predicted time, of the bytes the layer must move at least once."""
        return self.bytes / (self.predicted_ms * 1e-3) if self.predicted_ms > 0 else 0.0

    @property
    def roofs_seen(self) -> bool:
        """Whether the calibration saw both roofs of this layer's kernel bind (a finite, non-zero
        ridge). Where it saw one, ``bound`` names that one: the probes of a stride-1 depthwise
        conv, for one, all move about 8 bytes for 9 mult-adds at fp32, so its compute and memory
        roofs scale alike and the probes cannot tell them apart."""
        return 0 < self.ridge < math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "kernel": self.kernel, "predicted_ms": self.predicted_ms,
                "bound": self.bound, "intensity": _finite_or_none(self.intensity),
                "ridge": _finite_or_none(self.ridge) if self.roofs_seen else None,
                "attained_macs_per_s": self.attained_macs_per_s, "attained_bytes_per_s": self.attained_bytes_per_s,
                "spilled_bytes": self.spilled_bytes}


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted time of every layer of one network, and of one call, on one calibrated machine."""

    arch_cfg: ArchConfig
    calibration: Calibration
    batch_size: int
    layers: tuple[LayerLatency, ...]
    call_ms: float  # the call itself: entering the runtime, feeding it the image
    weight_bytes: int = 0  # the weights one call reads
    # Of ``call_ms``, the predictor converting the image for its file in Python (LiteRT's and
    # ExecuTorch's NHWC, uint8 at int8; 0 where the runtime takes the batch as it is): what a
    # caller feeding the file's own input (``predictor.native_input``, as ``mobilenet bench``) saves.
    conversion_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.call_ms + sum(x.predicted_ms for x in self.layers)

    @property
    def weight_bytes_from_memory(self) -> float:
        """Of ``weight_bytes``, those beyond what the cache keeps between calls: read from memory
        at every call (``missed_fraction``)."""
        return self.weight_bytes * missed_fraction(self.weight_bytes, self.calibration.cache_bytes)

    def layer(self, name: str) -> LayerLatency:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}")

    def type_ms(self) -> dict[str, float]:
        """Predicted milliseconds per layer type (``LAYER_TYPES``; types the network lacks omitted)."""
        out: dict[str, float] = {}
        for layer in self.layers:
            kind = layer_type(layer.kernel)
            out[kind] = out.get(kind, 0.0) + layer.predicted_ms
        return out

    def shares(self) -> dict[str, float]:
        """Each layer type's share of the layers' time (the call excluded), adding up to 1:
        beside ``cost``'s Table 2 shares of mult-adds."""
        per_type = self.type_ms()
        total = sum(per_type.values())
        return {k: ms / total for k, ms in per_type.items()}

    def to_dict(self) -> dict[str, Any]:
        c = self.calibration
        return {
            "model": self.arch_cfg.name, "runtime": c.runtime, "precision": c.precision,
            "batch_size": self.batch_size, "threads": c.threads, "predicted_ms": self.total_ms,
            "call_ms": self.call_ms, "conversion_ms": self.conversion_ms, "shares": self.shares(),
            "weight_bytes": self.weight_bytes,
            "weight_bytes_from_memory": self.weight_bytes_from_memory, "layers": [x.to_dict() for x in self.layers],
            "calibrated_at": c.calibrated_at,
        }


def predict_layer(calibration: Calibration, layer: cost.LayerCost, batch_size: int = 1,
                  call_weights: float = 0.0) -> LayerLatency:
    """One layer (a ``cost.LayerCost`` counted at the calibration's element size and
    ``batch_size``; for a fixed-batch runtime, at batch 1) on the calibrated machine, in a call
    that reads ``call_weights`` bytes of weights in all (``call_weight_bytes``)."""
    kernel = kernel_of(layer, calibration.channel_blocks)
    roof = calibration.kernels[kernel]
    missed = missed_fraction(call_weights, calibration.cache_bytes)
    work = layer_work(layer, batch_size, calibration.element_bytes, roof.lanes, missed, roof.tail,
                      calibration.layer_cache_bytes, roof.position_block)
    return LayerLatency(
        name=layer.name, kind=layer.kind, kernel=kernel, mult_adds=work.mult_adds, bytes=work.bytes,
        intensity=work.intensity, ridge=roof.ridge, bound=roof.bound(work),
        predicted_ms=roof.seconds(work) * calibration.factor(kernel) * 1e3, spilled_bytes=work.spilled_bytes,
    )


def input_bytes(layers: Sequence[cost.LayerCost], element_bytes: int) -> int:
    """The float32 input a call hands over to a chain of layers counted at ``element_bytes``."""
    return layers[0].in_bytes * IO_ELEMENT_BYTES // element_bytes


def handed_bytes(layers: Sequence[cost.LayerCost], element_bytes: int) -> int:
    """What a call of a chain of layers counted at ``element_bytes`` hands over to the runtime and
    back: its float32 input and its output."""
    return input_bytes(layers, element_bytes) + layers[-1].out_bytes


def call_seconds(calibration: Calibration, fed_bytes: float, handed: float = 0.0) -> float:
    """One call's own cost: entering and leaving the runtime, feeding it ``fed_bytes`` (the
    predictor's conversion), and handing ``handed`` bytes over to it and back."""
    return calibration.call_s + conversion_seconds(calibration, fed_bytes) + handed / calibration.handover_bytes_per_s


def conversion_seconds(calibration: Calibration, fed_bytes: float) -> float:
    """The predictor's conversion of ``fed_bytes`` of float32 input for its file, in Python."""
    return fed_bytes / calibration.feed_bytes_per_s


def predict_with(
    calibration: Calibration, arch_cfg: ArchConfig | None = None, batch_size: int = 1
) -> LatencyPrediction:
    """Every layer of ``arch_cfg`` (default 1.0-224) at ``batch_size`` on a calibrated machine.
    A fixed-batch runtime runs the batch as ``batch_size`` calls of one image."""
    arch_cfg = arch_cfg or ArchConfig()
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"{option('batch_size')} must be an int >= 1, got {batch_size!r}")
    per_call, calls = calls_of(calibration, batch_size)
    net = cost.network_cost(arch_cfg, calibration.element_bytes, per_call)
    weights = call_weight_bytes(net.layers, calibration.element_bytes)
    layers = [predict_batch_layer(calibration, layer, batch_size, weights) for layer in net.layers]
    size = calibration.element_bytes
    fed = input_bytes(net.layers, size)
    call_ms = call_seconds(calibration, fed, handed_bytes(net.layers, size)) * 1e3 * calls
    return LatencyPrediction(arch_cfg, calibration, batch_size, tuple(layers), call_ms, weights,
                             conversion_seconds(calibration, fed) * 1e3 * calls)


def calls_of(calibration: Calibration, batch_size: int) -> tuple[int, int]:
    """(images per call, calls) for a batch of ``batch_size``: a fixed-batch runtime makes one call
    per image, any other one call of the whole batch."""
    per_call = 1 if calibration.fixed_batch else batch_size
    return per_call, batch_size // per_call


def predict_batch_layer(calibration: Calibration, layer: cost.LayerCost, batch_size: int,
                        call_weights: float = 0.0) -> LayerLatency:
    """One layer over a whole batch of ``batch_size`` (``layer`` counted per call, as ``calls_of``
    says): ``predict_layer`` once per call. Every prediction of a batch goes through here, so that
    ``predict_with`` and ``block_speedups`` cannot disagree on what a fixed-batch runtime's batch costs."""
    per_call, calls = calls_of(calibration, batch_size)
    one = predict_layer(calibration, layer, per_call, call_weights)
    if calls == 1:
        return one
    # (replace, so that a field added to LayerLatency is carried, never dropped; what a call moves
    # or spills, each call moves and spills again; intensity, ridge and bound are per call's alike)
    return replace(one, mult_adds=one.mult_adds * calls, bytes=one.bytes * calls,
                   predicted_ms=one.predicted_ms * calls, spilled_bytes=one.spilled_bytes * calls)


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, accuracy) points no other point beats on both: faster and at least as
    accurate. Sorted by latency."""
    front: list[tuple[float, float]] = []
    for ms, top1 in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or top1 > front[-1][1]:
            front.append((ms, top1))
    return front


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class BlockSpeedup:
    """One separable block against the full 3x3 conv it replaces, predicted on one machine."""

    comparison: cost.LayerComparison
    standard: LayerLatency
    depthwise: LayerLatency
    pointwise: LayerLatency

    @property
    def block(self) -> int | None:
        return self.comparison.depthwise.block

    @property
    def separable_ms(self) -> float:
        return self.depthwise.predicted_ms + self.pointwise.predicted_ms

    @property
    def speedup(self) -> float:
        """Predicted standard / separable time, beside ``savings`` in mult-adds."""
        return self.standard.predicted_ms / self.separable_ms

    @property
    def savings(self) -> float:
        """Standard / separable mult-adds (``cost``'s)."""
        return self.comparison.savings

    def reason(self) -> str:
        """Why the speed-up falls short of (or beats) the mult-add savings, in one phrase."""
        macs = self.comparison.depthwise.mult_adds / self.comparison.separable_mult_adds
        time = self.depthwise.predicted_ms / self.separable_ms
        parts = [f"depthwise: {macs:.0%} of the mult-adds, {time:.0%} of the time"]
        if self.depthwise.bound == "compute":
            parts.append(f"it computes at {self.depthwise.attained_macs_per_s / 1e9:.3g} G mult-adds/s, "
                         f"the pointwise conv at {self.pointwise.attained_macs_per_s / 1e9:.3g}")
        if self.depthwise.bound == "memory":
            parts.append(f"memory-bound at {self.depthwise.intensity:.2g} mult-adds/byte "
                         f"(ridge {self.depthwise.ridge:.2g})")
        if self.standard.bound == "compute" and self.pointwise.bound == "memory":
            parts.append("the pointwise conv waits on memory where the full conv computes")
        return "; ".join(parts)


def block_speedups(calibration: Calibration, arch_cfg: ArchConfig | None = None,
                   batch_size: int = 1) -> list[BlockSpeedup]:
    """Every separable block of ``arch_cfg`` against its full convolution, predicted, each in its
    own network's call (the full-conv network reads up to 7x the weights: 29 M against 4.2 M at α 1),
    over a batch of ``batch_size`` as ``predict_with`` predicts it (``predict_batch_layer``)."""
    per_call, _ = calls_of(calibration, batch_size)
    size = calibration.element_bytes
    comparison = cost.compare(arch_cfg, size, per_call)
    weights = {"standard": comparison.standard.weights * size, "separable": comparison.separable.weights * size}
    rows = []
    for c in comparison.blocks:
        standard = predict_batch_layer(calibration, c.standard, batch_size, weights["standard"])
        depthwise, pointwise = (predict_batch_layer(calibration, x, batch_size, weights["separable"])
                                for x in (c.depthwise, c.pointwise))
        rows.append(BlockSpeedup(c, standard, depthwise, pointwise))
    return rows

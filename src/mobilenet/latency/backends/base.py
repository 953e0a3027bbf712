"""What every runtime's probes share: a probe as a PyTorch module (``probe_module``), the
built probe at one shape (``Cell``), the kept conversions (``kept_build``, and ``kept_predictor``
for the whole networks ``choose`` times) and the ``Backend`` each runtime subclasses (one module
per runtime beside this one)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError
from mobilenet.latency.probes import PADDING, AnyProbe, NetworkProbe

Call = Callable[[], object]


Profile = Callable[[float], list[float]]  # seconds to spend -> each layer's median seconds, in order


@dataclass(frozen=True)
class Cell:
    """A probe built at one input shape: ``run`` calls the runtime; ``feed`` (None where the
    runtime takes the input as given) converts and hands over the input as the predictor does;
    ``profile`` (None where the runtime has no profiler here) times each of its layers apart."""

    run: Call
    feed: Call | None = None
    profile: Profile | None = None
    # What ``run``'s measured seconds would be on the runtime's own path, where the probe runs
    # something close instead (PyTorch's compiled program's ops, called from Python).
    to_path: Callable[[float], float] | None = None


Shaper = Callable[[tuple[int, ...]], Cell]  # input shape -> the probe's cell at that shape


def probe_module(probe: AnyProbe, size: int, *, fixed_pads: bool = False) -> nn.Module:
    """The probe as the network's own modules run it: each conv a ``ConvBNAct`` with its
    BatchNorm folded (TF 'SAME' pads computed from the input, or constant for ``size`` with
    ``fixed_pads``, as the mobile writers export them), the pool and classifier as in the model;
    a network probe is the model itself, prepared the same way."""
    if isinstance(probe, NetworkProbe):
        return _with_probe_weights(_network_module(probe, size, fixed_pads=fixed_pads))
    from mobilenet.model import ConvBNAct  # noqa: PLC0415

    padded = ArchConfig(padding=PADDING)
    layers: list[nn.Module] = []
    for cost_of in probe.layers(size):
        c_in, c_out = cost_of.in_shape[0], cost_of.out_shape[0]
        if cost_of.kind == "pool":
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            continue
        if cost_of.kind == "fc":
            layers.append(nn.Linear(c_in, c_out))
            continue
        k, s = cost_of.kernel, cost_of.stride
        at = tuple(cost_of.in_shape[1:])
        layer = arch.Layer(cost_of.name, cost_of.kind, c_in, c_out, k, s, cost_of.groups, at,  # type: ignore[arg-type]
                           tuple(cost_of.out_shape[1:]), tuple(arch.conv_padding(PADDING, x, k, s) for x in at),
                           True, True, False, cost_of.block)
        conv = ConvBNAct(layer, padded)
        conv.fold_batchnorm()
        (top, bottom), (left, right) = layer.pad
        if fixed_pads and s > 1:
            conv.pad = nn.ZeroPad2d((left, right, top, bottom))
        layers.append(conv)
    return _with_probe_weights(nn.Sequential(*layers).eval())


def _network_module(probe: NetworkProbe, size: int, *, fixed_pads: bool) -> nn.Module:
    from mobilenet.model import MobileNetV1  # noqa: PLC0415
    from mobilenet.prepare import fixed_padding_copy, folded_copy  # noqa: PLC0415

    model = MobileNetV1(probe.arch_cfg(size)).eval()
    return fixed_padding_copy(model) if fixed_pads else folded_copy(model)


def _with_probe_weights(module: nn.Module) -> nn.Module:
    with torch.no_grad():  # weights of the scale trained ones have: no denormals, no saturation
        for p in module.parameters():
            p.uniform_(-0.1, 0.1)
    return module


# The project's own code that writes the files kept below (the network's modules, their
# preparation, the exporters and quantizers): a change there builds the files again, as a new
# converter version does, where a kept file would otherwise outlive it. A probe's file depends on
# these, on the lowering every backend shares (PROBE_WRITERS) and on its own backend's module,
# not on the other backends': a change to OpenVINO's once had ExecuTorch convert every int8 probe
# again (324 s on the Zen 4).
FILE_WRITERS = ("model.py", "prepare.py", "deploy")
PROBE_WRITERS = ("latency/backends/base.py",)
PACKAGE = Path(__file__).resolve().parents[2]  # .../mobilenet: where the writers' paths start


@functools.cache
def writers_digest(*more: str) -> str:
    """A digest of the sources of ``FILE_WRITERS`` and ``more`` (paths under the package, files or
    folders), part of every kept file's key."""
    digest = hashlib.sha256()
    for name in (*FILE_WRITERS, *more):
        top = PACKAGE / name
        for path in sorted(top.rglob("*.py")) if top.is_dir() else [top]:
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def probe_writers(backend: type) -> tuple[str, ...]:
    """What writes ``backend``'s probe files besides ``FILE_WRITERS``: ``PROBE_WRITERS`` and the
    backend's own module (where it lies in the package)."""
    package, *module = backend.__module__.split(".")
    own = ("/".join(module) + ".py",) if package == PACKAGE.name and module else ()
    return (*PROBE_WRITERS, *own)


MAX_SIDE = 512  # the largest input side a resized probe serves, unless told (``Backend.load``)
PROBE_FOLDER = "latency-probes"  # under the cache directory: converted probes, kept (see ``kept_build``)


def kept_build(kind: str, module: nn.Module, shape: Sequence[int], distributions: Sequence[str],
               build: Callable[[], bytes], writers: Sequence[str]) -> bytes:
    """``build()``'s bytes (a file of ``kind``, say "litert-fp32") for ``module`` at ``shape`` (the
    input's, with whatever else the file depends on), kept under the cache directory for the next
    calibration. Converting a probe takes LiteRT seconds (7-8 s a network) and ExecuTorch's int8
    lowering more (29-57 s a network), which alone fills a calibration's budget, while the file
    depends only on the probe's structure, the converters' versions and the code that writes it
    (``writers_digest`` of ``writers``, ``probe_writers``; the weights, random, do not change a
    time). Stored with a SHA-256 digest: a damaged or truncated file is built again, never loaded."""
    from mobilenet.deploy.optional import package_version  # noqa: PLC0415
    from mobilenet.files import write_bytes  # noqa: PLC0415
    from mobilenet.weights import cache_dir  # noqa: PLC0415

    versions = {name: package_version(name) for name in distributions}
    key = json.dumps([kind, repr(module), list(shape), versions, writers_digest(*writers)], sort_keys=True)
    path = cache_dir() / PROBE_FOLDER / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.bin"
    try:
        kept = path.read_bytes()
        data, digest = kept[:-32], kept[-32:]
        if len(kept) > 32 and hashlib.sha256(data).digest() == digest:
            return data
    except OSError:
        pass
    data = build()
    with contextlib.suppress(Exception):  # a read-only cache costs a conversion next time, nothing more
        write_bytes(path, data + hashlib.sha256(data).digest())
    return data


KEPT_NETWORK_FOLDER = "choose-networks"  # under the cache directory: the networks choose times (kept_predictor)
# At most this much is kept there, the least recently used going first: every published
# architecture in one runtime and precision took 348 MB here at fp32 (ONNX Runtime, 37 files, before
# TF's and Keras' copies of one shape shared theirs).
KEPT_NETWORK_BYTES = 1 << 30
EXPORTERS = ("torch", "onnx", "onnxscript")  # whose versions every network's file depends on, besides its runtime's


def kept_predictor(arch_cfg: ArchConfig, runtime: str, precision: str, *, threads: int | None,
                   distributions: Sequence[str], calibration_images: Sequence[Path] | None = None,
                   batch_size: int = 1) -> Any:
    """A predictor of a MobileNet of ``arch_cfg`` with random weights in ``runtime`` at
    ``precision``, for timing: the predictor ``make_predictor`` builds, from a file kept under the
    cache directory by workload (``ArchConfig.workload``), runtime, precision, the versions of the
    project and of the packages that write and run it (``distributions``, with the exporters) and
    the project's code that writes it (``writers_digest``). Exporting takes
    seconds a network (the ONNX exporter 4-7 s here; LiteRT's and ExecuTorch's conversions more)
    and is most of what a ``choose`` call costs, while a time does not depend on the weights. Kept
    with checksums: a damaged file is built again, never loaded. PyTorch, which compiles rather
    than exports, keeps its own programs (``mobilenet.optimize``), compiled for ``batch_size``: the
    batch the predictor will be called with (``make_predictor``)."""
    from mobilenet.deploy.integrity import SUFFIX, DamagedFileError, checksum_lines, sidecar, verify_checksums  # noqa: PLC0415
    from mobilenet.deploy.optional import package_version  # noqa: PLC0415 - the runtimes import heavy packages
    from mobilenet.deploy.runtime import file_precision, int8_calibration, make_predictor, write_runtime_file  # noqa: PLC0415
    from mobilenet.deploy.runtimes import check_precision, predictor_class, runtime_format  # noqa: PLC0415
    from mobilenet.model import MobileNetV1  # noqa: PLC0415
    from mobilenet.version import __version__  # noqa: PLC0415
    from mobilenet.weights import cache_dir  # noqa: PLC0415

    arch_cfg = arch_cfg.workload()  # TF's checkpoint and Keras' port of it: one file
    model = MobileNetV1(arch_cfg).eval()
    if runtime_format(runtime) is None:
        return make_predictor(model, runtime, precision, threads=threads, calibration_images=calibration_images,
                              batch_size=batch_size)
    check_precision(runtime, precision)
    load, stored = predictor_class(runtime).from_file, file_precision(precision)
    versions = {name: package_version(name) for name in sorted({*EXPORTERS, *distributions})}
    key = json.dumps([runtime, stored, arch_cfg.to_dict(), versions, __version__, writers_digest()], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    folder = cache_dir() / KEPT_NETWORK_FOLDER / f"{runtime}-{stored}-{digest}"
    with contextlib.suppress(DamagedFileError, OSError, StopIteration):
        listing = next(folder.glob(f"*{SUFFIX}"))  # the main file's checksums, named after it
        path = listing.with_name(listing.name.removesuffix(SUFFIX))
        if verify_checksums(path):
            os.utime(folder)  # used: the last to go (_evict_least_recently_used)
            return load(path, precision, threads)
    calibration = int8_calibration(model, calibration_images) if stored == "int8" else None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    except OSError:  # a read-only cache: built for this call only
        return make_predictor(model, runtime, precision, threads=threads, calibration_images=calibration_images,
                              batch_size=batch_size)
    try:
        built = write_runtime_file(model, runtime, precision, calibration, building)
        files = sorted(p for p in building.iterdir() if p.is_file())
        sidecar(built).write_text(checksum_lines((p, p.name) for p in files), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # a damaged copy
        try:
            os.replace(building, folder)  # whole or not at all, for a process reading it next
        except OSError:  # another process kept it first
            return load(built, precision, threads)
        _evict_least_recently_used(folder.parent, KEPT_NETWORK_BYTES, keep=folder)
        return load(folder / built.name, precision, threads)
    finally:
        shutil.rmtree(building, ignore_errors=True)


def _evict_least_recently_used(root: Path, budget: int, *, keep: Path) -> None:
    """Remove the least recently used kept networks under ``root`` until the rest take at most
    ``budget`` bytes; never ``keep`` (the one just written), nor one being built."""
    kept = []
    for folder in root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        with contextlib.suppress(OSError):
            size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
            kept.append((folder.stat().st_mtime, size, folder))
    total = sum(size for _, size, _ in kept)
    for _, size, folder in sorted(kept, key=lambda k: k[0]):
        if total <= budget:
            break
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
            total -= size


class Backend:
    """Builds probes in one runtime at one precision and thread count."""

    runtime = "?"
    # What the probes run, said beside every prediction and part of the cache key: a change of
    # path (say PyTorch's, once its AOTInductor path is calibrated) measures again.
    path = "?"
    fixed_batch = False
    openmp = False  # whether its probes run on PyTorch's OpenMP pool, whose wait policy moves their times
    needs: tuple[str, ...] = ()  # modules to import: a missing one is named with its pip extra
    distributions: tuple[str, ...] = ("torch",)  # whose versions change what a probe measures
    calibrates: tuple[str, ...] = ("fp32",)  # the precisions its probes can be built at
    fixed_pads = False  # whether its files hold the TF 'SAME' pads as constants (the mobile ones)
    # Per conv kind, the channels its fast implementation needs whole blocks of (model.UNBLOCKED).
    channel_blocks: ClassVar[dict[str, int]] = {}
    # Per kernel, the block its output positions are computed in (``model.Roofline.position_block``).
    position_blocks: ClassVar[dict[str, int]] = {}
    # The precisions at which a call's cost per byte handed over to the runtime and back is fitted
    # from the call probes and taken off every probe (``calibrate.fit``'s ``handover``): where a
    # probe hands over far more than a network does and the runtime is slow at it (ExecuTorch).
    handover_precisions: tuple[str, ...] = ()

    @staticmethod
    def pools_of_their_own(threads: int | None) -> bool:
        """Whether this runtime's sessions at ``threads``, each with a thread pool of its own,
        would slow each other when dozens are timed in turn: then the calibration and ``choose``'s
        timing run in a process of its own that puts them all on one pool (``share_one_pool``)."""
        return False

    @staticmethod
    def share_one_pool(threads: int | None) -> bool:
        """Put every session this process builds from now on on one thread pool of ``threads``;
        whether it could."""
        return False

    @staticmethod
    def on_one_pool(threads: int | None) -> bool:
        """Whether every session this process builds runs on one thread pool of ``threads``
        already (``share_one_pool`` made it)."""
        return False

    def __init__(self, precision: str, threads: int | None) -> None:
        for module in self.needs:
            require(module)
        if precision not in self.calibrates:
            raise InputError(
                f"the latency model cannot calibrate {self.runtime} at {precision} yet (it builds "
                f"{' and '.join(self.calibrates)} probes there); ask for {self.calibrates[0]}"
            )
        self.precision = precision
        self.threads = threads
        # Seconds spent converting probes that were not kept yet (``kept``): once per machine and
        # converter version, so the calibration's budget does not count them.
        self.converting_s = 0.0

    def kept(self, kind: str, module: nn.Module, shape: Sequence[int], distributions: Sequence[str],
             build: Callable[[], bytes]) -> bytes:
        """``kept_build``, adding the time of a conversion that was not kept to ``converting_s``."""

        def timed_build() -> bytes:
            start = time.monotonic()
            try:
                return build()
            finally:
                self.converting_s += time.monotonic() - start

        return kept_build(kind, module, shape, distributions, timed_build, probe_writers(type(self)))

    @classmethod
    def current_path(cls) -> str:
        """What the probes run here (part of the cache key)."""
        return cls.path

    def prepare(self, log: Callable[[str], None]) -> dict[str, Any]:
        """Whatever the backend builds once before its probes; what it cost, for the record."""
        return {}

    def reference_calls(self) -> tuple[Call, ...]:
        """Calls to time among the probes, in the same interleaved pass, for ``timed_references``."""
        return ()

    def timed_references(self, medians: Sequence[float], log: Callable[[str], None]) -> dict[str, Any]:
        """Learn from ``reference_calls``' medians (seconds) before the probes' times are read."""
        return {}

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        """``module`` built at input ``shape``, as a function of the shapes to run it at (a
        converting runtime's build serves every size up to ``largest_side``, default 512)."""
        raise NotImplementedError


def xnnpack_channel_blocks(*, depthwise: bool = False) -> dict[str, int]:
    """The blocks XNNPACK's fp32 convs (LiteRT's and ExecuTorch's) want. Its pointwise convs:
    output channels in whole multiples of two vector registers. On the Zen 5 (AVX-512: 32
    floats), a 1x1 conv onto 368 or 360 channels ran a mult-add 1.2x as long as onto 352 or 384,
    whatever its input channels, in both runtimes; the calibration's own networks off those
    blocks (α 0.7 and 0.9) had come out 9-20% slower than predicted (docs/latency.md §4,
    2026-12-05). With ``depthwise``, its depthwise convs too: channels in whole vector registers,
    so that every pixel's channels start on a cache line (16 floats with AVX-512). Its depthwise
    convs on 179 or 184 channels had run a mult-add 1.3-1.6x as long as on 176 or 192, and
    ExecuTorch's networks, profiled layer by layer, put every held-out depthwise layer (none of
    them on whole 16s) a fifth slower than the layers of the calibration's networks (§4,
    2026-12-05, ExecuTorch's layers profiled). Only where a calibration profiles networks can it
    fit those twins: of the chained probes, one fills a block of 16.
    Measured on AVX-512 only: AVX2's 16 and 8 are the same rule, not a measurement, and where
    ``mobilenet.cpu`` knows no vector width (Arm) none is assumed. (The model's blocks ask for
    input channels in whole blocks too, ``model.fills_blocks``, which in a MobileNet only the
    first widening layers of α 0.25, 0.5 and 0.75 do not have.)"""
    from mobilenet.cpu import cpu_info  # noqa: PLC0415

    lanes = cpu_info().fp32_lanes
    if lanes <= 1:
        return {}
    return {"pointwise": 2 * lanes, **({"depthwise": lanes, "depthwise_s2": lanes} if depthwise else {})}


def onnx_bytes(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    """The probe as a static ONNX graph. TorchScript's exporter: milliseconds for a probe, where
    the dynamo exporter the project's files use takes seconds; ONNX Runtime optimises both to the
    same fused convolutions."""
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(shape),), buffer, dynamo=False, input_names=["input"],
                          output_names=["output"], opset_version=17)
    return buffer.getvalue()


def int8_calibration(shape: tuple[int, ...]) -> torch.Tensor:
    """One input in ReLU6's range, of the probe's own shape: timing needs int8 kernels, not a
    good quantization."""
    return torch.rand(shape) * 6


class ChannelsLastIO(nn.Module):
    """The mobile files' interface: an NHWC image in (NC for the classifier), as phones hold it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 3, 1, 2)) if x.dim() == 4 else self.module(x)


def nhwc_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape


def nhwc_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous() if x.dim() == 4 else x

"""Running a probe in each runtime, as the project's predictors run a whole network.

A probe becomes a small PyTorch module (``probe_module``: the network's own layers, BatchNorm
folded), which a backend builds in its runtime once (``load``) and
then makes a ``Cell`` of at each input shape: the runtime's call as a predictor makes it, and,
where the predictor converts its input in Python before the call (the NHWC mobile runtimes),
that conversion on its own (``feed``). A probe's call leaves the conversion out, so that its time
is its layers'; the network's call pays it once, for the image (``model.call_seconds``).

What it costs to build decides how: PyTorch, ONNX Runtime and OpenVINO export a probe in
milliseconds, so each shape is exported on its own, static as the network's files are. LiteRT and
ExecuTorch convert in seconds, so a probe is converted once and resized: LiteRT's interpreter
resizes its input, ExecuTorch's program is exported with dynamic height and width. Both run a
batch as that many single-image calls, as their predictors do (``fixed_batch``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.deploy.optional import require
from mobilenet.deploy.runtimes.inputs import NativeInput
from mobilenet.errors import InputError
from mobilenet.latency.probes import PADDING, AnyProbe, NetworkProbe

if TYPE_CHECKING:
    from mobilenet.fused_ops import Gap, References

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


MAX_SIDE = 512  # the largest input side a resized probe serves, unless told (``Backend.load``)
PROBE_FOLDER = "latency-probes"  # under the cache directory: converted probes, kept (see ``kept_build``)


def kept_build(kind: str, module: nn.Module, shape: Sequence[int], distributions: Sequence[str],
               build: Callable[[], bytes]) -> bytes:
    """``build()``'s bytes (a file of ``kind``, say "litert-fp32") for ``module`` at ``shape`` (the
    input's, with whatever else the file depends on), kept under the cache directory for the next
    calibration. Converting a probe takes LiteRT seconds (7-8 s a network) and ExecuTorch's int8
    lowering more (29-57 s a network), which alone fills a calibration's budget, while the file
    depends only on the probe's structure and the converters' versions (the weights, random,
    do not change a time). Stored with a SHA-256 digest: a damaged or truncated file is built
    again, never loaded."""
    from mobilenet.deploy.optional import package_version  # noqa: PLC0415
    from mobilenet.files import write_bytes  # noqa: PLC0415
    from mobilenet.weights import cache_dir  # noqa: PLC0415

    versions = {name: package_version(name) for name in distributions}
    key = json.dumps([kind, repr(module), list(shape), versions], sort_keys=True)
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


class Backend:
    """Builds probes in one runtime at one precision and thread count."""

    runtime = "?"
    # What the probes run, said beside every prediction and part of the cache key: a change of
    # path (say PyTorch's, once its AOTInductor path is calibrated) measures again.
    path = "?"
    fixed_batch = False
    needs: tuple[str, ...] = ()  # modules to import: a missing one is named with its pip extra
    distributions: tuple[str, ...] = ("torch",)  # whose versions change what a probe measures
    calibrates: tuple[str, ...] = ("fp32",)  # the precisions its probes can be built at
    fixed_pads = False  # whether its files hold the TF 'SAME' pads as constants (the mobile ones)
    # Per conv kind, the channels its fast implementation needs whole blocks of (model.UNBLOCKED).
    channel_blocks: ClassVar[dict[str, int]] = {}

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

        return kept_build(kind, module, shape, distributions, timed_build)

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


class _Frozen(nn.Module):
    """What ``prepare_for_inference`` wraps a network in: NCHW float32 in, the layout and dtype it
    runs in inside, float32 out."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.module, self.dtype, self.channels_last = module, dtype, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x.to(self.dtype)).float()


class TorchBackend(Backend):
    """What ``TorchPredictor`` runs: ``mobilenet.optimize``'s AOTInductor program where it can
    compile, timed as its calls (``fused_ops``: the same oneDNN primitives on the same prepacked
    weights, called from Python, whose gap to the compiled program is measured once on two
    compiled networks and taken off: ``fused_ops.References``); else the frozen TorchScript it
    falls back to."""

    runtime = "torch"
    calibrates = ("fp32", "bf16")
    fixed_pads = True  # optimize's programs hold the TF pads as constants (then in inference_form: load)
    PATHS: ClassVar[dict[str, str]] = {
        "inductor": ("mobilenet.optimize's AOTInductor program, as its oneDNN calls (fused conv+bias+ReLU6 on "
                     "prepacked weights, the depthwise pads in their kernels, the pointwise convs as matmuls, "
                     "channels_last), "
                     "less their measured gap to the program"),
        "torchscript": ("frozen TorchScript, the depthwise pads in their kernels, channels_last (the torch "
                        "runtime's fallback where it cannot compile)"),
    }
    path = PATHS["torchscript"]

    def __init__(self, precision: str, threads: int | None) -> None:
        super().__init__(precision, threads)
        self.compiled = self.compiles()
        self.path = self.PATHS["inductor" if self.compiled else "torchscript"]
        self.references: References | None = None  # built by prepare()
        self.gap: Gap | None = None  # fitted once they are timed

    @staticmethod
    def compiles() -> bool:
        """Whether ``TorchPredictor`` would run the AOTInductor program here, as calls the probes
        can make (``fused_ops.available``)."""
        from mobilenet import fused_ops  # noqa: PLC0415

        return fused_ops.available()

    @classmethod
    def current_path(cls) -> str:
        return cls.PATHS["inductor" if cls.compiles() else "torchscript"]

    def prepare(self, log: Callable[[str], None]) -> dict[str, Any]:
        if not self.compiled:
            return {}
        from mobilenet.fused_ops import REFERENCES, compiled_references  # noqa: PLC0415

        self._set_threads()
        names = " and ".join(f"{c.alpha:g}-{c.resolution[0]}" for c in REFERENCES)
        log(f"latency: compiling {names} (once: loaded from the cache after), to be timed among the probes "
            "against their calls made from Python")
        self.references = compiled_references(self.precision, log)
        return {"references_load_s": round(self.references.load_s, 1)}

    def reference_calls(self) -> tuple[Call, ...]:
        return () if self.references is None else self.references.calls

    def timed_references(self, medians: Sequence[float], log: Callable[[str], None]) -> dict[str, Any]:
        assert self.references is not None
        self.gap = gap = self.references.gap(medians)
        log(f"latency: the fused ops took {gap.per_op_s * 1e6:.1f} us a call and {gap.fraction:.1%} longer than "
            "the compiled program (" + ", ".join(f"{f * 1e3:.2f} against {c * 1e3:.2f} ms"
                                                 for f, c in zip(gap.fused_s, gap.compiled_s)) + ")")
        return {"per_op_us": round(gap.per_op_s * 1e6, 2), "fraction": round(gap.fraction, 4),
                "references_compiled_ms": [c * 1e3 for c in gap.compiled_s],
                "references_fused_ms": [f * 1e3 for f in gap.fused_s]}

    def _set_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.prepare import inference_form  # noqa: PLC0415

        self._set_threads()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        module = inference_form(module, compiled=self.compiled)  # as optimize prepares a network
        if self.compiled:
            return lambda at: self._fused(module, dtype, at)
        return lambda at: self._frozen(module, dtype, at)

    def _fused(self, module: nn.Module, dtype: torch.dtype, shape: tuple[int, ...]) -> Cell:
        from mobilenet.fused_ops import fused_ops  # noqa: PLC0415
        from mobilenet.model import MobileNetV1  # noqa: PLC0415

        program = fused_ops(module, shape, dtype)
        ops = len(program.ops)

        def to_compiled(seconds: float) -> float:  # (the gap is known once the probes are timed)
            return seconds if self.gap is None else self.gap.compiled_seconds(seconds, ops)
        if isinstance(module, MobileNetV1):  # a whole network takes NCHW float32, as the compiled one
            x = torch.rand(shape)

            def network() -> object:
                with torch.inference_mode():
                    return program(x)

            def profile(seconds: float) -> list[float]:  # each layer's calls, the clock read between them
                return list(program.layer_seconds(x, seconds).values())

            return Cell(network, profile=profile, to_path=to_compiled)
        # A probe's layers take their input as the network hands it over: channels_last, converted
        prepared = program.prepare(torch.rand(shape))

        def layers() -> object:
            with torch.inference_mode():
                return program.run(prepared)

        return Cell(layers, to_path=to_compiled)

    @staticmethod
    def _frozen(module: nn.Module, dtype: torch.dtype, shape: tuple[int, ...]) -> Cell:
        image = len(shape) == 4
        body = module.to(dtype=dtype, memory_format=torch.channels_last) if image else module.to(dtype=dtype)
        x = torch.rand(shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_Frozen(body, dtype, image), x)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

        def call() -> object:
            with torch.inference_mode():
                return frozen(x)

        return Cell(call)


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


def _int8_calibration(shape: tuple[int, ...]) -> torch.Tensor:
    """One input in ReLU6's range, of the probe's own shape: timing needs int8 kernels, not a
    good quantization."""
    return torch.rand(shape) * 6


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime's predictor on a static ONNX graph; its profiler times each layer apart."""

    runtime = "onnxruntime"
    path = "ONNX Runtime CPU, the network's static ONNX graph"
    needs = ("onnx", "onnxruntime")
    distributions = ("onnxruntime", "torch")
    calibrates = ("fp32", "int8")
    # The network's ONNX file (the dynamo exporter, static height and width) holds its pads as
    # constants, which ONNX Runtime folds into the convs; a pad computed from the input's shape
    # stays a separate kernel (measured: 15-20% of a misaligned network's time).
    fixed_pads = True

    @property
    def channel_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """Measured on the Zen 4 (docs/latency.md): the depthwise convs want multiples of 4
        channels, the dense ones MLAS's NCHWc block (16 with AVX-512, 8 with AVX2)."""
        from mobilenet.cpu import cpu_info  # noqa: PLC0415

        flags = cpu_info().flags
        dense = 16 if "avx512f" in flags else 8 if "avx2" in flags else 1
        return {"depthwise": 4, "depthwise_s2": 4, "pointwise": dense, "conv": dense, "stem": dense}

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.deploy.runtimes.ort import OnnxRuntimePredictor  # noqa: PLC0415

        def at(shape: tuple[int, ...]) -> Cell:
            data = onnx_bytes(module, shape)
            if self.precision == "int8":
                data = self._quantized(data, shape)
            predictor = OnnxRuntimePredictor(data, None, self.threads)
            x = torch.rand(shape)
            return Cell(lambda: predictor(x), profile=lambda seconds: self._profile(data, x, seconds))

        return at

    def _profile(self, data: bytes, x: torch.Tensor, seconds: float) -> list[float]:
        """Each layer's median seconds by ONNX Runtime's profiler, in the order of the chain."""
        import json  # noqa: PLC0415
        import time  # noqa: PLC0415

        import onnxruntime as ort  # noqa: PLC0415

        from mobilenet.deploy.runtimes.ort import session_options  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="mobilenet-profile-") as tmp:
            session = ort.InferenceSession(data, session_options(self.threads, str(Path(tmp) / "profile")),
                                           providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: x.numpy()}
            runs, deadline = 0, time.perf_counter() + seconds
            while runs < 5 or time.perf_counter() < deadline:
                session.run(None, feed)
                runs += 1
            events = json.loads(Path(session.end_profiling()).read_text())
        nodes = [(e["args"].get("op_name", ""), e["dur"] * 1e-6) for e in events
                 if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        per_run = len(nodes) // runs
        layers = np.array([ort_layer_seconds(nodes[i * per_run:(i + 1) * per_run]) for i in range(1, runs)])
        return list(np.median(layers, axis=0))  # (the first run, warming up, left out)

    @staticmethod
    def _quantized(data: bytes, shape: tuple[int, ...]) -> bytes:
        from mobilenet.deploy.quantize import quantize_onnx  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
            fp32, int8 = Path(tmp) / "probe.onnx", Path(tmp) / "probe.int8.onnx"
            fp32.write_bytes(data)
            quantize_onnx(fp32, int8, _int8_calibration(shape), portable=None)
            return int8.read_bytes()


# ONNX Runtime's ops in a network's profile: each conv (plain, or with its activation fused) is the
# chain's next conv layer; a pad or a reorder into the blocked layout belongs to the conv after
# it; the pool and the classifier are the chain's last two layers; anything else (a reorder out of
# the blocked layout, a flatten) belongs to the layer before it.
ORT_CONVS = ("Conv", "FusedConv", "NchwcConv", "QLinearConv")
ORT_BEFORE = ("Pad", "ReorderInput", "QuantizeLinear")
ORT_POOLS = ("GlobalAveragePool", "NchwcGlobalAveragePool", "ReduceMean")
ORT_CLASSIFIERS = ("Gemm", "MatMul", "QGemm", "QLinearMatMul")


def ort_layer_seconds(nodes: list[tuple[str, float]]) -> list[float]:
    """One run's (op, seconds) nodes, in execution order, as seconds per layer of the chain
    (convs, then the pool, then the classifier), by ``ORT_*``'s rules."""
    convs = sum(op in ORT_CONVS for op, _ in nodes)
    layers = [0.0] * (convs + 2)
    at, pending = -1, 0.0
    for op, seconds in nodes:
        if op in ORT_BEFORE:
            pending += seconds
            continue
        if op in ORT_CONVS:
            at += 1
        elif op in ORT_POOLS:
            at = convs
        elif op in ORT_CLASSIFIERS:
            at = convs + 1
        layers[max(at, 0)] += seconds + pending
        pending = 0.0
    layers[max(at, 0)] += pending
    return layers


class OpenVinoBackend(Backend):
    """Converted (and, for int8, quantized by NNCF) once, then reshaped to each size: OpenVINO
    compiles a reshaped model as it compiles the network's, for the shape it is given."""

    runtime = "openvino"
    path = "OpenVINO CPU, converted from the ONNX graph"
    fixed_pads = True  # as ONNX Runtime's: the network's file holds constant pads
    needs = ("onnx", "openvino")
    distributions = ("openvino", "nncf", "torch")
    calibrates = ("fp32", "bf16", "int8")

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        from mobilenet.deploy.formats.openvino import convert_to_openvino  # noqa: PLC0415

        with tempfile.TemporaryDirectory(prefix="mobilenet-probe-") as tmp:
            path = Path(tmp) / "probe.onnx"
            path.write_bytes(onnx_bytes(module, shape))
            ov_model = convert_to_openvino(path).clone()
        if self.precision == "int8":
            from mobilenet.deploy.quantize import quantize_openvino  # noqa: PLC0415

            ov_model = quantize_openvino(ov_model, _int8_calibration(shape), portable=None)

        def at(shape: tuple[int, ...]) -> Cell:
            sized = ov_model.clone()
            sized.reshape(list(shape))
            return self._compiled_call(sized, shape)

        return at

    def _compiled_call(self, ov_model: Any, shape: tuple[int, ...]) -> Cell:
        from mobilenet.deploy.openvino_core import openvino_core  # noqa: PLC0415
        from mobilenet.deploy.runtimes.ov import compile_config  # noqa: PLC0415

        # OpenVinoPredictor's configuration, not the predictor: its constructor also insists that the
        # convolutions run the precision asked for, which a probe without any (the pool, the classifier) fails.
        config = compile_config(self.precision, self.threads)
        request = openvino_core().compile_model(ov_model, "CPU", config).create_infer_request()
        x = np.random.rand(*shape).astype(np.float32)

        def call() -> object:
            request.infer({0: x}, share_inputs=True)
            return torch.from_numpy(request.get_output_tensor(0).data.copy())

        return Cell(call)


class _ChannelsLastIO(nn.Module):
    """The mobile files' interface: an NHWC image in (NC for the classifier), as phones hold it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 3, 1, 2)) if x.dim() == 4 else self.module(x)


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape


class LiteRtBackend(Backend):
    """litert-torch's conversion, run by the LiteRT interpreter (XNNPACK) at each size.
    fp16 files dequantize their weights at load and run the fp32 kernels, so fp16 is calibrated
    on fp32 probes. int8 probes are quantized as the .tflite writer quantizes a network
    (``litert.full_integer``: int8 weights and activations, the classifier dynamic-range), int8
    in and out of a chain, as a layer's neighbours hand it over; a whole network takes uint8
    pixels and gives float logits, as the writer's files do."""

    runtime = "litert"
    path = "LiteRT interpreter (XNNPACK), litert-torch's conversion"
    fixed_batch = fixed_pads = True
    needs = ("litert_torch", "ai_edge_litert.interpreter")
    distributions = ("ai-edge-litert", "litert-torch", "ai-edge-quantizer", "torch")
    calibrates = ("fp32", "fp16", "int8")

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        import os  # noqa: PLC0415

        litert_torch = require("litert_torch")
        interpreter_class = require("ai_edge_litert.interpreter").Interpreter
        os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")

        def convert() -> bytes:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return bytes(litert_torch.convert(_ChannelsLastIO(module).eval(), (torch.zeros(_nhwc(shape)),))
                             .model_content())

        # fp32 is what converts slowly, and what fp16 and int8 start from: one kept file for the three.
        data = self.kept("litert-fp32", module, shape, ("litert-torch", "torch"), convert)
        if self.precision == "int8":
            data = self._quantized(data, shape, whole_network=not isinstance(module, nn.Sequential))
        threads = self.threads or os.cpu_count() or 1

        def at(shape: tuple[int, ...]) -> Cell:
            interpreter = interpreter_class(model_content=data, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, list(_nhwc(shape)))
            interpreter.allocate_tensors()
            given = interpreter.get_input_details()[0]
            scale, zero = given["quantization"]
            dtype = np.dtype(given["dtype"])
            if len(shape) == 4:  # the predictor's own conversion of a float NCHW image (NativeInput)
                native = NativeInput(_nhwc(shape), "nhwc", dtype.name, float(scale), int(zero))
                x = np.random.rand(*shape).astype(np.float32)
                feed = lambda: interpreter.set_tensor(index, native.convert(x))  # noqa: E731
            else:  # (the classifier's features, handed over by the pool as they are)
                features = (np.random.rand(*shape).astype(np.float32) if dtype == np.float32 else
                            np.random.randint(np.iinfo(dtype).min, np.iinfo(dtype).max + 1, shape).astype(dtype))
                feed = lambda: interpreter.set_tensor(index, features)  # noqa: E731
            feed()
            return Cell(interpreter.invoke, feed)

        return at

    @staticmethod
    def _quantized(data: bytes, shape: tuple[int, ...], *, whole_network: bool) -> bytes:
        """int8 as the writer's files: an image (3 channels) comes in as uint8 pixels, through the
        QUANTIZE the writer puts in front; a network's logits go out as float32."""
        require("ai_edge_quantizer")
        from mobilenet.deploy.formats.litert import full_integer  # noqa: PLC0415
        from mobilenet.deploy.formats.tflite_flatbuffer import set_interface  # noqa: PLC0415

        data = full_integer(data, _nhwc_tensor(_int8_calibration(shape)).numpy())
        takes_image = len(shape) == 4 and shape[1] == 3
        if not (takes_image or whole_network):
            return data  # a chain: int8 in and out, as quantized
        return set_interface(data, "uint8" if takes_image else "int8", "float32" if whole_network else None)[0]


class ExecuTorchBackend(Backend):
    """torch.export with a dynamic height and width, lowered to XNNPACK as the .pte writer does;
    int8 probes quantized as the writer quantizes a network (``executorch.xnnpack_int8``)."""

    runtime = "executorch"
    path = "ExecuTorch, lowered to XNNPACK"
    fixed_batch = fixed_pads = True
    needs = ("executorch.runtime",)
    distributions = ("executorch", "torch")
    calibrates = ("fp32", "int8")

    def load(self, module: nn.Module, shape: tuple[int, ...], largest_side: int | None = None) -> Shaper:
        runtime = require("executorch.runtime").Runtime.get()
        if self.threads:
            require("executorch.extension.pybindings.portable_lib")._unsafe_reset_threadpool(self.threads)
        largest = largest_side or MAX_SIDE
        buffer = self.kept(f"executorch-{self.precision}", module, (*shape, largest),
                           ("executorch", "torchao", "torch"), lambda: self._lowered(module, shape, largest))

        def at(shape: tuple[int, ...]) -> Cell:
            # The method points into its program, and the program into ``buffer``, without holding
            # them: the cell holds all three (once the probe's other cells were collected, a
            # method alone ran freed memory and crashed the calibration).
            program = runtime.load_program(buffer)
            method = program.load_method("forward")
            x = torch.rand(shape)

            def feed() -> torch.Tensor:  # ExecuTorchPredictor's: NCHW -> NHWC
                return _nhwc_tensor(x)

            image = feed()

            def run() -> object:
                _ = buffer, program  # named, so that the closure keeps them as long as the cell
                return method.execute([image])

            return Cell(run, feed)

        return at

    def _lowered(self, module: nn.Module, shape: tuple[int, ...], largest_side: int) -> bytes:
        exir = require("executorch.exir")
        partitioner = require("executorch.backends.xnnpack.partition.xnnpack_partitioner")
        example = torch.zeros(_nhwc(shape))
        dynamic = None
        if len(shape) == 4:
            # Up to the largest size the probe runs at: the program plans its activations' memory
            # for it (a 1000-channel chain planned for 512x512 took gigabytes a cell).
            side = torch.export.Dim("side", min=2, max=max(largest_side, shape[2]))
            strided = any(isinstance(m, nn.Conv2d) and m.stride[0] > 1 for m in module.modules())
            if strided:  # export cannot prove a quantized strided conv's guards for odd sizes
                half = max(largest_side, shape[2]) // 2  # (a strided probe's sizes are even)
                side = 2 * torch.export.Dim("half_side", min=1, max=half)
            dynamic = {"x": {1: side, 2: side}}
        program: nn.Module = _ChannelsLastIO(module).eval()
        if self.precision == "int8":
            from mobilenet.deploy.formats.executorch import xnnpack_int8  # noqa: PLC0415

            calibration = _int8_calibration(shape)
            program = xnnpack_int8(program, example, dynamic, [_nhwc_tensor(calibration)])
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(program, (example,), dynamic_shapes=dynamic)
            lowered = exir.to_edge_transform_and_lower(exported, partitioner=[partitioner.XnnpackPartitioner()])
            return bytes(lowered.to_executorch().buffer)


def _nhwc_tensor(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous() if x.dim() == 4 else x


BACKENDS: dict[str, type[Backend]] = {
    b.runtime: b for b in (TorchBackend, OnnxRuntimeBackend, OpenVinoBackend, LiteRtBackend, ExecuTorchBackend)
}

"""PyTorch's probes: what ``optimize`` runs here, as its oneDNN Graph program, as its compiled
(AOTInductor) program's fused calls, or as frozen TorchScript."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from mobilenet.allocator import keep_freed_memory
from mobilenet.latency.backends.base import Backend, Call, Cell, Shaper

if TYPE_CHECKING:
    from mobilenet.fused_ops import Gap, References


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
    """What ``TorchPredictor`` runs (``optimize``'s choice on this CPU, ``optimized.cpu_backend``):
    - its **oneDNN Graph** program: every probe traced, frozen and fused as ``optimize`` fuses a
      network, timed whole as the other runtimes' probes are;
    - its **AOTInductor** program, timed as its calls (``fused_ops``: the same oneDNN primitives on
      the same prepacked weights, called from Python, whose gap to the compiled program is measured
      once on two compiled networks and taken off: ``fused_ops.References``; compiling every probe
      would take 13-22 s each);
    - else the frozen TorchScript it falls back to."""

    runtime = "torch"
    calibrates = ("fp32", "bf16")
    fixed_pads = True  # optimize's programs hold the TF pads as constants (then in inference_form: load)
    PATHS: ClassVar[dict[str, str]] = {
        "onednn-graph": ("mobilenet.optimize's oneDNN Graph program (traced, frozen TorchScript; each conv, or "
                         "pointwise conv as a matrix product, fused with its bias and ReLU6 in one partition "
                         "compiled once; the depthwise pads in their kernels, channels_last)"),
        "inductor": ("mobilenet.optimize's AOTInductor program, as its oneDNN calls (fused conv+bias+ReLU6 on "
                     "prepacked weights, the depthwise pads in their kernels, the pointwise convs as matmuls, "
                     "channels_last), "
                     "less their measured gap to the program"),
        "torchscript": ("frozen TorchScript, the depthwise pads in their kernels, channels_last (the torch "
                        "runtime's fallback where it cannot compile)"),
    }
    path = PATHS["torchscript"]
    openmp = True

    def __init__(self, precision: str, threads: int | None) -> None:
        super().__init__(precision, threads)
        # Timed with the allocator as TorchPredictor runs (optimize keeps freed memory): else a
        # probe's buffers above 32 MiB (batch 8, wide and large) are faulted in again every call.
        keep_freed_memory()
        self.program = self.program_here()
        self.compiled = self.program == "inductor"  # timed as fused calls, less their gap
        self.path = self.PATHS[self.program]
        self.references: References | None = None  # built by prepare()
        self.gap: Gap | None = None  # fitted once they are timed

    @property
    def channel_blocks(self) -> dict[str, int]:  # type: ignore[override]
        """oneDNN's convs want whole vector registers of channels (16 fp32 lanes with AVX-512, 8
        with AVX2): measured on the Zen 5 in oneDNN Graph's program, 1 thread, 28x28, fp32, a
        depthwise conv on 129, 136 or 152 channels took 18-29% longer per channel than on 128, 144
        or 160, a pointwise one 5-13% longer per mult-add (bf16: 5-12%). Inductor's program,
        calibrated before this was known, is left as it was measured."""
        if self.program != "onednn-graph":
            return {}
        from mobilenet.cpu import cpu_info  # noqa: PLC0415

        return dict.fromkeys(("depthwise", "depthwise_s2", "pointwise", "conv", "stem"), cpu_info().fp32_lanes)

    @staticmethod
    def program_here() -> str:
        """Which of ``PATHS`` ``TorchPredictor`` runs here, as far as is known before building."""
        from mobilenet import fused_ops  # noqa: PLC0415
        from mobilenet.optimized import cpu_backend  # noqa: PLC0415

        if cpu_backend() == "onednn-graph":
            return "onednn-graph"
        return "inductor" if fused_ops.available() else "torchscript"

    @classmethod
    def current_path(cls) -> str:
        return cls.PATHS[cls.program_here()]

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
        module = inference_form(module, compiled=self.program != "torchscript")  # as optimize prepares a network
        if self.program == "onednn-graph":
            return lambda at: self._partitioned(module, dtype, at)
        if self.compiled:
            return lambda at: self._fused(module, dtype, at)
        return lambda at: self._frozen(module, dtype, at)

    @staticmethod
    def _partitioned(module: nn.Module, dtype: torch.dtype, shape: tuple[int, ...]) -> Cell:
        from mobilenet import onednn_graph  # noqa: PLC0415
        from mobilenet.model import MobileNetV1  # noqa: PLC0415
        from mobilenet.prepare import InferenceAdapter  # noqa: PLC0415

        if isinstance(module, MobileNetV1):  # a whole network takes NCHW float32, as optimize's does
            x, net = torch.rand(shape), InferenceAdapter(module, channels_last=True, dtype=dtype)
        else:  # a probe's layers take their input as the network hands it over: channels_last, converted
            image = len(shape) == 4
            x = torch.rand(shape).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last) if image else x
            net = module.to(dtype=dtype, memory_format=torch.channels_last) if image else module.to(dtype=dtype)
        program, _, _ = onednn_graph.build(net, x, must_fuse=False)  # (the pool probe has no partition)

        def run() -> object:
            with torch.inference_mode():
                return program(x)

        if not isinstance(module, MobileNetV1):
            return Cell(run)
        return Cell(run, profile=lambda seconds: onednn_graph.layer_seconds(program, x, seconds))

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

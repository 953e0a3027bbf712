"""The calls ``mobilenet.optimize``'s compiled program makes, made one by one from Python: what
the latency model's PyTorch probes time, and ``mobilenet bench`` profiles layer by layer, where
``optimize`` compiles.

AOTInductor with freezing turns a MobileNet into a short list of calls (docs/pytorch.md): every
conv + bias + ReLU6 one ``mkldnn._convolution_pointwise`` on weights reordered once at compile
time (a depthwise conv's TF 'SAME' pad folded into its kernel, ``prepare.pads_in_kernels``; the
stem's pad a copy into a larger buffer; a pointwise conv a ``mkldnn._linear_pointwise`` on the
NHWC activation, ``prepare.pointwise_as_matmul``), the pool a mean over the map and the
classifier one ``mkldnn._linear_pointwise``. Compiling a probe that way costs 13-22 s whatever its
size, and a calibration times about 70 shapes; ``FusedOps`` builds the same calls, on the same
prepacked weights, in milliseconds. The oneDNN primitives are the compiled program's; what
differs is the caller (Python, tens of microseconds a call more than the program's C++) and
something that grows with the network. The calibration times two compiled networks among its
probes (``compiled_references``), against their fused ops, and takes the gap off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError

Op = Callable[[torch.Tensor], torch.Tensor]

# The networks compiled to learn the gap between the fused ops and the compiled program (once per
# machine, torch and precision; cached by ``optimize``): a small one, where Python's share is
# large, and a large one, where what grows with the network shows.
REFERENCES = (ArchConfig(alpha=0.25, resolution=128, padding="tf"), ArchConfig(alpha=1.0, resolution=224, padding="tf"))
REFERENCE_SEED = 0
MAX_FRACTION = 0.5  # a fit that says more is noise, not the ops


def available() -> bool:
    """Whether the compiled program's calls model what runs here: ``optimize`` runs inductor's
    program on this CPU (``optimized.cpu_backend``) and PyTorch has the oneDNN ops it calls."""
    from mobilenet.optimized import cpu_backend  # noqa: PLC0415

    return torch.backends.mkldnn.is_available() and cpu_backend() == "inductor"


@dataclass(frozen=True)
class FusedOps:
    """``module``'s layers as the compiled program's calls (``ops``, in order), for inputs of one
    shape; ``prepare`` is the program's first step (NCHW float32 to channels_last ``dtype``)."""

    ops: tuple[Op, ...]
    dtype: torch.dtype
    layers: tuple[str, ...] = ()  # each op's layer (its module's name; a pad is its conv's)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype).contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.to(self.dtype)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """The calls on an input already ``prepare``d."""
        for op in self.ops:
            x = op(x)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(self.prepare(x)).float()

    def layer_seconds(self, x: torch.Tensor, seconds: float, min_runs: int = 5) -> dict[str, float]:
        """Each layer's median seconds (its pad included) over whole runs for about ``seconds``,
        the clock read between calls: the compiled program has no per-layer profile, its calls do."""
        per_run: list[list[float]] = []
        with torch.inference_mode():
            self(x)
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline or len(per_run) < min_runs:
                y, stamps = self.prepare(x), [time.perf_counter()]
                for op in self.ops:
                    y = op(y)
                    stamps.append(time.perf_counter())
                per_run.append(np.diff(stamps).tolist())
        medians = np.median(np.array(per_run), axis=0)
        out: dict[str, float] = {}
        for name, median in zip(self.layers, medians, strict=True):
            out[name] = out.get(name, 0.0) + float(median)
        return out


def fused_ops(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> FusedOps:
    """The calls AOTInductor's frozen program makes for ``module`` (a folded network or probe
    whose TF pads are constants, in the form ``optimize`` compiles: ``prepare.inference_copy``,
    or ``prepare.inference_form`` of ``backends.probe_module(..., fixed_pads=True)``) on inputs of
    ``shape``. Its layers run in the order they are registered,
    as in ``MobileNetV1`` and a probe's ``nn.Sequential``; anything this cannot call is refused."""
    from mobilenet.model import ConvBNAct, TFSamePad  # noqa: PLC0415 - keep the import light
    from mobilenet.prepare import PointwiseAsMatmul  # noqa: PLC0415

    ops: list[Op] = []
    names: list[str] = []
    skip: set[nn.Module] = set()
    example = FusedOps((), dtype).prepare(torch.zeros(shape))
    with torch.no_grad():
        for name, m in module.named_modules():
            if m in skip:
                continue
            if isinstance(m, ConvBNAct):
                skip.update(m.modules())
                if isinstance(m.pad, TFSamePad) or not isinstance(m.bn, nn.Identity) or m.conv.bias is None:
                    raise InputError("fused_ops needs BatchNorm folded and constant pads (prepare.fixed_padding_copy)")
                new: list[Op] = []
                if isinstance(m.pad, nn.ZeroPad2d):
                    new.append(partial(_pad, pad=tuple(m.pad.padding)))
                c = m.conv
                if isinstance(c, PointwiseAsMatmul):
                    rows = example.shape[0] * example.shape[2] * example.shape[3]
                    packed = torch.ops.mkldnn._reorder_linear_weight(c.weight.to(dtype), rows)
                    new.append(partial(_matmul, weight=packed, bias=c.bias.to(dtype), act=_activation(c.act)))
                else:
                    geometry = (list(c.padding), list(c.stride), list(c.dilation), c.groups)
                    shaped = new[0](example) if new else example
                    packed = torch.ops.mkldnn._reorder_convolution_weight(c.weight.to(dtype), *geometry,
                                                                          list(shaped.shape))
                    new.append(partial(_conv, weight=packed, bias=c.bias.to(dtype), geometry=geometry,
                                       act=_activation(m.act)))
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                new = [_pool]  # the pool and the flatten after it, as the program has them
            elif isinstance(m, nn.Linear):
                packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.to(dtype), example.shape[0])
                new = [partial(_linear, weight=packed, bias=m.bias.to(dtype))]
            elif isinstance(m, nn.Identity | nn.Dropout | nn.Flatten) or _container(m):
                continue
            else:
                raise InputError(f"fused_ops cannot call {type(m).__name__} as the compiled program does")
            for op in new:
                example = op(example)
            ops += new
            names += [name] * len(new)
    return FusedOps(tuple(ops), dtype, tuple(names))


def _pad(x: torch.Tensor, *, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero padding as the compiled program's pad kernel does it: each element written once (the
    interior copied, only the border zeroed), where ``F.pad`` zeroes all of it first, measured
    here at 0.6 ms of a 1.1-240's 31 ms (fp32, 1 thread)."""
    left, right, top, bottom = pad
    n, c, h, w = x.shape
    out = torch.empty((n, c, top + h + bottom, left + w + right), dtype=x.dtype,
                      memory_format=torch.channels_last)
    out[:, :, top:top + h, left:left + w] = x
    for border in (out[:, :, :top], out[:, :, top + h:], out[:, :, top:top + h, :left],
                   out[:, :, top:top + h, left + w:]):
        border.zero_()
    return out


def _conv(x: torch.Tensor, *, weight: torch.Tensor, bias: torch.Tensor, geometry: tuple[Any, ...],
          act: tuple[str, list[float]]) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise.default(x, weight, bias, *geometry, act[0], act[1], "")


def _activation(act: nn.Module) -> tuple[str, list[float]]:
    return ("hardtanh", [0.0, 6.0]) if isinstance(act, nn.ReLU6) else ("relu", [])


def _matmul(x: torch.Tensor, *, weight: torch.Tensor, bias: torch.Tensor, act: tuple[str, list[float]]) -> torch.Tensor:
    """A pointwise conv as the program's matrix product on the NHWC activation (``PointwiseAsMatmul``)."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    out = torch.ops.mkldnn._linear_pointwise.default(rows, weight, bias, act[0], act[1], "")
    return out.view(n, h, w, -1).permute(0, 3, 1, 2)


def _linear(x: torch.Tensor, *, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise.default(x, weight, bias, "none", [], "")


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3))


def _container(module: nn.Module) -> bool:
    """Whether ``module`` only holds others (a ``Sequential``, a block, the network itself)."""
    return not list(module.parameters(recurse=False)) and bool(list(module.children()))


def reference_network(cfg: ArchConfig) -> nn.Module:
    """A network ``compiled_references`` compiles: ``cfg`` with fixed random weights at the scale of
    trained ones (fixed, so that its compiled package is found in the cache next time)."""
    from mobilenet.model import MobileNetV1  # noqa: PLC0415

    model = MobileNetV1(cfg).eval()
    generator = torch.Generator().manual_seed(REFERENCE_SEED)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 0.2 - 0.1)
    return model


@dataclass(frozen=True)
class Gap:
    """How much longer the fused ops take than the compiled program: ``per_op_s`` a call (Python's
    share) and ``fraction`` of their time (what grows with the network: measured, 9-26% on 1.1-240
    to 0.3-112 fp32 here, not explained by the pads), fitted to the ``REFERENCES``' compiled and
    fused medians (``compiled_s``, ``fused_s``, seconds) with ``ops`` calls each."""

    per_op_s: float
    fraction: float
    compiled_s: tuple[float, ...]
    fused_s: tuple[float, ...]
    ops: tuple[int, ...]
    compile_s: float

    def compiled_seconds(self, fused_s: float, ops: int) -> float:
        """What the compiled program would take for fused ops measured at ``fused_s``."""
        return fused_s * (1 - self.fraction) - self.per_op_s * ops


@dataclass(frozen=True)
class References:
    """The ``REFERENCES`` compiled and as fused ops: ``calls`` alternate compiled, fused (each
    called bare: the program's own call, not ``OptimizedModel``'s checks, so the gap is the ops');
    ``ops`` per network; ``load_s`` what compiling or loading them took."""

    calls: tuple[Callable[[], object], ...]
    ops: tuple[int, ...]
    load_s: float

    def gap(self, medians: Sequence[float]) -> Gap:
        """``Gap`` fitted to the calls' medians (seconds, in ``calls``' order): per reference,
        fused - compiled = per_op * ops + fraction * fused."""
        compiled_s, fused_s = tuple(medians[0::2]), tuple(medians[1::2])
        design = np.array([[n, f] for n, f in zip(self.ops, fused_s, strict=True)])
        per_op, fraction = np.linalg.lstsq(design, np.subtract(fused_s, compiled_s), rcond=None)[0]
        per_op, fraction = max(float(per_op), 0.0), min(max(float(fraction), 0.0), MAX_FRACTION)
        return Gap(per_op, fraction, compiled_s, fused_s, self.ops, self.load_s)


def compiled_references(precision: str, log: Callable[[str], None]) -> References:
    """Compile the ``REFERENCES`` with ``mobilenet.optimize`` (once: later calls load their
    packages) and build each as ``fused_ops``, checking that the two compute the same."""
    from mobilenet.optimized import DTYPES, optimize  # noqa: PLC0415
    from mobilenet.prepare import inference_copy  # noqa: PLC0415

    calls: list[Callable[[], object]] = []
    ops, load_s = [], 0.0
    for cfg in REFERENCES:
        model = reference_network(cfg)
        compiled = optimize(model, precision=precision, batch_size=1, backend="inductor", log=log)
        load_s += compiled.compile_seconds
        shape = (1, cfg.in_channels, *cfg.resolution)
        program = fused_ops(inference_copy(model), shape, DTYPES[precision])
        x = torch.rand(shape)
        with torch.inference_mode():
            if not torch.allclose(program(x), compiled.net(x).float(), rtol=2e-2, atol=1e-2):
                raise AssertionError(f"fused_ops does not compute what the compiled {cfg.name} computes")
        calls += [partial(_bare, compiled.net, x), partial(_bare, program, x)]
        ops.append(len(program.ops))
    return References(tuple(calls), tuple(ops), load_s)


def _bare(program: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return program(x)

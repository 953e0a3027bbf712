"""Turning a trained MobileNetV1 into a PyTorch module for inference, and the copies the exports need.

Three steps, each optional but folding:

1. **Fold BatchNorm** into the conv weights and biases (``model.fold_batchnorm()``): BatchNorm left
   as a separate op costs 10-21% of eager time on this CPU, and it blocks conv+activation fusion.
2. **channels_last** (NHWC) memory format: oneDNN's convolutions are NHWC-native, so this saves the
   reorders around every conv; it only pays off once BatchNorm is folded.
3. **Graph mode**: ``"jit"`` traces (with the TF 'SAME' pads as constants, below), freezes (weights
   become constants) and runs ``torch.jit.optimize_for_inference``, which turns each conv into a
   oneDNN convolution on prepacked weights. The compiled path (AOTInductor with freezing) is
   ``mobilenet.optimize``, which falls back to ``frozen_torchscript`` where it cannot compile.

The model given is never modified: preparation works on a deep copy.

PyTorch's graph paths then take ``inference_form``: each depthwise conv's TF pad folded into its
kernel (``pads_in_kernels``), and in a compiled program each pointwise conv a matrix product
(``pointwise_as_matmul``); ``inference_copy`` is all of it.

Two more steps serve the mobile exports (LiteRT, ExecuTorch, Core ML):

* ``fixed_padding_copy``: the TF 'SAME' pads become constant ``ZeroPad2d`` modules, read from
  ``mobilenet.arch.layers(model.arch_cfg)`` at the configured resolution. ``TFSamePad`` computes them
  from the input size at run time, which ``torch.jit.trace``-based converters (coremltools) cannot
  convert; with the size fixed the pads are constants anyway, and the architecture description is
  where they come from, not a second derivation here.
* ``int8_rounded_copy``: conv and classifier weights rounded to the per-channel symmetric int8
  grid the int8 quantizers use (scale = max|w| / 127), and each bias corrected for the shift that
  rounding puts on its channel's mean output, measured on calibration images, layer after layer
  (empirical bias correction, as NNCF's). The quantizers then find exactly these weights (the
  largest weight of each channel stays on the grid, so the scale is unchanged) and the correction
  travels into the int8 file. Measured on TF-slim 1.0-224, 1,000 evaluation images: rounding alone
  leaves 92.5% top-1 agreement with fp32 (the depthwise filters suffer most); with the correction
  98.2%.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mobilenet import arch
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1, TFSamePad

GraphMode = Literal["eager", "jit"]
GRAPH_MODES: tuple[str, ...] = ("eager", "jit")


def folded_copy(model: MobileNetV1) -> MobileNetV1:
    """A copy of ``model`` in eval mode with every BatchNorm folded into its conv."""
    folded = copy.deepcopy(model).eval()
    return folded.fold_batchnorm()


def fixed_padding_copy(model: MobileNetV1, *, fold: bool = True) -> MobileNetV1:
    """A copy of ``model`` in eval mode (BatchNorm folded unless ``fold=False``) whose TF 'SAME'
    pads are constants for the configured resolution, taken from ``arch.layers(model.arch_cfg)``.

    The copy computes what ``model`` computes on inputs of ``model.arch_cfg.resolution`` and is
    traceable by any converter; on other sizes it would pad wrongly, so export it only at that
    size (every mobile format fixes the input shape).
    """
    fixed = folded_copy(model) if fold else copy.deepcopy(model).eval()
    layers = {layer.name: layer for layer in arch.layers(fixed.arch_cfg)}
    for name, module in fixed.conv_layers():
        if not isinstance(module.pad, TFSamePad):
            continue
        (top, bottom), (left, right) = layers[name].pad
        module.pad = nn.ZeroPad2d((left, right, top, bottom)) if top or bottom or left or right else nn.Identity()
    return fixed


def pads_in_kernels(net: nn.Module) -> nn.Module:
    """``net`` (its TF 'SAME' pads constant: ``fixed_padding_copy``) with each depthwise conv's pad
    folded into the conv, in place; returns ``net``. It computes exactly what it computed.

    A pad that is symmetric along a side becomes the conv's own padding. A strided 'SAME' pad is one
    row (column) longer after than before, which a conv's symmetric padding cannot say: the kernel
    grows by a row (column) of zeros in front instead, and takes the longer pad on both sides, so
    each output still sums the same inputs with the same weights. The pad was a copy of the whole
    activation (in eager PyTorch a 32x64x112x112 fp32 pad and conv took 82 ms, the conv alone on the
    grown kernel 14 ms, in an ad hoc timing), while a depthwise conv is memory-bound and the zero
    taps cost it little. A full conv (the stem, Table 4's) is compute-bound, where the zero taps
    would cost (k+1)^2/k^2 of its mult-adds: it keeps its pad.
    """
    from mobilenet.model import ConvBNAct  # noqa: PLC0415 - prepare's module imports stay light

    for module in net.modules():
        if not (isinstance(module, ConvBNAct) and isinstance(module.pad, nn.ZeroPad2d)):
            continue
        conv = module.conv
        if conv.groups == 1 or conv.groups != conv.in_channels or any(conv.padding):  # type: ignore[arg-type]
            continue
        left, right, top, bottom = module.pad.padding
        sides = [(top, bottom), (left, right)]
        if not all(after in (before, before + 1) for before, after in sides):
            continue
        grow = [after - before for before, after in sides]
        grown = nn.Conv2d(
            conv.in_channels, conv.out_channels,
            (conv.kernel_size[0] + grow[0], conv.kernel_size[1] + grow[1]), conv.stride,
            padding=(bottom, right), groups=conv.groups, bias=conv.bias is not None,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            grown.weight.copy_(F.pad(conv.weight, (grow[1], 0, grow[0], 0)))
            if conv.bias is not None:
                grown.bias.copy_(conv.bias)
        module.conv, module.pad = grown, nn.Identity()
    return net


class PointwiseAsMatmul(nn.Module):
    """A folded 1x1 conv and its activation as one matrix product on the channels_last activation
    (a free NHWC view): what ``pointwise_as_matmul`` puts in a ``ConvBNAct``'s ``conv``."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)  # type: ignore[union-attr]
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias)).permute(0, 3, 1, 2)


def pointwise_as_matmul(net: nn.Module) -> nn.Module:
    """``net`` (BatchNorm folded) with each pointwise conv and its activation computed as a
    ``PointwiseAsMatmul``, in place; returns ``net``.

    Compiled, a 1x1 conv and a matrix product are the same oneDNN arithmetic, but the product's
    call costs less around it: ``optimize``'s bf16 batch-1 program went from 8.82 to 7.16 ms and
    from 7.87 to 5.11 ms in two runs of ``benchmarks/bench_inference_form.py`` on an AMX Xeon, its
    other programs by 0.97-1.11x (docs/pytorch.md).
    """
    from mobilenet.model import ConvBNAct  # noqa: PLC0415

    for module in net.modules():
        if not isinstance(module, ConvBNAct) or not isinstance(module.bn, nn.Identity):
            continue
        conv = module.conv
        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (1, 1) or conv.stride != (1, 1) \
                or conv.groups != 1 or conv.bias is None or not isinstance(module.pad, nn.Identity):
            continue
        module.conv, module.act = PointwiseAsMatmul(conv, module.act), nn.Identity()
    return net


def inference_form(net: nn.Module, *, compiled: bool = True) -> nn.Module:
    """``net`` (BatchNorm folded, TF pads constant) as PyTorch's graph paths run it, in place:
    ``pads_in_kernels``, and for a ``compiled`` (inductor) program ``pointwise_as_matmul`` too.
    Frozen TorchScript runs the matmul form far slower (1.0-224 fp32, batch 32: 2.8x the compiled
    program in one interleaved run, where the conv form took 1.10-1.13x, docs/pytorch.md), so the
    programs that are not compiled keep their pointwise convs."""
    pads_in_kernels(net)
    return pointwise_as_matmul(net) if compiled else net


def inference_copy(model: MobileNetV1, *, compiled: bool = True) -> MobileNetV1:
    """The copy PyTorch's graph paths run (``mobilenet.optimize``, the frozen TorchScript, the
    latency model's PyTorch probes): ``fixed_padding_copy`` in ``inference_form``. The model at
    its configured resolution only, as ``fixed_padding_copy``."""
    return inference_form(fixed_padding_copy(model), compiled=compiled)  # type: ignore[return-value]


def int8_scales(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel symmetric int8 scales (max|w| / 127), shaped to broadcast over
    ``weight``; a channel of zeros gets scale 1 (any scale represents it exactly)."""
    dims = tuple(range(1, weight.dim()))
    scale = weight.abs().amax(dim=dims, keepdim=True) / 127
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def round_to_int8_grid(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rounded to its per-channel symmetric int8 grid (values -127..127 times the scale)."""
    scale = int8_scales(weight)
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


@torch.no_grad()
def int8_rounded_copy(model: MobileNetV1, calibration: torch.Tensor, *, chunk: int = 50) -> MobileNetV1:
    """``fixed_padding_copy(model)`` with every conv and the classifier rounded to the per-channel
    int8 grid and the biases corrected, layer after layer, for the mean shift the rounding causes
    (measured on ``calibration``, NCHW float32, preprocessed). See the module docstring.

    The layers run in network order (stem, then each block's depthwise and pointwise conv, the pool,
    the classifier): the order ``model.conv_layers()`` yields them in. Activations are kept for all
    calibration images at one layer at a time, in chunks of ``chunk`` images.
    """
    arch_cfg = model.arch_cfg
    if calibration.dim() != 4 or tuple(calibration.shape[1:]) != (arch_cfg.in_channels, *arch_cfg.resolution):
        raise InputError(
            f"calibration must be an NCHW batch of shape (N, {model.arch_cfg.in_channels}, {model.arch_cfg.height}, "
            f"{model.arch_cfg.width}), got {tuple(calibration.shape)}"
        )
    if len(calibration) == 0:
        raise InputError("int8 rounding needs calibration images: pass a few hundred real ones")
    fixed = fixed_padding_copy(model)
    chunks = list(calibration.float().split(chunk))
    for _, layer in fixed.conv_layers():
        conv = layer.conv
        rounded = round_to_int8_grid(conv.weight)
        shift = torch.zeros_like(conv.bias)
        outputs = []
        for x in chunks:
            x = layer.pad(x)
            exact = conv(x)
            coarse = F.conv2d(x, rounded, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            shift += (coarse - exact).sum(dim=(0, 2, 3))
            outputs.append(coarse)
        shift /= sum(len(o) * o.shape[2] * o.shape[3] for o in outputs)
        conv.weight.copy_(rounded)
        conv.bias.sub_(shift)
        chunks = [layer.act(layer.bn(y - shift.view(1, -1, 1, 1))) for y in outputs]
    features = [torch.flatten(fixed.pool(x), 1) for x in chunks]
    fc = fixed.classifier
    rounded = round_to_int8_grid(fc.weight)
    shift = sum(((f @ (rounded - fc.weight).T).sum(0) for f in features), torch.zeros_like(fc.bias))
    fc.weight.copy_(rounded)
    fc.bias.sub_(shift / len(calibration))
    return fixed


def prepare_for_inference(
    model: MobileNetV1,
    *,
    graph: GraphMode = "jit",
    channels_last: bool = True,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The model, folded and optimised for inference on CPU; outputs match ``model.eval()`` within
    float tolerance (bf16 excepted, which rounds every activation to 8 bits of mantissa).

    Inputs are NCHW tensors as for the original model; with ``channels_last`` the returned module
    converts them itself, so callers need not care. With ``graph="jit"`` the spatial input size is
    fixed to the model's configured resolution (the TF 'SAME' pads are constants); the batch size
    stays free. For the compiled path use ``mobilenet.optimize``.
    """
    if graph == "compile":
        raise InputError("graph='compile' moved: use mobilenet.optimize(model), which compiles with freezing")
    if graph not in GRAPH_MODES:
        raise InputError(f"graph must be one of {GRAPH_MODES}, got {graph!r}")
    net = inference_copy(model, compiled=False) if graph == "jit" else folded_copy(model)
    module = InferenceAdapter(net, channels_last=channels_last, dtype=dtype)
    if graph == "jit":
        example = torch.zeros(1, model.arch_cfg.in_channels, *model.arch_cfg.resolution)
        return frozen_torchscript(module, example)
    return module


def frozen_torchscript(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` traced on ``example``, frozen (weights become constants) and optimised for
    inference (oneDNN convolutions on prepacked weights). The trace fixes every shape computed in
    Python, so ``module`` should hold no size-dependent code (``fixed_padding_copy``); the batch
    dimension stays free."""
    with torch.no_grad(), warnings.catch_warnings():
        # torch 2.9+ flags TorchScript as deprecated; it is still the fallback where compiling is not possible.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(module.eval(), example)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))


class InferenceAdapter(nn.Module):
    """Converts the NCHW float32 input to the layout and dtype the prepared model runs in, and the
    logits back to float32. Inside a traced or compiled graph the conversion fuses with the first
    kernel (the stem's pad, where it has one)."""

    def __init__(self, model: nn.Module, *, channels_last: bool, dtype: torch.dtype) -> None:
        super().__init__()
        layout = torch.channels_last if channels_last else torch.preserve_format
        self.model = model.to(dtype=dtype, memory_format=layout)
        self.channels_last = channels_last
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float()

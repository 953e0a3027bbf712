"""Training kernels where PyTorch's own are slow.

**The strided depthwise convolution's backward.**

A strided depthwise conv's gradient with respect to its input is a transposed conv. oneDNN
computes it, in bf16 on a CPU, with a generic strided kernel (``brgconv_strided``) that runs far
below its stride-1 depthwise kernel. Measured on an Intel Xeon with AMX (2 threads, batch 32,
1.0-224's four strided depthwise layers, forward and backward): 328, 137, 104 and 88 ms the
usual way, 158, 42, 22 and 10 ms as below; in a whole bf16 step they were 40% of the time.

The same gradient is a stride-1 convolution of the output gradient with zeros interleaved
(``stride - 1`` between neighbours), padded by ``kernel - 1`` and convolved with the filters
flipped: exactly the sums the transposed conv computes, in the kernel oneDNN runs fast. The
weight gradient and the forward are unchanged. fp32 keeps oneDNN's own backward, which is the
quicker one there (this detour measured 1.2-1.4x slower in fp32 on the same layers).

**BatchNorm's per-channel sums in a step inductor compiles for a CPU.** A channels_last
activation is a (positions x channels) matrix, and BatchNorm sums each channel over the positions
(its statistics forward, two sums backward). inductor's C++ kernel for such a sum sweeps every
position once per 16 channels, so a 64-channel layer is read four times: 14.7-19.4 GB/s where a
sum of the whole tensor streams at 31-40 (two runs of benchmarks/bench_channel_reductions.py on a
Zen 4, docs/training.md). Written as sums in stages,
eight rows added into one and again until a few hundred are left, each stage is a plain
vectorized pass that inductor fuses with the elementwise work around it (the ReLU6 mask, the
centring), and the first stage reads the activation once. On the Zen 4, one interleaved run each
(docs/training.md): the first block's BatchNorm and ReLU6, forward and backward, compiled at
batch 32, 39.2 -> 32.7 ms; the compiled fp32 NCHW step at 1.0-224, 918 -> 848 ms (1.08x), the
default bf16 step 555 -> 525 ms (1.06x). Only there: the gain is inductor fusing the stages with
their neighbours, which eager PyTorch would run as separate ops over materialized tensors
(ATen's BatchNorm is one fused kernel there); GPUs (Triton's reductions) were not measured; and
small activations lose (``MIN_STAGED_ELEMENTS``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def strided_depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int = 0) -> torch.Tensor:
    """``F.conv2d(x, weight, stride=stride, padding=padding, groups=x.shape[1])`` with the same
    value and gradients, whose input gradient is computed as a stride-1 conv where that is the
    faster way (``StridedDepthwiseConv``). For training: exporters never see it (eval mode)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        return StridedDepthwiseConv.apply(x, weight, stride, padding)


def interleaved_input_grad(grad: torch.Tensor, weight: torch.Tensor, stride: int, padding: int,
                           input_shape: torch.Size) -> torch.Tensor:
    """The input gradient of a depthwise conv (``groups`` = input channels, any depth
    multiplier) whose input has ``input_shape``, from its output gradient ``grad``: zeros
    interleaved, then a stride-1 conv with the flipped filters."""
    n, out_channels, out_h, out_w = grad.shape
    k_h, k_w = weight.shape[-2:]
    channels, size = input_shape[1], input_shape[-2:]
    multiplier = out_channels // channels
    layout = torch.channels_last if grad.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    spread = torch.zeros((n, out_channels, (out_h - 1) * stride + 1, (out_w - 1) * stride + 1),
                         dtype=grad.dtype, device=grad.device).contiguous(memory_format=layout)
    spread[:, :, ::stride, ::stride] = grad
    # Input channel c gathers its `multiplier` output channels: the filters regrouped per input.
    flipped = weight.flip(-2, -1).reshape(channels, multiplier, k_h, k_w)
    full = F.conv2d(spread, flipped, padding=(k_h - 1, k_w - 1), groups=channels)
    # `full` covers the padded input's first (out - 1) * stride + k rows; rows past them were never read.
    height, width = size[0] + 2 * padding, size[1] + 2 * padding
    full = F.pad(full, (0, width - full.shape[-1], 0, height - full.shape[-2]))
    return full[:, :, padding:padding + size[0], padding:padding + size[1]]


class StridedDepthwiseConv(torch.autograd.Function):
    """A strided depthwise conv (no bias); backward as in the module's docstring."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding = ctx.stride, ctx.padding
        interleave = grad.dtype == torch.bfloat16 and grad.device.type == "cpu"
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [stride, stride], [padding, padding], [1, 1], False, [0, 0], x.shape[1],
            [ctx.needs_input_grad[0] and not interleave, ctx.needs_input_grad[1], False],
        )
        if ctx.needs_input_grad[0] and interleave:
            grad_x = interleaved_input_grad(grad, weight, stride, padding, x.shape)
        return grad_x, grad_w, None, None


# A stage adds this many rows into one; the stages stop before fewer than MIN_STAGED_ROWS rows
# remain (a few hundred rows are one small sum, in cache).
STAGE = 8
MIN_STAGED_ROWS = 512
# Below this many elements the stages' extra kernels cost about what inductor's repeated sweeps
# save, or more. benchmarks/bench_staged_floor.py (BatchNorm + ReLU6, forward and the input's
# gradient, compiled as the step compiles them, 64 and 256 channels; Zen 4, 2 threads, OpenMP's
# default wait policy as in training, two interleaved runs per type, docs/training.md), inductor's
# time over the staged one: up to 2^19 elements 0.87-1.13x (noise about 1, fp32 and bf16 alike),
# at 2^20 1.06-1.30x, from 2^21 1.09-1.50x. The floor counts elements, not bytes: the sums are
# taken in fp32 whatever the activation's type. At 1.0-224, batch 32, every conv layer's output
# but one is above it (the last strided depthwise conv's, 7 x 7 x 512: 0.8M).
MIN_STAGED_ELEMENTS = 2**20


def batch_norm(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)``, with the statistics summed in stages (``StagedBatchNorm``) where that is faster:
    an ``nn.BatchNorm2d`` in training, traced by ``torch.compile`` for a CPU, on an activation of
    at least ``MIN_STAGED_ELEMENTS``."""
    if (type(bn) is nn.BatchNorm2d and bn.training and bn.affine and x.device.type == "cpu"
            and torch.compiler.is_compiling() and x.numel() >= MIN_STAGED_ELEMENTS):
        return staged_batch_norm(x, bn)
    return bn(x)


def staged_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(x)`` in training mode (batch statistics, running statistics updated as
    ``nn.BatchNorm2d`` updates them), its per-channel sums taken in stages."""
    with torch.autocast(x.device.type, enabled=False):  # as BatchNorm under autocast: x's dtype out
        y, mean, var = StagedBatchNorm.apply(x, bn.weight, bn.bias, bn.eps)
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            # momentum None: a cumulative average, as nn.BatchNorm2d's
            factor = bn.momentum if bn.momentum is not None else 1.0 / bn.num_batches_tracked
            n = x.numel() // x.shape[1]
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), factor)
            bn.running_var.lerp_((var * (n / max(n - 1, 1))).to(bn.running_var.dtype), factor)
    return y


def staged_channel_sum(rows: torch.Tensor) -> torch.Tensor:
    """The sum over the rows of a (positions x channels) matrix, in stages of ``STAGE`` rows."""
    channels = rows.shape[1]
    while rows.shape[0] % STAGE == 0 and rows.shape[0] >= MIN_STAGED_ROWS:
        rows = rows.view(STAGE, -1, channels).sum(0)
    return rows.sum(0)


def _positions_by_channels(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) as an (N*H*W, C) matrix: a view for channels_last, where each row is one
    position's channels in memory order."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class StagedBatchNorm(torch.autograd.Function):
    """BatchNorm with batch statistics, its sums in stages (the module docstring). Returns the
    output and the batch mean and biased variance (not differentiated, for the running statistics).

    The variance is summed about a shift, the first position's values: E[(x - s)^2] - E[x - s]^2
    loses no precision to a channel mean far from zero, as E[x^2] - E[x]^2 would."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,  # type: ignore[override]
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        compute = torch.promote_types(x.dtype, torch.float32)
        rows = _positions_by_channels(x).to(compute)
        n = rows.shape[0]
        centred = rows - rows[0]
        shifted_mean = staged_channel_sum(centred) / n
        var = (staged_channel_sum(centred * centred) / n - shifted_mean * shifted_mean).clamp_min(0)
        mean = rows[0] + shifted_mean
        invstd = torch.rsqrt(var + eps)
        per_channel = (1, -1, 1, 1)
        y = (x.to(compute) - mean.view(per_channel)) * (invstd * weight).view(per_channel) + bias.view(per_channel)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.mark_non_differentiable(mean, var)
        return y.to(x.dtype), mean, var

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _mean_grad: torch.Tensor,  # type: ignore[override]
                 _var_grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        x, weight, mean, invstd = ctx.saved_tensors
        per_channel = (1, -1, 1, 1)
        compute = mean.dtype
        centred = x.to(compute) - mean.view(per_channel)
        g = grad.to(compute)
        grad_rows = _positions_by_channels(g)
        n = grad_rows.shape[0]
        grad_sum = staged_channel_sum(grad_rows)
        grad_dot_centred = staged_channel_sum(grad_rows * _positions_by_channels(centred))
        grad_centred = g - (grad_sum / n).view(per_channel) - centred * (invstd * invstd * grad_dot_centred / n).view(
            per_channel)
        grad_x = grad_centred * (invstd * weight).view(per_channel)
        return (grad_x.to(x.dtype), (grad_dot_centred * invstd).to(weight.dtype), grad_sum.to(weight.dtype), None)

"""A training kernel where PyTorch's own is slow: the strided depthwise convolution's backward.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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

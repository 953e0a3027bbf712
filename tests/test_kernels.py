"""The strided depthwise conv's own backward (mobilenet.kernels) computes autograd's gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilenet import mobilenet_v1
from mobilenet.kernels import interleaved_input_grad, strided_depthwise_conv2d


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("channels", "multiplier", "size", "stride", "padding"), [
    (8, 1, 13, 2, 0),   # TF 'SAME' after its pad: odd padded size
    (8, 1, 14, 2, 0),   # even: the last padded row is never read
    (6, 2, 11, 2, 1),   # depth multiplier 2, padding inside the conv
    (4, 3, 16, 3, 0),   # stride 3, multiplier 3
    (3, 1, 9, 1, 1),    # stride 1 degenerates to the flipped conv
])
def test_interleaved_input_grad_is_autograds(channels: int, multiplier: int, size: int, stride: int, padding: int,
                                             channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, channels, size, size + 1, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(channels * multiplier, 1, 3, 3, dtype=torch.float64)
    y = F.conv2d(x, weight, stride=stride, padding=padding, groups=channels)
    grad = torch.randn_like(y)
    y.backward(grad)
    mine = interleaved_input_grad(grad, weight, stride, padding, x.shape)
    assert mine.shape == x.shape
    torch.testing.assert_close(mine, x.grad, rtol=0, atol=1e-12)


def test_bf16_gradients_match_onednns() -> None:
    """In bf16 on the CPU the input gradient takes the interleaved route: same sums, so the same
    values to bf16's rounding of the two different accumulation orders."""
    torch.manual_seed(0)
    x64 = torch.randn(4, 16, 29, 29, dtype=torch.float64)
    w64 = torch.randn(16, 1, 3, 3, dtype=torch.float64)

    def grads(conv) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: ANN001
        x = x64.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        w = w64.to(torch.bfloat16).requires_grad_(True)
        y = conv(x, w)
        y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape).to(torch.bfloat16))
        return y.float(), x.grad.float(), w.grad.float()

    theirs = grads(lambda x, w: F.conv2d(x, w, stride=2, groups=16))
    mine = grads(lambda x, w: strided_depthwise_conv2d(x, w, 2))
    for a, b in zip(theirs, mine):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-2 * float(a.abs().max()))


def _graph_ops(loss: torch.Tensor) -> set[str]:
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return {type(node).__name__ for node in seen}


def test_the_model_trains_through_it_and_infers_without_it() -> None:
    torch.manual_seed(0)
    model = mobilenet_v1(0.25, resolution=64, num_classes=10).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained = _graph_ops(model(x).float().sum())
    assert "StridedDepthwiseConvBackward" in trained
    model.eval()
    assert "StridedDepthwiseConvBackward" not in _graph_ops(model(x).sum())


def test_model_gradients_are_unchanged() -> None:
    """Every parameter's gradient, fp32 (oneDNN's backward kept) and bf16 autocast (the
    interleaved input gradient), against the same model with plain convs."""
    torch.manual_seed(0)
    model = mobilenet_v1(0.25, resolution=64, num_classes=10, dropout=0.0).train()
    x, labels = torch.randn(4, 3, 64, 64), torch.tensor([1, 2, 3, 4])
    strided = [m for m in model.modules() if getattr(m, "strided_depthwise", False)]
    assert len(strided) == 4, "the four strided depthwise layers of Table 1"
    for amp in (False, True):
        results = []
        for use_kernel in (True, False):
            for module in strided:
                module.strided_depthwise = use_kernel
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
            results.append({name: p.grad.clone() for name, p in model.named_parameters()})
        mine, theirs = results
        for name, grad in theirs.items():
            scale = float(grad.abs().max()) or 1.0
            tolerance = 5e-2 if amp else 1e-5
            torch.testing.assert_close(mine[name], grad, rtol=tolerance, atol=tolerance * scale, msg=name)

"""The strided depthwise conv's own backward (mobilenet.kernels) computes autograd's gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mobilenet import mobilenet_v1
from mobilenet.kernels import interleaved_input_grad, relu6_from_output, strided_depthwise_conv2d


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


# --- ReLU6 differentiated through its output (compiled steps) ----------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_relu6_from_output_has_relu6s_value_and_gradient(dtype: torch.dtype) -> None:
    """The mask from the output is the mask from the input, at the kinks 0 and 6 included."""
    torch.manual_seed(0)
    x = torch.cat([torch.tensor([-1.0, 0.0, 1e-30, 3.0, 5.99, 6.0, 6.01, 7.0]), torch.randn(200) * 4])
    x = x.to(dtype)
    grad = torch.randn_like(x)
    mine, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = relu6_from_output(mine)
    y.backward(grad)
    F.relu6(theirs).backward(grad)
    assert torch.equal(y, F.relu6(x))
    assert torch.equal(mine.grad, theirs.grad)


def test_a_compiled_step_reads_relu6s_output_not_the_batchnorm_output() -> None:
    """Traced for training, the model's backward has no ``hardtanh_backward`` (which reads the
    BatchNorm output and makes inductor recompute it); its gradients are eager's."""
    from functorch.compile import make_boxed_func  # noqa: PLC0415
    from torch._dynamo.backends.common import aot_autograd  # noqa: PLC0415

    backward_ops: set[str] = set()

    def keep_forward(gm: torch.fx.GraphModule, _: object) -> object:
        return make_boxed_func(gm.forward)

    def note_backward(gm: torch.fx.GraphModule, _: object) -> object:
        backward_ops.update(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    model = mobilenet_v1(0.25, resolution=32, num_classes=10, dropout=0.0).train()
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    F.cross_entropy(model(x), labels).backward()
    eager = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=keep_forward, bw_compiler=note_backward))
    F.cross_entropy(compiled(x), labels).backward()
    assert backward_ops, "the backward graph was traced"
    assert not any("hardtanh_backward" in op for op in backward_ops), sorted(backward_ops)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[name], rtol=1e-4, atol=1e-5, msg=name)

"""mobilenet.kernels computes what PyTorch's own kernels compute: the strided depthwise conv's
backward gives autograd's gradients, and BatchNorm with its sums in stages gives
``nn.BatchNorm2d``'s output, gradients and running statistics."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mobilenet import kernels, mobilenet_v1
from mobilenet.kernels import interleaved_input_grad, staged_batch_norm, strided_depthwise_conv2d


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


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(8, 6, 16, 16), (3, 5, 7, 9)])  # 2,048 rows: three stages; 189: none
def test_staged_batch_norm_is_batchnorm2d(shape: tuple[int, ...], channels_last: bool, momentum: float | None) -> None:
    torch.manual_seed(0)
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + 2)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    theirs = nn.BatchNorm2d(shape[1], momentum=momentum).double().train()
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-1, 1)
    mine = copy.deepcopy(theirs)
    grad = torch.randn(*shape, dtype=torch.float64)
    results = []
    for run in (lambda t: theirs(t), lambda t: staged_batch_norm(t, mine)):
        for _ in range(2):  # two steps: the running statistics' update from a non-initial state
            xi = x.clone().requires_grad_(True)
            y = run(xi)
        y.backward(grad)
        results.append((y, xi.grad))
    (y_theirs, gx_theirs), (y_mine, gx_mine) = results
    torch.testing.assert_close(y_mine, y_theirs, rtol=0, atol=1e-12)
    torch.testing.assert_close(gx_mine, gx_theirs, rtol=0, atol=1e-12)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(mine, name).grad, getattr(theirs, name).grad, rtol=0, atol=1e-10)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), rtol=0, atol=1e-12, msg=name)


def test_staged_batch_norm_under_bf16_autocast_is_batchnorm2d() -> None:
    """A bf16 activation (the default step's): the output in bf16 as BatchNorm's under autocast,
    its statistics in fp32."""
    torch.manual_seed(0)
    x = (torch.randn(8, 16, 12, 12) * 2 + 1).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    theirs = nn.BatchNorm2d(16).train()
    mine = copy.deepcopy(theirs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = theirs(x), staged_batch_norm(x, mine)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=3e-2)
    torch.testing.assert_close(mine.running_mean, theirs.running_mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(mine.running_var, theirs.running_var, rtol=1e-4, atol=1e-6)


def test_staged_variance_keeps_its_precision_far_from_zero() -> None:
    """fp32 channels whose mean is 10^5 times their spread: summed as E[x^2] - E[x]^2 the variance
    would be lost to rounding; about the shift it keeps three digits."""
    torch.manual_seed(0)
    x = (1000 + 0.01 * torch.randn(8, 4, 32, 32)).contiguous(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(4, momentum=1.0).train()  # momentum 1: the running variance is the batch's
    staged_batch_norm(x, bn)
    n = x.numel() // 4
    expected = x.double().var(dim=(0, 2, 3)) * 1.0  # unbiased, as the running variance
    assert expected.min() > 5e-5
    torch.testing.assert_close(bn.running_var.double(), expected, rtol=1e-3, atol=0)
    naive = (x.double() ** 2).float().mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)) ** 2
    assert (naive.double() * n / (n - 1) - expected).abs().max() > 10 * expected.max(), "the case guards the shift"


@pytest.mark.parametrize("min_elements", [0, None])
def test_a_training_graph_compiled_for_a_cpu_sums_batchnorm_in_stages(monkeypatch, min_elements: int | None) -> None:
    """dynamo's graph of a training forward holds the staged BatchNorm, not ATen's, and computes
    eager's loss, gradients and running statistics (in float64, where 27 BatchNorms of 4 images
    do not amplify rounding into the comparison). Activations under ``MIN_STAGED_ELEMENTS`` (all of
    them at this size, unless the test lowers it) keep ATen's BatchNorm."""
    if min_elements is not None:
        monkeypatch.setattr(kernels, "MIN_STAGED_ELEMENTS", min_elements)
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, _inputs: list[torch.Tensor]):  # noqa: ANN202 - dynamo's backend signature
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = mobilenet_v1(0.25, resolution=32, num_classes=10, dropout=0.0).double().train()
    x, labels = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.tensor([1, 2, 3, 4])
    eager = copy.deepcopy(model)
    torch._dynamo.reset()
    compiled = torch.compile(lambda images: F.cross_entropy(model(images), labels), backend=capture, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    code = "\n".join(gm.code for gm in graphs)
    staged = min_elements == 0
    # each of the 27 conv layers' BatchNorm is ATen's, or none is (and the staged ones computed eager's values)
    assert code.count("torch.nn.functional.batch_norm(") == (0 if staged else 27)
    eager_loss = F.cross_entropy(eager(x), labels)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss, rtol=0, atol=1e-12)
    for (name, p), (_, q) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9 * float(q.grad.abs().max()), msg=name)
    for (name, b), (_, c) in zip(model.named_buffers(), eager.named_buffers(), strict=True):
        torch.testing.assert_close(b, c, rtol=1e-9, atol=1e-12, msg=name)
    torch._dynamo.reset()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("batch", "staged"), [(3, False), (6, True)])
def test_the_staged_floor_counts_elements_whatever_the_type(dtype: torch.dtype, batch: int, staged: bool) -> None:
    """An activation of 0.75M elements keeps ATen's BatchNorm and one of 1.5M is staged, in fp32
    and in bf16 alike: the sums are taken in fp32, and benchmarks/bench_staged_floor.py found the
    stages paying from 2^20 elements in both (docs/training.md). A floor in bytes would leave bf16's
    1.5M (3 MiB) to ATen."""
    graphs: list[torch.fx.GraphModule] = []

    def capture(gm: torch.fx.GraphModule, _inputs: list[torch.Tensor]):  # noqa: ANN202 - dynamo's backend signature
        graphs.append(gm)
        return gm.forward

    bn = nn.BatchNorm2d(64).train()
    x = torch.randn(batch, 64, 64, 64).to(dtype).contiguous(memory_format=torch.channels_last)
    assert (x.numel() >= kernels.MIN_STAGED_ELEMENTS) == staged
    torch._dynamo.reset()
    torch.compile(lambda z: kernels.batch_norm(bn, z), backend=capture, fullgraph=True)(x)
    code = "\n".join(gm.code for gm in graphs)
    assert ("torch.nn.functional.batch_norm(" not in code) == staged
    torch._dynamo.reset()

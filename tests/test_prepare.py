"""Inference preparation keeps the outputs: folding, channels_last, TorchScript freezing, bf16."""

from __future__ import annotations

import warnings

import pytest
import torch

from deploy_helpers import trained_looking_model
from mobilenet.prepare import folded_copy, prepare_for_inference


def test_folded_copy_matches_and_leaves_the_original_alone(model, images):
    folded = folded_copy(model)
    assert all(m.folded for _, m in folded.conv_layers())
    assert not any(m.folded for _, m in model.conv_layers())
    with torch.no_grad():
        expected = model(images)
        assert expected.abs().max() > 0.05  # the comparison below is not between two near-zero tensors
        torch.testing.assert_close(folded(images), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("graph", ["eager", "jit"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_prepared_model_matches_the_unfolded_model(model, images, graph, channels_last):
    prepared = prepare_for_inference(model, graph=graph, channels_last=channels_last)
    with torch.no_grad():
        expected = model(images)
        torch.testing.assert_close(prepared(images), expected, atol=1e-5, rtol=1e-4)
        # The batch dimension stays free after tracing with batch 1.
        torch.testing.assert_close(prepared(images[:1]), expected[:1], atol=1e-5, rtol=1e-4)


def test_bf16_is_close_but_not_exact(model, images):
    prepared = prepare_for_inference(model, graph="eager", dtype=torch.bfloat16)
    with torch.no_grad():
        expected, got = model(images), prepared(images)
    assert got.dtype == torch.float32
    assert (got.argmax(1) == expected.argmax(1)).all()
    error = (got - expected).abs().max().item()
    assert 0 < error < 0.05 * expected.abs().max().item()


def test_the_separable_and_full_conv_variants_both_prepare(images):
    conv = trained_looking_model(variant="conv")
    prepared = prepare_for_inference(conv, graph="jit")
    with torch.no_grad():
        torch.testing.assert_close(prepared(images), conv(images), atol=1e-4, rtol=1e-4)


def test_unknown_graph_mode_is_a_clear_error(model):
    with pytest.raises(ValueError, match="graph must be one of"):
        prepare_for_inference(model, graph="xla")


def test_fixed_padding_copy_has_constant_pads_from_arch_and_traces_cleanly(model, images):
    from mobilenet import arch
    from mobilenet.model import TFSamePad
    from mobilenet.prepare import fixed_padding_copy

    fixed = fixed_padding_copy(model)
    layers = {layer.name: layer for layer in arch.layers(model.arch_cfg)}
    padded = 0
    for name, module in fixed.conv_layers():
        assert not isinstance(module.pad, TFSamePad)
        if isinstance(module.pad, torch.nn.ZeroPad2d):
            (top, bottom), (left, right) = layers[name].pad
            assert tuple(module.pad.padding) == (left, right, top, bottom)
            padded += 1
    assert padded == sum(layer.stride > 1 for layer in layers.values() if layer.kind != "pool")
    with torch.no_grad():
        torch.testing.assert_close(fixed(images), model(images), atol=1e-5, rtol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # no size-dependent Python left to freeze
        traced = torch.jit.trace(fixed, images[:1])
    with torch.no_grad():
        torch.testing.assert_close(traced(images), model(images), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("overrides", "grown"), [
    ({"resolution": 128}, (4, 4)),  # even sides: TF pads one after, none before, on both
    ({"resolution": (97, 128)}, (3, 4)),  # odd heights pad one before and after: the conv's own padding
    ({"resolution": 128, "padding": "keras"}, (4, 4)),  # Keras' fixed zero row and column
], ids=["even", "odd-height", "keras"])
def test_pads_in_kernels_compute_what_the_pads_did_and_leave_only_the_stems(overrides, grown):
    from mobilenet.model import ConvBNAct
    from mobilenet.prepare import fixed_padding_copy, pads_in_kernels

    model = trained_looking_model(alpha=0.25, **overrides)
    padded, folded = fixed_padding_copy(model), pads_in_kernels(fixed_padding_copy(model))
    strided_dw = [m for _, m in folded.conv_layers() if m.conv.groups > 1 and m.conv.stride[0] > 1]
    assert strided_dw and all(m.conv.kernel_size == grown and isinstance(m.pad, torch.nn.Identity) for m in strided_dw)
    left = [name for name, m in folded.conv_layers() if isinstance(m.pad, torch.nn.ZeroPad2d)]
    assert left == ["stem"]  # a full conv keeps its pad (below)
    for m in strided_dw:  # the grown row and column are zeros, the rest the original kernel
        assert not m.conv.weight[:, :, : grown[0] - 3].any() and not m.conv.weight[:, :, :, : grown[1] - 3].any()
    x = torch.rand(2, 3, *model.arch_cfg.resolution)
    with torch.no_grad():
        expected = padded(x)
        assert expected.abs().max() > 0.05
        torch.testing.assert_close(folded(x), expected, atol=1e-5, rtol=1e-4)
    assert all(isinstance(m, ConvBNAct) for _, m in folded.conv_layers())


def test_full_convs_keep_their_pads():
    """A full conv is compute-bound: zero taps would cost it (k+1)^2/k^2 of its mult-adds."""
    from mobilenet.prepare import fixed_padding_copy, inference_copy

    model = trained_looking_model(alpha=0.25, resolution=96, variant="conv")
    padded = [name for name, m in fixed_padding_copy(model).conv_layers() if isinstance(m.pad, torch.nn.ZeroPad2d)]
    folded = [name for name, m in inference_copy(model).conv_layers() if isinstance(m.pad, torch.nn.ZeroPad2d)]
    assert folded == padded and len(padded) == 5


@pytest.mark.parametrize("activation", ["relu6", "relu"])
def test_pointwise_convs_as_matmuls_compute_the_same(activation):
    from mobilenet.prepare import PointwiseAsMatmul, fixed_padding_copy, inference_copy

    model = trained_looking_model(alpha=0.25, resolution=128, activation=activation)
    padded, matmuls = fixed_padding_copy(model), inference_copy(model)
    kinds = [type(m.conv).__name__ for _, m in matmuls.conv_layers()]
    assert kinds == ["Conv2d"] + ["Conv2d", "PointwiseAsMatmul"] * 13  # every pointwise conv, nothing else
    for _, m in matmuls.conv_layers():
        if isinstance(m.conv, PointwiseAsMatmul):  # the activation moved into the matmul, the same one
            assert isinstance(m.conv.act, torch.nn.ReLU6 if activation == "relu6" else torch.nn.ReLU)
            assert isinstance(m.act, torch.nn.Identity)
    x = torch.rand(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = padded(x)
        assert expected.abs().max() > 0.05
        torch.testing.assert_close(matmuls(x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(matmuls(x.contiguous()), expected, atol=1e-5, rtol=1e-4)  # NCHW too
    # frozen TorchScript runs the matmul form far slower: what is not compiled keeps its convs
    scripted = inference_copy(model, compiled=False)
    assert not any(isinstance(m.conv, PointwiseAsMatmul) for _, m in scripted.conv_layers())


def test_int8_rounding_puts_weights_on_the_grid_and_bias_correction_helps(model, images):
    from mobilenet.prepare import fixed_padding_copy, int8_rounded_copy, round_to_int8_grid

    calibration = images.repeat(2, 1, 1, 1)
    rounded = int8_rounded_copy(model, calibration)
    for _, module in rounded.conv_layers():
        weight = module.conv.weight
        steps = weight / (weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127)
        torch.testing.assert_close(steps, steps.round(), atol=1e-3, rtol=0)  # integers -127..127 times a scale
    plain = fixed_padding_copy(model)
    with torch.no_grad():
        for _, module in plain.conv_layers():
            module.conv.weight.copy_(round_to_int8_grid(module.conv.weight))
        plain.classifier.weight.copy_(round_to_int8_grid(plain.classifier.weight))
        expected = model(images)
        corrected_error = (rounded(images) - expected).mean(0).abs().mean()
        plain_error = (plain(images) - expected).mean(0).abs().mean()
    # The correction removes the mean shift of each logit that rounding causes (on these images).
    assert corrected_error < 0.7 * plain_error  # measured 0.59x here; a wrong sign makes it worse than plain


def test_int8_rounding_checks_the_calibration_shape(model):
    from mobilenet.prepare import int8_rounded_copy

    with pytest.raises(ValueError, match="calibration must be an NCHW batch"):
        int8_rounded_copy(model, torch.zeros(2, 3, 64, 64))

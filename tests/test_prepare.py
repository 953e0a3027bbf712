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

"""Inference preparation keeps the outputs: folding, channels_last, TorchScript freezing, bf16."""

from __future__ import annotations

import pytest
import torch

from deploy_helpers import trained_looking_model
from mobilenet.deploy.prepare import folded_copy, prepare_for_inference


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

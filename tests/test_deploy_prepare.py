"""Inference preparation keeps the outputs: folding, channels_last, TorchScript freezing, bf16."""

from __future__ import annotations

import pytest
import torch

from mobilenet.deploy.prepare import folded_copy, prepare_for_inference
from mobilenet.model import MobileNetV1


def trained_looking_model(**settings) -> MobileNetV1:
    """A small model whose BatchNorms hold non-trivial statistics, as after training (fresh ones
    are the identity up to eps, which would let a broken fold pass)."""
    torch.manual_seed(0)
    model = MobileNetV1(**({"alpha": 0.25, "resolution": 128} | settings)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.1, 0.3)
    return model


@pytest.fixture(scope="module")
def model() -> MobileNetV1:
    return trained_looking_model()


@pytest.fixture(scope="module")
def images(model: MobileNetV1) -> torch.Tensor:
    from mobilenet.deploy.export import photo_batch

    return photo_batch(model)


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

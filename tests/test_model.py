"""The PyTorch model agrees with the cost model, layer for layer, for any configuration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import mobilenet
from mobilenet import arch, cost, mobilenet_v1
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.factory import load_model
from mobilenet.model import MobileNetV1

configs = st.builds(
    ArchConfig,
    alpha=st.floats(min_value=0.01, max_value=2.0, allow_nan=False, exclude_min=True),
    resolution=st.tuples(st.integers(32, 320), st.integers(32, 320)),
    variant=st.sampled_from(arch.VARIANTS),
    depth_multiplier=st.integers(1, 3),
    num_classes=st.integers(1, 1001),
    padding=st.sampled_from(arch.PADDINGS),
    rounding=st.sampled_from(arch.ROUNDINGS),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=configs)
def test_parameters_and_mult_adds_match_the_cost_model(cfg: ArchConfig) -> None:
    # On the meta device nothing is computed: shapes and the FLOP counter run, so any size is cheap.
    with torch.device("meta"):
        model = MobileNetV1(cfg).eval()
        x = torch.empty(1, cfg.in_channels, *cfg.resolution)
    total = cost.network_cost(cfg).total
    assert sum(p.numel() for p in model.parameters()) == total.trainable_params
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    assert sum(p.numel() for p in model.parameters()) + buffers == total.all_params
    with FlopCounterMode(display=False) as counter:
        logits = model(x)
    assert counter.get_total_flops() == 2 * total.mult_adds  # the counter reports 2 x mult-adds
    assert logits.shape == (1, cfg.num_classes)


def test_per_layer_mult_adds_match() -> None:
    cfg = ArchConfig(alpha=0.5, resolution=(67, 90), depth_multiplier=2)
    with torch.device("meta"):
        model = MobileNetV1(cfg).eval()
        x = torch.empty(1, 3, *cfg.resolution)
    with FlopCounterMode(display=False) as counter:
        model(x)
    by_module = counter.get_flop_counts()
    for layer in cost.network_cost(cfg).layers:
        if layer.kind in ("pool",):
            continue
        name = "classifier" if layer.kind == "fc" else f"{layer.name}.conv"
        assert sum(by_module[f"MobileNetV1.{name}"].values()) == 2 * layer.mult_adds, layer.name


@pytest.mark.parametrize("size", [(33, 33), (57, 101), (224, 224), (225, 199)])
def test_output_shapes_at_odd_and_non_square_sizes(size: tuple[int, int]) -> None:
    cfg = ArchConfig(alpha=0.25, resolution=size, num_classes=7)
    model = MobileNetV1(cfg).eval()
    x = torch.randn(2, 3, *size)
    features = model.forward_features(x)
    last = [layer for layer in arch.layers(cfg) if layer.kind == "pointwise"][-1]
    assert features.shape == (2, last.out_channels, *last.out_size)
    assert model(x).shape == (2, 7)


def test_feature_maps_for_a_backbone() -> None:
    model = mobilenet_v1(alpha=0.25, resolution=96).eval()
    x = torch.randn(1, 3, 96, 96)
    maps = model.forward_intermediates(x)
    info = {f["reduction"]: f for f in model.feature_info}
    for stride, fmap in zip((8, 16, 32), maps):
        assert fmap.shape == (1, info[stride]["num_chs"], 96 // stride, 96 // stride)
    torch.testing.assert_close(maps[-1], model.forward_features(x))
    with pytest.raises(ValueError, match="strides"):
        model.forward_intermediates(x, strides=(64,))


def test_tf_padding_samples_like_tensorflow_same() -> None:
    # SAME on an even input pads only right/bottom; a symmetric pad of 1 shifts the sampling grid.
    cfg = ArchConfig(alpha=0.25, resolution=64)
    model = MobileNetV1(cfg).eval()
    stem = model.stem
    x = torch.randn(1, 3, 64, 64)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), stem.conv.weight, stride=2)
    torch.testing.assert_close(stem.conv(stem.pad(x)), expected)
    symmetric = MobileNetV1(cfg.replace(padding="symmetric")).eval()
    symmetric.load_state_dict(model.state_dict())
    # Same shapes, different sampling (compared at the stem: a random net's logits are all near 0).
    assert symmetric.stem(x).shape == model.stem(x).shape
    assert not torch.allclose(symmetric.stem(x), model.stem(x))


def test_fold_batchnorm_preserves_outputs() -> None:
    torch.manual_seed(0)
    model = mobilenet_v1(alpha=0.5, resolution=64, num_classes=10)
    model.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        model.fold_batchnorm()
        after = model(x)
    assert all(m.folded for _, m in model.conv_layers())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_needs_eval_mode() -> None:
    with pytest.raises(RuntimeError, match="eval"):
        mobilenet_v1(alpha=0.25, resolution=32).fold_batchnorm()


def test_initialisation_follows_tf_slim() -> None:
    torch.manual_seed(0)
    model = mobilenet_v1()
    w = model.blocks[12].pw.conv.weight
    assert w.abs().max() <= 0.18 + 1e-6  # truncated at two standard deviations of 0.09
    assert 0.075 < w.std() < 0.085  # a normal truncated at 2 sigma has std 0.88 x sigma = 0.079
    assert torch.all(model.classifier.bias == 0)


def test_builder_validates_and_resets_classifier() -> None:
    with pytest.raises(ValueError, match="alpha"):
        mobilenet_v1(alpha=-1)
    model = mobilenet_v1(alpha=0.25, resolution=32, num_classes=1001)
    model.reset_classifier(10)
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert model.arch_cfg.num_classes == 10


def test_activation_and_grayscale_options() -> None:
    model = mobilenet_v1(alpha=0.25, resolution=32, activation="relu", in_channels=1)
    assert isinstance(model.stem.act, torch.nn.ReLU)
    assert model.eval()(torch.randn(1, 1, 32, 32)).shape == (1, 1000)


def test_reset_classifier_keeps_the_device_and_dtype() -> None:
    model = mobilenet_v1(alpha=0.25, resolution=32).to(torch.bfloat16).eval()
    model.reset_classifier(5)
    assert model.classifier.weight.dtype == model.classifier.bias.dtype == torch.bfloat16
    assert model.classifier.weight.device == model.stem.conv.weight.device
    assert model(torch.randn(1, 3, 32, 32, dtype=torch.bfloat16)).shape == (1, 5)


def test_reset_classifier_gives_loaded_weights_the_config_of_a_fresh_classifier(tmp_path) -> None:
    """After reset_classifier(n) the weights' config says what mobilenet_v1(weights, num_classes=n)
    says: their name and preprocessing, a custom label set of n classes, no published accuracy;
    so classify runs it and weights_of packages it for what it is."""
    from mobilenet.preprocess import Preprocess
    from mobilenet.weights import PretrainedCfg, pretrained_cfg_of, save_safetensors, weights_of

    torch.manual_seed(0)
    published = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=1001)).eval()
    cfg = PretrainedCfg(name="small", arch_cfg=published.arch_cfg, preprocess=Preprocess(resolution=32),
                        label_set="imagenet-1001", published={"top1": 41.5, "top5": 66.3})
    path = save_safetensors(weights_of(published, cfg), tmp_path / "small.safetensors")
    model = mobilenet_v1(weights=path)
    assert pretrained_cfg_of(model).is_imagenet  # (what the weights are, before the classifier is replaced)
    model.reset_classifier(10)
    fresh = pretrained_cfg_of(model)
    assert fresh == pretrained_cfg_of(mobilenet_v1(weights=path, num_classes=10))
    assert (fresh.label_set, fresh.num_classes, fresh.published) == ("custom", 10, {})
    assert fresh.arch_cfg == model.arch_cfg and not fresh.is_imagenet
    assert weights_of(model).pretrained_cfg == fresh
    image = tmp_path / "grey.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (120, 120, 120)).save(image)
    [answer] = mobilenet.classify(image, weights=model, top_k=3)
    assert answer.ok and len(answer.top) == 3 and all(0 <= p.index < 10 for p in answer.top)


@pytest.mark.parametrize("key", ["in_chans", "channels"])
def test_an_unknown_setting_is_one_line_naming_the_accepted_ones(key: str) -> None:
    # timm's in_chans is in_channels here: the message says so; any unknown key lists the settings.
    for build in (lambda: mobilenet_v1(alpha=0.25, **{key: 1}), lambda: MobileNetV1(**{key: 1}),
                  lambda: load_model(None, **{key: 1})):
        with pytest.raises(InputError, match=rf"^unknown architecture setting {key}\b.*in_channels$") as info:
            build()
        assert "\n" not in str(info.value) and "alpha, resolution, variant" in str(info.value)
        assert ("for in_chans give in_channels" in str(info.value)) == (key == "in_chans")

"""The architecture description: Table 1, the variants, rounding, padding and validation."""

from __future__ import annotations

import pytest

from mobilenet import arch
from mobilenet.arch import ArchConfig


def test_table1_body_at_224() -> None:
    layers = arch.layers(ArchConfig())
    convs = [x for x in layers if x.kind not in ("pool", "fc")]
    assert len(convs) == 27  # stem + 13 x (dw, pw)
    assert [x.kind for x in convs[:3]] == ["conv", "depthwise", "pointwise"]
    assert convs[0].weight_shape == (32, 3, 3, 3)
    assert convs[-1].out_size == (7, 7) and convs[-1].out_channels == 1024
    # The last depthwise conv has stride 1 (the paper's Table 1 prints 2: a typo).
    assert convs[-2].kind == "depthwise" and convs[-2].stride == 1
    pointwise_sizes = [x.out_size[0] for x in convs if x.kind == "pointwise"]
    assert pointwise_sizes == [112, 56, 56, 28, 28, 14, 14, 14, 14, 14, 14, 7, 7]
    assert layers[-1].weight_shape == (1000, 1024)


@pytest.mark.parametrize(
    ("alpha", "rounding", "expected"),
    [(1.0, "tf", 32), (0.25, "tf", 8), (0.35, "tf", 11), (0.35, "timm", 16), (0.1, "tf", 8), (0.75, "timm", 24)],
)
def test_stem_width_rounding(alpha: float, rounding: str, expected: int) -> None:
    assert arch.scale_channels(32, alpha, rounding) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75, 1.0])
def test_tf_and_timm_rounding_agree_at_published_widths(alpha: float) -> None:
    for channels in (32, 64, 128, 256, 512, 1024):
        assert arch.scale_channels(channels, alpha, "tf") == arch.scale_channels(channels, alpha, "timm")


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "expected"),
    [(224, 3, 2, (0, 1)), (225, 3, 2, (1, 1)), (7, 3, 1, (1, 1)), (14, 1, 1, (0, 0)), (1, 3, 2, (1, 1))],
)
def test_tf_same_padding(size: int, kernel: int, stride: int, expected: tuple[int, int]) -> None:
    assert arch.same_padding(size, kernel, stride) == expected


def test_padding_modes_give_equal_sizes_but_different_offsets() -> None:
    tf = arch.layers(ArchConfig(padding="tf"))
    sym = arch.layers(ArchConfig(padding="symmetric"))
    assert [x.out_size for x in tf] == [x.out_size for x in sym]
    assert tf[0].pad == ((0, 1), (0, 1)) and sym[0].pad == ((1, 1), (1, 1))


def test_odd_and_non_square_sizes() -> None:
    layers = arch.layers(ArchConfig(resolution=(33, 97)))
    sizes = [x.out_size for x in layers if x.kind == "pointwise"]
    assert sizes[-1] == (2, 4)  # ceil(33/32), ceil(97/32)
    assert layers[0].out_size == (17, 49)


def test_variants() -> None:
    conv = arch.layers(ArchConfig(variant="conv"))
    assert {x.kind for x in conv} == {"conv", "pool", "fc"} and len(conv) == 1 + 13 + 2
    shallow = arch.layers(ArchConfig(variant="shallow"))
    assert sum(x.kind == "depthwise" for x in shallow) == 8
    assert not [x for x in shallow if x.kind == "depthwise" and x.in_size == (14, 14) and x.stride == 1]


def test_depth_multiplier_widens_depthwise_outputs() -> None:
    layers = arch.layers(ArchConfig(depth_multiplier=3))
    dw, pw = layers[1], layers[2]
    assert (dw.in_channels, dw.out_channels, dw.groups) == (32, 96, 32)
    assert pw.in_channels == 96


def test_feature_stages() -> None:
    stages = arch.feature_stages(ArchConfig())
    assert sorted(stages) == [2, 4, 8, 16, 32]
    assert (stages[8].out_channels, stages[16].out_channels, stages[32].out_channels) == (256, 512, 1024)


def test_config_round_trip_and_name() -> None:
    cfg = ArchConfig(alpha=0.75, resolution=(192, 160), num_classes=1001, padding="symmetric")
    assert ArchConfig.from_dict(cfg.to_dict()) == cfg
    assert ArchConfig(alpha=0.5, resolution=160).name == "mobilenet_v1_0.5_160"
    assert ArchConfig(resolution=(192, 160)).name == "mobilenet_v1_1.0_192x160"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"alpha": 0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"resolution": 31}, "resolution"),
        ({"resolution": (224,)}, "resolution"),
        ({"variant": "deep"}, "variant"),
        ({"depth_multiplier": 0}, "depth_multiplier"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"activation": "gelu"}, "activation"),
        ({"padding": "same"}, "padding"),
        ({"rounding": "up"}, "rounding"),
        ({"bn_eps": 0}, "bn_eps"),
        ({"dropout": 1.0}, "dropout"),
        ({"in_channels": 0}, "in_channels"),
    ],
)
def test_invalid_settings_say_what_is_allowed(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ArchConfig(**settings)


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="unknown architecture settings"):
        ArchConfig.from_dict({"alpha": 1.0, "width": 3})


def test_keras_padding_sizes():
    """Keras' stem is 'SAME'; its other strided convs pad one zero row and column after and run
    'valid': at 200 px block 5's 25x25 input gives 12x12 (SAME: 13x13); at multiples of 32 the two agree."""
    keras = {layer.name: layer for layer in arch.layers(arch.ArchConfig(resolution=200, padding="keras"))}
    same = {layer.name: layer for layer in arch.layers(arch.ArchConfig(resolution=200))}
    assert keras["blocks.5.dw"].in_size == (25, 25) and keras["blocks.5.dw"].pad == ((0, 1), (0, 1))
    assert keras["blocks.5.dw"].out_size == (12, 12) and same["blocks.5.dw"].out_size == (13, 13)
    assert keras["stem"].pad == same["stem"].pad
    odd = {layer.name: layer for layer in arch.layers(arch.ArchConfig(resolution=225, padding="keras"))}
    assert odd["stem"].out_size == (113, 113)  # 'SAME' stem: ceil(225 / 2)
    for size in (128, 160, 192, 224, 256):
        sizes = [layer.out_size for layer in arch.layers(arch.ArchConfig(resolution=size, padding="keras"))]
        assert sizes == [layer.out_size for layer in arch.layers(arch.ArchConfig(resolution=size))]


def test_a_workload_forgets_only_the_settings_that_change_no_work() -> None:
    """TF's checkpoints and Keras' ports of them (bn_eps 1e-3 and 1e-5) are one workload: timed
    and kept once. Anything that changes a shape or the work stays apart."""
    keras_like = ArchConfig(alpha=0.5, resolution=128, bn_eps=1e-5, bn_momentum=0.01, dropout=0.2)
    assert keras_like.workload() == ArchConfig(alpha=0.5, resolution=128).workload()
    assert keras_like.workload().bn_eps == ArchConfig().bn_eps
    for change in ({"alpha": 0.75}, {"resolution": 160}, {"padding": "symmetric"}, {"num_classes": 10},
                   {"variant": "conv"}, {"activation": "relu"}):
        assert keras_like.replace(**change).workload() != keras_like.workload(), change

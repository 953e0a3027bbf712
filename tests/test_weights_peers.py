"""Conversions reproduce the peers' own outputs: Keras 3's MobileNet (on its torch backend, so no
TensorFlow) and timm's mobilenetv1 models, all with random weights and BatchNorm statistics."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere

import numpy as np
import pytest
import torch

from mobilenet.weights import convert, detect_format

keras = pytest.importorskip("keras")
timm = pytest.importorskip("timm")


def _keras_mobilenet(alpha: float, size: int, seed: int):
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=alpha, weights=None, classifier_activation=None
    )
    # Random scales and shifts, then moving statistics of one training-mode pass (momentum 0), so
    # that the logits still depend on the input after 28 random layers (see randomize_batchnorm).
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.momentum = 0.0
    model(rng.uniform(-1, 1, (8, size, size, 3)).astype("float32"), training=True)
    return model


def _keras_outputs(model, x_nhwc: np.ndarray) -> np.ndarray:
    out = np.asarray(keras.ops.convert_to_numpy(model(x_nhwc, training=False)))
    assert np.abs(out[0] - out[-1]).max() > 0.1 * out.std() or len(out) == 1  # input-dependent logits
    return out


@pytest.mark.parametrize(("alpha", "size"), [(0.25, 128), (0.5, 160), (0.75, 192), (1.0, 224)])
def test_keras_legacy_h5_matches_keras(tmp_path, alpha, size):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # the writer of Keras' published .h5 layout

    model = _keras_mobilenet(alpha, size, seed=int(alpha * 100))
    path = tmp_path / f"mobilenet_{alpha}_{size}_tf.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    assert detect_format(path) == "keras"
    ours, cfg = convert(path, resolution=size)
    a = ours.arch_cfg
    assert (a.alpha, a.num_classes, a.padding, a.bn_eps) == (alpha, 1000, "keras", 1e-3)
    assert cfg.label_set == "imagenet-1000"
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - _keras_outputs(model, x)).max() <= 1e-4


@pytest.mark.parametrize(("alpha", "size"), [(0.25, 128), (1.0, 224)])
def test_keras3_weights_h5_matches_keras(tmp_path, alpha, size):
    model = _keras_mobilenet(alpha, size, seed=7)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    ours, _ = convert(path, resolution=size)
    x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - _keras_outputs(model, x)).max() <= 1e-4


def test_keras_whole_model_h5_is_read_with_its_input_size(tmp_path):
    model = _keras_mobilenet(0.25, 160, seed=3)
    model.save(tmp_path / "whole.h5")  # legacy whole-model file: weights under model_weights/
    ours, cfg = convert(tmp_path / "whole.h5")  # no resolution given: the file's model_config says 160
    assert ours.arch_cfg.resolution == (160, 160) and cfg.preprocess.resolution == (160, 160)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 160, 160, 3)).astype("float32")
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - _keras_outputs(model, x)).max() <= 1e-4


@pytest.mark.parametrize("size", [200, 225, 97])
def test_keras_at_sizes_where_its_padding_is_not_same(tmp_path, size):
    """At 200 (block 6 sees 25x25), 225 (odd stem input) and 97 Keras' zero padding + 'valid' is not
    TF's 'SAME'; converted Keras weights get padding='keras' and reproduce Keras exactly there."""
    from mobilenet.arch import ArchConfig, layers

    model = _keras_mobilenet(0.25, size, seed=size)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    ours, _ = convert(path, resolution=size)
    assert ours.arch_cfg.padding == "keras"
    keras_maps = [tuple(layer.output.shape[1:3]) for layer in model.layers
                  if layer.name.startswith("conv_pw_") and layer.name.count("_") == 2]
    arch_maps = [layer.out_size for layer in layers(ours.arch_cfg) if layer.kind == "pointwise"]
    assert arch_maps == keras_maps  # arch (and so the cost model) gives Keras' own map sizes
    same = ArchConfig(alpha=0.25, resolution=size)
    same_maps = [layer.out_size for layer in layers(same) if layer.kind == "pointwise"]
    assert same_maps != keras_maps  # ... which 'SAME' does not, at these sizes
    x = np.random.default_rng(size).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        wrong = ours.__class__(ours.arch_cfg.replace(padding="tf"))
        wrong.load_state_dict(ours.state_dict())
        wrong_out = wrong.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    reference = _keras_outputs(model, x)
    assert np.abs(got - reference).max() <= 1e-4
    assert np.abs(wrong_out - reference).max() > 1e-2  # 'SAME' would be silently wrong here


def test_keras_archive_is_read_with_its_input_size(tmp_path):
    model = _keras_mobilenet(0.5, 200, seed=11)
    model.save(tmp_path / "model.keras")
    assert detect_format(tmp_path / "model.keras") == "keras"
    ours, cfg = convert(tmp_path / "model.keras")  # no --resolution: config.json says 200
    assert ours.arch_cfg.resolution == (200, 200) and ours.arch_cfg.padding == "keras" and cfg.format == "keras-archive"
    x = np.random.default_rng(5).uniform(-1, 1, (2, 200, 200, 3)).astype("float32")
    with torch.no_grad():
        got = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert np.abs(got - _keras_outputs(model, x)).max() <= 1e-4


def _timm_model(channel_multiplier: float):
    if channel_multiplier == 1.0:
        model = timm.create_model("mobilenetv1_100")
    else:
        # create_model fixes the multiplier per name; this is the builder it calls.
        from timm.models.efficientnet import _gen_mobilenet_v1

        model = _gen_mobilenet_v1("mobilenetv1_100", channel_multiplier)
    from weights_helpers import randomize_batchnorm

    randomize_batchnorm(model, torch.rand(8, 3, 224, 224, generator=torch.Generator().manual_seed(9)) * 2 - 1)
    return model.eval()


@pytest.mark.parametrize(("multiplier", "suffix"), [(1.0, ".pth"), (0.5, ".safetensors")])
def test_timm_state_dict_matches_timm(tmp_path, multiplier, suffix):
    torch.manual_seed(0)
    model = _timm_model(multiplier)
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(path))
    assert detect_format(path) == "timm"
    ours, cfg = convert(path)
    a = ours.arch_cfg
    assert (a.padding, a.bn_eps, a.rounding, a.alpha) == ("symmetric", 1e-5, "timm",
                                                                                      multiplier)
    assert cfg.preprocess.interpolation == "bicubic"
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        reference = model(x)
        assert (reference[0] - reference[1]).abs().max() > 0.1 * reference.std()  # input-dependent logits
        assert (ours(x) - reference).abs().max().item() <= 1e-4

"""Hugging Face transformers checkpoints (``MobileNetV1ForImageClassification``) convert and give
transformers' own outputs; built here with ``save_pretrained`` (random weights, BatchNorm
statistics measured on data), both with ``tf_padding`` and without."""

from __future__ import annotations

import pytest
import torch

from mobilenet.weights import convert, detect_format, load_pretrained

transformers = pytest.importorskip("transformers")


def _hf_model(tf_padding: bool, labels: int = 1001, alpha: float = 0.25, size: int = 128):
    from weights_helpers import randomize_batchnorm

    id2label = {0: "background", **{i: f"class {i}" for i in range(1, labels)}} if labels == 1001 else None
    config = transformers.MobileNetV1Config(depth_multiplier=alpha, image_size=size, tf_padding=tf_padding,
                                            num_labels=labels, **({"id2label": id2label} if id2label else {}))
    torch.manual_seed(0)
    model = transformers.MobileNetV1ForImageClassification(config)
    randomize_batchnorm(model, torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    return model.eval()


@pytest.mark.parametrize("tf_padding", [True, False])
def test_save_pretrained_directory_reproduces_transformers(tmp_path, tf_padding):
    model = _hf_model(tf_padding)
    model.save_pretrained(tmp_path / "ckpt")
    assert detect_format(tmp_path / "ckpt") == "transformers"
    ours, cfg = convert(tmp_path / "ckpt")
    assert ours.arch_cfg.padding == ("tf" if tf_padding else "symmetric")
    got = (ours.arch_cfg.alpha, ours.arch_cfg.resolution, ours.arch_cfg.num_classes, ours.arch_cfg.bn_eps)
    assert got == (0.25, (128, 128), 1001, 1e-3)
    assert cfg.label_set == "imagenet-1001"
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        reference = model(pixel_values=x).logits
        assert (reference[0] - reference[1]).abs().max() > 0.1 * reference.std()  # input-dependent logits
        assert (ours(x) - reference).abs().max().item() <= 1e-4
        # At an odd size TF 'SAME' pads differently; ours computes it from the input as transformers does.
        x_odd = torch.rand(1, 3, 131, 131, generator=torch.Generator().manual_seed(3)) * 2 - 1
        assert (ours(x_odd) - model(pixel_values=x_odd).logits).abs().max().item() <= 1e-4
        # The user-facing default: 1,000 ImageNet classes, transformers' logits without "background".
        assert (load_pretrained(tmp_path / "ckpt")(x) - reference[:, 1:]).abs().max().item() <= 1e-4


def test_weights_file_alone_is_read_too(tmp_path):
    model = _hf_model(True, labels=10)
    model.save_pretrained(tmp_path / "ckpt")
    ours, cfg = convert(tmp_path / "ckpt" / "model.safetensors", resolution=128)
    assert detect_format(tmp_path / "ckpt" / "model.safetensors") == "transformers"
    assert ours.arch_cfg.num_classes == 10 and cfg.label_set == "custom"
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        assert (ours(x) - model(pixel_values=x).logits).abs().max().item() <= 1e-4

"""Hugging Face transformers checkpoints (``MobileNetV1ForImageClassification``) convert and give
transformers' own outputs; built here with ``save_pretrained`` (random weights, BatchNorm
statistics measured on data), both with ``tf_padding`` and without."""

from __future__ import annotations

import pytest
import torch

from mobilenet.weights import WeightFormatError, convert, detect_format, load_pretrained
from mobilenet.weights.labels import imagenet_classes

transformers = pytest.importorskip("transformers")


def _hf_model(tf_padding: bool, labels: int = 1001, alpha: float = 0.25, size: int = 128,
              id2label: dict[int, str] | None = None):
    from weights_helpers import randomize_batchnorm

    if id2label is None and labels == 1001:  # Google's checkpoints: "background", then ImageNet's names
        id2label = {i: name for i, (_, name) in enumerate([("", "background"), *imagenet_classes()])}
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


def test_weights_file_is_read_with_the_config_beside_it_and_refused_without(tmp_path):
    model = _hf_model(False, labels=10)  # symmetric padding: transformers' defaults would be wrong
    model.save_pretrained(tmp_path / "ckpt")
    ours, cfg = convert(tmp_path / "ckpt" / "model.safetensors")
    assert detect_format(tmp_path / "ckpt" / "model.safetensors") == "transformers"
    assert ours.arch_cfg.num_classes == 10 and ours.arch_cfg.padding == "symmetric" and cfg.label_set == "custom"
    assert cfg.labels is None  # transformers' placeholders LABEL_0 ... name nothing
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        assert (ours(x) - model(pixel_values=x).logits).abs().max().item() <= 1e-4
    alone = tmp_path / "elsewhere" / "model.safetensors"
    alone.parent.mkdir()
    alone.write_bytes((tmp_path / "ckpt" / "model.safetensors").read_bytes())
    with pytest.raises(WeightFormatError, match=r"without its config\.json.*\(padding='tf' or symmetric\)"):
        convert(alone, resolution=128)
    assert convert(alone, resolution=128, padding="symmetric")[0].arch_cfg.padding == "symmetric"


def test_a_fine_tuned_checkpoints_id2label_are_its_labels(tmp_path):
    names = ["cat", "dog", "eel"]
    _hf_model(True, labels=3, id2label=dict(enumerate(names))).save_pretrained(tmp_path / "ckpt")
    model = load_pretrained(tmp_path / "ckpt")
    cfg = model.pretrained_cfg
    assert (cfg.label_set, cfg.class_names, model.arch_cfg.num_classes) == ("custom", names, 3)
    from mobilenet.inference import classify
    from mobilenet.preprocess import sample_photos

    answer = classify(sample_photos()[:1], weights=model, top_k=3)
    assert sorted(p.label for p in answer[0].top) == sorted(names)

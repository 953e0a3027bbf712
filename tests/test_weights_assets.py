"""Against TensorFlow's published files in ../shared/assets (skipped where the folder is absent):
the converted float model reproduces TFLite's golden probabilities, the dequantised uint8 models
agree with TFLite's own interpreter, and the default weights name real photos correctly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mobilenet.preprocess import Preprocess, load_image
from mobilenet.weights import convert, load_pretrained

pytestmark = pytest.mark.assets

QUANT_MODELS = [
    ["mobilenet_v1_0.25_128_quant.tflite"],
    ["mobilenet_v1_0.25_224_quant.tflite"],
    ["mobilenet_v1_0.5_160_quant.tflite"],
    ["mobilenet_v1_0.75_192_quant.tflite"],
    ["mobilenet_v1_1.0_224_quant_body.tflite", "mobilenet_v1_1.0_224_quant_head.tflite"],
]


def test_float_tflite_reproduces_golden_probabilities(assets_dir):
    golden = np.load(assets_dir / "tflite" / "golden" / "mobilenet_v1_0.25_224_float_tflite_golden.npz")
    model, cfg = convert(assets_dir / "tflite" / "mobilenet_v1_0.25_224.tflite")
    assert model.stem.folded and cfg.label_set == "imagenet-1001"
    x = torch.from_numpy(golden["inputs_uint8_nhwc"]).float().permute(0, 3, 1, 2)
    x = (x - 127.5) / 127.5  # the golden inputs' own normalisation
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).numpy()
    assert np.abs(probs - golden["probs_1001"]).max() <= 1e-4


@pytest.fixture(scope="module")
def val_images(assets_dir) -> list:
    """The first 300 validation images (sorted file order), decoded once (227x227 RGB)."""
    folder = assets_dir / "imagenet-val1300" / "images"
    return [load_image(p) for p in sorted(folder.glob("*.JPEG"))[:300]]


def _tflite_logits(paths: list[Path], inputs_uint8: np.ndarray) -> np.ndarray:
    """TFLite's interpreter, uint8 end to end; a model split in parts runs part after part."""
    from ai_edge_litert.interpreter import Interpreter

    stages = []
    for path in paths:
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        stages.append(interpreter)
    logits = []
    for image in inputs_uint8:
        value = image[None]
        for interpreter in stages:
            inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
            interpreter.set_tensor(inp["index"], value.reshape(inp["shape"]).astype(inp["dtype"]))
            interpreter.invoke()
            value = interpreter.get_tensor(out["index"])
        logits.append(value.reshape(-1).astype(np.int32))
    return np.stack(logits)


def _uint8_inputs(val_images: list, resolution: tuple[int, int], count: int) -> np.ndarray:
    geometry = Preprocess(resolution=resolution)  # TF's central 87.5 % crop, bilinear
    return np.stack([np.asarray(geometry.crop_and_resize(img), dtype=np.uint8) for img in val_images[:count]])


def _agreement(ours_top1: np.ndarray, tflite_logits: np.ndarray) -> float:
    """Share of images where our top-1 is TFLite's top-1. uint8 logits often tie at the top (TFLite's
    argmax then takes the lowest index); any of the tied classes counts as TFLite's answer."""
    best = tflite_logits.max(axis=1)
    return float(np.mean(tflite_logits[np.arange(len(ours_top1)), ours_top1] == best))


def _round_activations_to(model, grids: list[tuple[float, float, float]]) -> None:
    """Emulate TFLite's uint8 activations: every conv output snapped to its file's grid."""
    for (_, module), (low, high, step) in zip(model.conv_layers(), grids):
        module.register_forward_hook(
            lambda _m, _i, out, low=low, high=high, step=step: ((out.clamp(low, high) - low) / step).round() * step
            + low
        )


# The first 300 images (100 for the two larger models) keep the suite's time in check;
# benchmarks/eval_converted.py runs every model on all 1,300 (results in docs/weights.md).
@pytest.mark.slow
@pytest.mark.parametrize(("files", "count", "float_threshold"), [
    (QUANT_MODELS[0], 300, 0.92), (QUANT_MODELS[1], 300, 0.92), (QUANT_MODELS[2], 300, 0.97),
    (QUANT_MODELS[3], 100, 0.97), (QUANT_MODELS[4], 100, 0.97),
], ids=lambda v: v[0].removesuffix(".tflite") if isinstance(v, list) else None)
def test_dequantised_uint8_models_agree_with_tflite(assets_dir, val_images, files, count, float_threshold):
    from mobilenet.weights.tflite import activation_grids

    paths = [assets_dir / "tflite" / f for f in files]
    model, cfg = convert(paths)
    inputs = _uint8_inputs(val_images, model.arch_cfg.resolution, count)
    reference = _tflite_logits(paths, inputs)
    x = cfg.preprocess.normalize(inputs)  # (q - 128) / 128: the uint8 input's own quantisation
    with torch.inference_mode():
        ours = torch.cat([model(batch).argmax(1) for batch in x.split(50)]).numpy()
        # The float model computes between TFLite's uint8 grid points; at alpha 0.25 the logit
        # margins are small enough that this alone moves ~3-6 % of top-1 answers.
        assert _agreement(ours, reference) >= float_threshold
        _round_activations_to(model, activation_grids(paths)[:-1])
        emulated = torch.cat([model(batch).argmax(1) for batch in x.split(50)]).numpy()
    agreement = _agreement(emulated, reference)
    assert agreement >= 0.97, f"top-1 agrees on {100 * agreement:.1f}% of {len(inputs)} images"


@pytest.mark.slow
def test_default_weights_name_the_reference_photos(assets_dir):
    model = load_pretrained(num_classes=1001)  # TF's layout, so the indices are those Coral's and TFLite's tests state
    transform = model.pretrained_cfg.preprocess.eval_transform()
    names = model.pretrained_cfg.label_names
    photos = assets_dir / "photos"
    x = torch.stack([transform(load_image(photos / name)) for name in ("burger.jpg", "cat.bmp")])
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    top = probs.argmax(1).tolist()
    assert [names[i] for i in top] == ["cheeseburger", "Egyptian cat"]
    assert top == [934, 286]  # TF's 1001-class indices, as Coral's and TFLite's own tests state them
    assert probs[1, 286] >= 0.78  # Coral's threshold for its uint8 model on this photo
    with torch.no_grad():
        assert load_pretrained()(x).argmax(1).tolist() == [933, 285]  # the default: 1,000 classes, background dropped


def test_a_tflite_file_with_flipped_bytes_is_refused(assets_dir, tmp_path):
    """4 KB of flipped bytes inside the classifier's weights of TF's float 0.25-224 model: the
    FlatBuffer still parses and every shape fits, but values like 1e24 are no trained MobileNet."""
    from mobilenet.weights import WeightFormatError

    source = assets_dir / "tflite" / "mobilenet_v1_0.25_224.tflite"
    model, _ = convert(source)
    data = bytearray(source.read_bytes())
    # The 1x1 logits conv is stored OHWI, i.e. the (1001, 256) matrix row by row.
    raw = model.classifier.weight.detach().numpy().astype("<f4").tobytes()
    start = bytes(data).find(raw[:64])
    assert start > 0
    for i in range(start + 1000, start + 1000 + 4096):
        data[i] ^= 0xFF
    (tmp_path / "flipped.tflite").write_bytes(bytes(data))
    with pytest.raises(WeightFormatError, match=r"'classifier\.weight' (reaches|has \d+ NaN)"):
        convert(tmp_path / "flipped.tflite")

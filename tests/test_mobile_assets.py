"""Mobile exports against reality: TF's own .tflite files and real ImageNet images (../shared/assets).

* Our fp32 .tflite of TF's float 0.25-224 reproduces TFLite's own probabilities on its golden photos.
* int8 (.tflite and .pte) of TF's float 0.25-224 keeps the top-1 of fp32 on 100 evaluation images,
  calibrated on 100 of the calibration images (file names sorted: the first 300 calibrate, the
  rest evaluate). Measured with 300 calibration images on the 1,000 evaluation ones: 91% top-1
  agreement at 0.25-224 (97% at 1.0-224, where the quantizer's own ReLU6 handling gave 87.7%);
  85% on 100 images leaves room for the smaller sample. A quantization that is broken outright
  (wrong scales, lost biases) agrees on a few percent.
* The LiteRT predictor runs TF's uint8 1.0-224 body + head pair, classifying real images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilenet.deploy.optional import available
from mobilenet.preprocess import preprocess_images

pytestmark = [
    pytest.mark.assets,
    pytest.mark.skipif(not available("litert_torch"), reason="pip install 'mobilenet[litert]'"),
]


@pytest.fixture(scope="module")
def tf_float(assets_dir):
    from mobilenet.weights import convert

    model, cfg = convert(assets_dir / "tflite" / "mobilenet_v1_0.25_224.tflite")
    model.pretrained_cfg = cfg
    return model


@pytest.fixture(scope="module")
def split(assets_dir, tf_float):
    folder = assets_dir / "imagenet-val1300"
    paths = sorted((folder / "images").iterdir())
    rows = (folder / "labels.csv").read_text().splitlines()[1:]
    labels = {row.split(",")[0]: int(row.split(",")[1]) for row in rows}
    pre = tf_float.pretrained_cfg.preprocess
    calibration = preprocess_images(paths[:100], pre)
    evaluation = paths[300:400]
    truth = torch.tensor([labels[p.name] for p in evaluation]) + 1  # TF's background class first
    return calibration, preprocess_images(evaluation, pre), truth


def test_our_fp32_tflite_reproduces_tflites_own_outputs(assets_dir, tf_float, tmp_path):
    from mobilenet.deploy.formats import litert
    from mobilenet.deploy.formats.tflite_flatbuffer import read_metadata
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor

    golden = np.load(assets_dir / "tflite" / "golden" / "mobilenet_v1_0.25_224_float_tflite_golden.npz")
    path = litert.write(tf_float, tmp_path / "m.tflite", precision="fp32")[0]
    x = torch.from_numpy((golden["inputs_uint8_nhwc"].astype(np.float32) - 127.5) / 127.5).permute(0, 3, 1, 2)
    probs = LiteRtPredictor.from_file(path, threads=2)(x).softmax(1).numpy()
    assert np.abs(probs - golden["probs_1001"]).max() < 1e-4
    assert read_metadata(path)["labels"][0] == "background"


@pytest.mark.parametrize("fmt", ["tflite", pytest.param("pte", marks=pytest.mark.slow)])
def test_int8_of_real_weights_keeps_the_fp32_top1(tf_float, split, tmp_path, fmt):
    if fmt == "pte" and not available("executorch"):
        pytest.skip("pip install 'mobilenet[executorch]'")
    from mobilenet.deploy.formats import executorch, litert
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor

    calibration, evaluation, truth = split
    writer, runner = (litert, LiteRtPredictor) if fmt == "tflite" else (executorch, ExecuTorchPredictor)
    path = writer.write(tf_float, tmp_path / f"m.{fmt}", precision="int8", calibration=calibration)[0]
    predictor = runner.from_file(path, precision="int8", threads=2)
    got = torch.cat([predictor(evaluation[i : i + 25]) for i in range(0, len(evaluation), 25)])
    with torch.no_grad():
        expected = tf_float(evaluation)
    agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    assert agreement >= 0.85
    fp32_top1 = (expected.argmax(1) == truth).float().mean().item()
    assert (got.argmax(1) == truth).float().mean().item() >= fp32_top1 - 0.05


def test_litert_predictor_runs_tfs_uint8_body_and_head(assets_dir, split):
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor

    folder = assets_dir / "tflite"
    predictor = LiteRtPredictor.from_file(
        [folder / "mobilenet_v1_1.0_224_quant_body.tflite", folder / "mobilenet_v1_1.0_224_quant_head.tflite"],
        threads=2,
    )
    assert predictor.precision == "int8" and "uint8" in predictor.description
    _, evaluation, truth = split  # TF's uint8 models take (q - 128) / 128: our [-1, 1] input, quantized
    got = torch.cat([predictor(evaluation[i : i + 25]) for i in range(0, len(evaluation), 25)])
    assert got.shape == (len(evaluation), 1001)
    assert (got.argmax(1) == truth).float().mean().item() > 0.6

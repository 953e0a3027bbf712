"""int8 post-training quantization runs on both backends and stays close to fp32 on real photos.

The accuracy cost on ImageNet (calibrate on 300 validation images, evaluate on 1,000 others) is
measured by benchmarks/bench_int8_accuracy.py and recorded in docs/performance.md; here a
random-weight model only shows the int8 path computes what the fp32 one does.
"""

from __future__ import annotations

import pytest
import torch

from mobilenet.deploy.export import ExportMismatchError, export
from mobilenet.deploy.optional import available
from mobilenet.deploy.quantize import calibration_tensor, image_files
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.verify import sample_photos, verify


def calibration_photos():
    return sample_photos() * 4  # 16 real images: enough for ranges on a test, not for accuracy


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_stays_close_to_fp32(model, images, runtime):
    if not available(runtime):
        pytest.skip(f"{runtime} not installed")
    predictor = make_predictor(model, runtime, "int8", calibration_images=calibration_photos(), threads=2)
    check = verify(model, predictor, images, precision="int8")
    assert check.top1_agreement == 1.0
    # Quantized, so not exact, but within a few percent of the logits' spread.
    assert 0 < check.max_abs_diff < 0.15 * check.logit_spread
    with torch.no_grad():
        reference = model(images)
    cosine = torch.nn.functional.cosine_similarity(predictor(images), reference).min().item()
    assert cosine > 0.98


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "suffix"), [("onnx", ".onnx"), ("openvino", ".xml")])
def test_int8_export_is_smaller_and_verified(model, tmp_path, fmt, suffix):
    if not available("onnxruntime" if fmt == "onnx" else "openvino"):
        pytest.skip(f"{fmt} runtime not installed")
    fp32 = tmp_path / f"fp32{suffix}"
    int8 = tmp_path / f"int8{suffix}"
    export(model, fp32, format=fmt)
    check = export(model, int8, format=fmt, precision="int8", calibration_images=calibration_photos())
    assert check.precision == "int8" and check.top1_agreement >= 0.75
    size = (lambda p: p.stat().st_size + (p.with_suffix(".bin").stat().st_size if fmt == "openvino" else 0))
    # int8 weights are a quarter the size of fp32 (plus scales and zero points).
    assert size(int8) < 0.45 * size(fp32)


def test_int8_verification_judges_top1_not_tolerance(model, images):
    class Scrambled:
        runtime = "fake"

        def __call__(self, x):  # a "quantized" model that lost the plot: labels permuted
            return model(x).detach().roll(1, dims=1)

    with pytest.raises(ExportMismatchError, match="further from PyTorch than quantization explains"):
        verify(model, Scrambled(), images, precision="int8")


def test_calibration_folder_errors_are_clear(tmp_path, model):
    from mobilenet.preprocess import ImageError, Preprocess

    with pytest.raises(ValueError, match="no such folder"):
        image_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        image_files(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        calibration_tensor(image_files(tmp_path), Preprocess(resolution=128))

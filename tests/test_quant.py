"""int8 post-training quantization runs on both backends and stays close to fp32 on real photos.

The accuracy cost on ImageNet (calibrate on 300 validation images, evaluate on 1,000 others) is
measured by benchmarks/bench_int8_accuracy.py and recorded in docs/performance.md; here a
random-weight model only shows the int8 path computes what the fp32 one does.
"""

from __future__ import annotations

import pytest
import torch

from described_cpus import ZEN3
from mobilenet.cpu import cpu_info
from mobilenet.deploy.export import ExportMismatchError, export
from mobilenet.deploy.optional import available
from mobilenet.deploy.quantize import calibration_tensor, image_files, seven_bit_weights
from mobilenet.deploy.runtime import make_predictor
from mobilenet.deploy.verify import verify
from mobilenet.preprocess import sample_photos


def calibration_photos():
    return sample_photos() * 4  # 16 real images: enough for ranges on a test, not for accuracy


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_stays_close_to_fp32(model, images, runtime):
    if not available(runtime):
        pytest.skip(f"{runtime} not installed")
    predictor = make_predictor(model, runtime, "int8", calibration_images=calibration_photos(), threads=2)
    check = verify(model, predictor, images, precision="int8")  # relative RMS <= 0.35, clear top-1s kept
    # Quantized, so not exact, but within a few percent of the logits' spread (the random test
    # network's logits lie close together, so its top-1 flips more easily than a trained one's).
    assert 0 < check.max_abs_diff < 0.15 * check.logit_spread and check.relative_rms < 0.15
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
    check = export(model, int8, format=fmt, precision="int8", calibration_images=calibration_photos()).verification
    assert check.precision == "int8" and check.relative_rms < 0.15
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


# Portable int8: on x86 CPUs without VNNI the u8 x s8 kernels add pairs of products in saturating
# 16-bit lanes, so 8-bit weights overflow (ONNX Runtime int8 of the published 1.0-224 fell from
# 78.9% to 64.1% top-1 under an emulated Zen 3). Files keep weights to 7 bits: 2 x 255 x 64 fits.



@pytest.fixture(scope="module")
def calibration(model):
    from mobilenet.preprocess import Preprocess

    return calibration_tensor(calibration_photos(), Preprocess(resolution=model.arch_cfg.resolution))


def test_in_process_int8_follows_this_cpu():
    assert seven_bit_weights(None) == (cpu_info().is_x86 and not cpu_info().int8_dot)
    assert seven_bit_weights(True) and not seven_bit_weights(False)


def test_a_cpu_without_vnni_gets_seven_bit_weights(monkeypatch):
    monkeypatch.setattr("mobilenet.deploy.quantize.cpu_info", lambda: ZEN3)
    assert seven_bit_weights(None)


@pytest.mark.slow
@pytest.mark.skipif(not available("onnxruntime"), reason="onnxruntime not installed")
def test_portable_onnx_int8_keeps_weights_to_seven_bits(model, calibration, tmp_path, monkeypatch):
    from mobilenet.deploy.formats import onnx as onnx_format
    from mobilenet.deploy.runtimes.ort import OnnxRuntimePredictor, int8_weight_magnitude

    portable = onnx_format.write(model, tmp_path / "p.onnx", precision="int8", calibration=calibration)[0]
    full = onnx_format.write(model, tmp_path / "f.onnx", precision="int8", calibration=calibration,
                             portable_int8=False)[0]
    assert int8_weight_magnitude(portable.read_bytes()) <= 64
    assert int8_weight_magnitude(full.read_bytes()) == 127
    monkeypatch.setattr("mobilenet.deploy.runtimes.ort.cpu_info", lambda: ZEN3)
    with pytest.warns(UserWarning, match="saturate"):
        predictor = OnnxRuntimePredictor.from_file(full, precision="int8")
    assert "SATURATES" in predictor.description and "8-bit" in predictor.description
    assert "7-bit" in OnnxRuntimePredictor.from_file(portable, precision="int8").description


@pytest.mark.slow
@pytest.mark.skipif(not available("openvino"), reason="openvino not installed")
def test_portable_openvino_int8_keeps_dense_convolution_weights_to_seven_bits(model, calibration):
    import numpy as np

    from mobilenet.deploy.formats.openvino import openvino_model
    from mobilenet.deploy.quantize import quantize_openvino

    def dense_weight_magnitudes(ov_model) -> list[int]:
        # int8 constants that feed (through their dequantization) a dense, not a grouped, convolution:
        # the layers whose kernels use the saturating pair sums (depthwise kernels do not).
        out = []
        for op in ov_model.get_ordered_ops():
            if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8":
                shape = list(op.get_output_shape(0))
                if len(shape) == 4:
                    out.append(int(np.abs(op.get_data().astype(np.int16)).max()))
        return out

    portable = dense_weight_magnitudes(quantize_openvino(openvino_model(model), calibration, portable=True))
    full = dense_weight_magnitudes(quantize_openvino(openvino_model(model), calibration, portable=False))
    assert portable and max(portable) <= 64
    assert max(full) == 127

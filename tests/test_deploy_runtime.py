"""make_predictor: every runtime x precision it offers agrees with PyTorch on real photos, ``auto``
says what it picked, and every refusal is a clear error."""

from __future__ import annotations

import sys

import pytest
import torch

from mobilenet.deploy.export import sample_photos, verify
from mobilenet.deploy.optional import MissingRuntimeError, available
from mobilenet.deploy.runtime import AUTO_PREFERENCE, choose_runtime, make_predictor


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runtime", "precision"),
    [("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")],
)
def test_float_predictors_agree_with_pytorch(model, images, runtime, precision):
    if runtime != "torch" and not available(runtime):
        pytest.skip(f"{runtime} not installed")
    predictor = make_predictor(model, runtime, precision, threads=2)
    assert (predictor.runtime, predictor.precision) == (runtime, precision)
    check = verify(model, predictor, images, precision=precision)
    assert check.top1_agreement == 1.0
    if precision == "fp32":
        assert check.max_abs_diff < 1e-4
    else:  # bf16 really runs in bf16: not bit-equal to fp32 (an unset OpenVINO hint would fail fp32 above)
        assert check.max_abs_diff > 1e-5
    out = predictor(images.numpy())  # numpy input too
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (len(images), 1000)


@pytest.mark.slow
def test_auto_says_what_it_picked_and_why(model):
    predictor = make_predictor(model, "auto", "fp32", threads=2)
    runtime, reason = choose_runtime("fp32")
    assert predictor.runtime == runtime
    assert f"auto picked {runtime}" in predictor.description and reason in predictor.description
    assert runtime == next(r for r, _ in AUTO_PREFERENCE["fp32"] if r == "torch" or available(r))


def test_auto_skips_a_runtime_that_is_not_installed(monkeypatch):
    first = AUTO_PREFERENCE["fp32"][0][0]
    monkeypatch.setitem(sys.modules, first, None)  # makes `import <first>` fail
    runtime, reason = choose_runtime("fp32")
    assert runtime != first and f"{first} not installed" in reason


@pytest.mark.parametrize(("module", "runtime", "extra"), [("onnxruntime", "onnxruntime", "onnx"),
                                                          ("openvino", "openvino", "openvino")])
def test_missing_runtime_names_the_pip_extra(model, monkeypatch, module, runtime, extra):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingRuntimeError, match=rf"pip install 'mobilenet\[{extra}\]'"):
        make_predictor(model, runtime, "fp32")


@pytest.mark.parametrize(
    ("runtime", "precision", "calibration", "message"),
    [
        ("onnxruntime", "int8", None, "int8 needs calibration images"),
        ("torch", "int8", ["x.jpg"], "torch does not offer int8; use --runtime onnxruntime or openvino"),
        ("onnxruntime", "bf16", None, "onnxruntime does not offer bf16"),
        ("tensorrt", "fp32", None, "runtime must be one of"),
        ("torch", "fp16", None, "precision must be one of"),
    ],
)
def test_refusals_are_clear(model, runtime, precision, calibration, message):
    with pytest.raises(ValueError, match=message):
        make_predictor(model, runtime, precision, calibration_images=calibration)


def test_sample_photos_are_real_files():
    photos = sample_photos()
    assert photos and all(p.stat().st_size > 10_000 for p in photos)


@pytest.mark.slow
def test_micro_batches_give_the_same_result(model, images):
    if not available("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    predictor = make_predictor(model, "onnxruntime", "fp32", threads=2)
    assert predictor.micro_batch is None  # whole batches by default
    batch = torch.cat([images] * 3)  # 12 images
    whole = predictor(batch)
    predictor.micro_batch = 5  # slices of 5, 5, 2
    torch.testing.assert_close(predictor(batch), whole, atol=1e-5, rtol=1e-5)

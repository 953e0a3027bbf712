"""ONNX and OpenVINO exports equal PyTorch on real photos, keep a dynamic batch, and are never
written when they do not match."""

from __future__ import annotations

import pytest
import torch

from mobilenet.deploy import export as export_module
from mobilenet.deploy.export import ExportMismatchError, export, onnx_input_shape
from mobilenet.deploy.optional import available
from mobilenet.deploy.runtime import OnnxRuntimePredictor, OpenVinoPredictor

needs_onnx = pytest.mark.skipif(not available("onnxruntime"), reason="onnxruntime not installed")
needs_openvino = pytest.mark.skipif(not available("openvino"), reason="openvino not installed")


@needs_onnx
@pytest.mark.slow
def test_onnx_round_trip_with_dynamic_batch(model, images, tmp_path):
    path = tmp_path / "m.onnx"
    check = export(model, path)
    assert check.max_abs_diff < 1e-4 and check.top1_agreement == 1.0
    assert check.batch_sizes == (1, len(images))
    assert onnx_input_shape(path)[0] == "batch" and onnx_input_shape(path)[1:] == [3, 128, 128]
    predictor = OnnxRuntimePredictor.from_file(path)
    expected = model(images).detach()
    eight = torch.cat([images, images.flip(0)])  # a batch size the export never saw
    torch.testing.assert_close(predictor(eight), torch.cat([expected, expected.flip(0)]), atol=1e-4, rtol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary files left
    assert path.stat().st_mode & 0o777 == export_module.default_file_mode()  # not mkstemp's 0o600


@needs_openvino
@pytest.mark.slow
def test_openvino_round_trip_with_dynamic_batch(model, images, tmp_path):
    path = tmp_path / "m.xml"
    check = export(model, path, format="openvino")
    assert check.max_abs_diff < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    # fp32 weights kept (OpenVINO's save_model would halve them to fp16 by default).
    weights = sum(p.numel() for p in model.parameters())
    assert path.with_suffix(".bin").stat().st_size > 3.5 * weights
    predictor = OpenVinoPredictor.from_file(path, precision="fp32")
    expected = model(images).detach()
    for batch in (1, 3, len(images)):
        torch.testing.assert_close(predictor(images[:batch]), expected[:batch], atol=1e-4, rtol=1e-4)


@needs_onnx
@pytest.mark.slow
def test_a_mismatching_export_is_an_error_and_writes_nothing(model, tmp_path, monkeypatch):
    real_folded_copy = export_module.folded_copy

    def broken_fold(m):  # what a lost bias or a wrong pad would look like to the verifier
        folded = real_folded_copy(m)
        folded.classifier.bias.data += 0.01
        return folded

    monkeypatch.setattr(export_module, "folded_copy", broken_fold)
    path = tmp_path / "m.onnx"
    path.write_bytes(b"an earlier export")
    with pytest.raises(ExportMismatchError, match="differs from PyTorch"):
        export(model, path)
    assert path.read_bytes() == b"an earlier export"  # the previous file survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "tflite"}, "format must be onnx or openvino"),
        ({"precision": "bf16"}, "bf16 is a runtime setting"),
        ({"precision": "int8"}, "int8 export needs calibration images"),
        ({"format": "openvino"}, r"written to a \.xml file"),
    ],
)
def test_bad_export_arguments_are_clear_errors(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export(model, tmp_path / "m.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []

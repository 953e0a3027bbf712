"""Mobile exports round-trip in their own runtimes: .tflite in the LiteRT interpreter, .pte in
ExecuTorch's runtime, .mlpackage checked structurally (Core ML predictions need macOS).

Each conversion takes seconds, so every file is written once per module (module-scoped fixtures)
and shared by the tests that read it. The model is the deployment tests' small network with
BatchNorm statistics measured on photos; accuracy on ImageNet is measured by
benchmarks/bench_mobile.py and, on real weights, by tests/test_mobile_assets.py.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from mobilenet.deploy.optional import MissingRuntimeError, available
from mobilenet.deploy.verify import photo_batch, verify
from mobilenet.prepare import folded_copy, round_to_int8_grid
from mobilenet.preprocess import sample_photos

litert_installed = pytest.mark.skipif(
    not (available("litert_torch") and available("ai_edge_quantizer")), reason="pip install 'mobilenet[litert]'"
)
executorch_installed = pytest.mark.skipif(not available("executorch"), reason="pip install 'mobilenet[executorch]'")
coreml_installed = pytest.mark.skipif(not available("coremltools"), reason="pip install 'mobilenet[coreml]'")


@pytest.fixture(scope="module")
def calibration(model):
    return photo_batch(model, sample_photos() * 4)  # 16 real images: ranges for a test, not accuracy


@pytest.fixture(scope="module")
def tflite_export(model, tmp_path_factory):
    """The fp32 .tflite as ``mobilenet export`` writes it: verified, with its checksums and what it runs."""
    from mobilenet.deploy.export import export

    return export(model, tmp_path_factory.mktemp("tflite") / "fp32.tflite", precision="fp32")


@pytest.fixture(scope="module")
def tflite_fp32(tflite_export):
    return tflite_export.files[0]


@pytest.fixture(scope="module")
def tflite_int8(model, calibration, tmp_path_factory):
    from mobilenet.deploy.formats import litert

    path = tmp_path_factory.mktemp("tflite") / "int8.tflite"
    return litert.write(model, path, precision="int8", calibration=calibration)[0]


@pytest.fixture(scope="module")
def pte_export(model, tmp_path_factory):
    """The fp32 .pte as ``mobilenet export`` writes it (NCHW, the default)."""
    from mobilenet.deploy.export import export

    return export(model, tmp_path_factory.mktemp("pte") / "fp32.pte", precision="fp32")


@pytest.fixture(scope="module")
def pte_fp32(pte_export):
    return pte_export.files[0]


@pytest.fixture(scope="module")
def pte_int8(model, calibration, tmp_path_factory):
    from mobilenet.deploy.formats import executorch

    path = tmp_path_factory.mktemp("pte") / "int8.pte"
    return executorch.write(model, path, precision="int8", calibration=calibration)[0]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b).min().item()


def _flipped_copy(path, tmp_path):
    """A copy of an export (file and checksums) with one bit flipped in the middle of the file."""
    from mobilenet.deploy.integrity import sidecar

    copy = tmp_path / path.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    copy.write_bytes(bytes(data))
    shutil.copy(sidecar(path), sidecar(copy))
    return copy


# --- LiteRT ---------------------------------------------------------------------------------


@litert_installed
def test_tflite_fp32_runs_in_litert_as_pytorch_does(model, images, tflite_fp32):
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor

    predictor = LiteRtPredictor.from_file(tflite_fp32, threads=2)
    assert predictor.precision == "fp32" and predictor.layout == "nhwc"
    assert tuple(predictor.input["shape"]) == (1, *model.arch_cfg.resolution, 3)  # NHWC, as mobile callers hold images
    check = verify(model, predictor, images, precision="fp32", batch_sizes=(1, len(images)))
    assert check.max_abs_diff < 1e-4 * check.logit_spread


@litert_installed
def test_the_tflite_export_says_what_runs_and_runs_its_native_input(model, images, tflite_export):
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor

    runs = tflite_export.execution
    assert runs.fully_delegated and runs.delegate_calls == 1 and runs.transposes == 0
    assert dict(runs.weights) == {"float32": sum(1 for _ in model.conv_layers()) + 1}
    assert runs.summary() in tflite_export.summary()
    predictor = LiteRtPredictor.from_file(tflite_export.files[0], threads=2)
    assert predictor.execution == runs and runs.summary() in predictor.description
    native = predictor.native_input(images)
    assert native.shape == (len(images), *model.arch_cfg.resolution, 3)
    torch.testing.assert_close(predictor(native), predictor(images), rtol=0, atol=0)


@litert_installed
def test_a_flipped_bit_in_a_tflite_export_is_refused(tflite_export, tmp_path):
    from mobilenet.deploy.integrity import DamagedFileError
    from mobilenet.deploy.runtime import predictor_from_file

    with pytest.raises(DamagedFileError, match=r"is damaged: its SHA-256 does not match fp32\.tflite\.sha256"):
        predictor_from_file(_flipped_copy(tflite_export.files[0], tmp_path))


@litert_installed
def test_the_int8_tflite_says_its_input_quantize_runs_outside_xnnpack(model, images, tflite_int8):
    from mobilenet.deploy.formats import litert
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor
    from mobilenet.preprocess import load_image, preprocess_for

    predictor = LiteRtPredictor.from_file(tflite_int8, threads=2)
    runs = predictor.execution
    assert runs.outside == ("QUANTIZE",) and "1 outside XNNPACK (QUANTIZE)" in predictor.description
    assert litert.execution_problem(runs, precision="int8", io_dtype="uint8") is None  # said, allowed
    assert dict(runs.weights) == {"int8": sum(1 for _ in model.conv_layers()) + 1}
    # Its uint8 input is the pixels themselves, straight from preprocessing: within one level of the
    # normalised image quantized, so the logits agree to int8 noise.
    transform = predictor.native.image_transform(preprocess_for(model))
    pixels = np.stack([transform(load_image(p)) for p in sample_photos()])
    assert pixels.dtype == np.uint8 and pixels.shape == (len(images), *model.arch_cfg.resolution, 3)
    assert np.abs(pixels.astype(int) - predictor.native_input(images).astype(int)).max() <= 1
    assert _cosine(predictor(pixels), predictor(images)) > 0.99


@litert_installed
def test_tflite_int8_is_integer_quarter_size_and_close(model, images, tflite_fp32, tflite_int8):
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor
    from mobilenet.weights.tflite import describe_tflite

    facts = describe_tflite(tflite_int8)
    assert facts["weight_dtype"] == "int8" and facts["input_dtype"] == "uint8"
    assert tflite_int8.stat().st_size < 0.35 * tflite_fp32.stat().st_size
    predictor = LiteRtPredictor.from_file(tflite_int8, precision="int8", threads=2)
    assert predictor.output["dtype"] == np.float32  # float logits: 8-bit ones tie the top classes
    check = verify(model, predictor, images, precision="int8", batch_sizes=(1,))
    with torch.no_grad():
        reference = model(images)
    assert check.max_abs_diff > 0 and check.relative_rms < 0.15
    assert _cosine(predictor(images), reference) > 0.98


@litert_installed
def test_tflite_carries_labels_and_normalisation(model, tflite_int8):
    from mobilenet.deploy.formats.tflite_flatbuffer import read_metadata

    meta = read_metadata(tflite_int8)
    assert meta["arch"] == model.arch_cfg.to_dict() and meta["layout"] == "nhwc"
    assert len(meta["labels"]) == model.arch_cfg.num_classes
    assert meta["preprocess"]["mean"] == [0.5] * 3 and meta["preprocess"]["std"] == [0.5] * 3
    # uint8 input takes the pixel itself: (q - 128) / 127.5 is TF's (x - 127.5) / 127.5 to half a level.
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["zero_point"] == 128
    assert meta["input"]["scale"] == pytest.approx(1 / 127.5, rel=1e-6)


@litert_installed
def test_convert_reads_back_the_fp32_tflite(model, images, tflite_fp32):
    from mobilenet.weights import convert

    converted, _cfg = convert(tflite_fp32)
    assert converted.arch_cfg.resolution == model.arch_cfg.resolution
    assert converted.arch_cfg.alpha == model.arch_cfg.alpha
    with torch.no_grad():
        expected, got = model(images), converted(images)
    spread = (expected - expected.mean(1, keepdim=True)).abs().max().item()
    assert (got - expected).abs().max().item() < 1e-4 * spread


@litert_installed
def test_convert_reads_back_the_int8_tflite_weights_exactly(model, tflite_int8):
    from mobilenet.weights import convert

    converted, cfg = convert(tflite_int8)
    assert cfg.format == "tflite-int8"
    folded = folded_copy(model)
    # The int8 file holds the folded weights on their per-channel int8 grid, to float precision.
    for (name, ours), (_, theirs) in zip(folded.conv_layers(), converted.conv_layers()):
        torch.testing.assert_close(theirs.conv.weight, round_to_int8_grid(ours.conv.weight), rtol=1e-5, atol=1e-7,
                                   msg=name)
    torch.testing.assert_close(converted.classifier.weight, round_to_int8_grid(folded.classifier.weight),
                               rtol=1e-5, atol=1e-7)


@litert_installed
@pytest.mark.slow
@pytest.mark.parametrize("io_dtype", ["int8", "float32"])
def test_tflite_int8_input_dtypes_and_nchw_layout(model, images, calibration, tmp_path, io_dtype):
    from mobilenet.deploy.formats import litert
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor
    from mobilenet.weights import convert

    path = litert.write(model, tmp_path / "m.tflite", precision="int8", calibration=calibration, layout="nchw",
                        io_dtype=io_dtype)[0]
    predictor = LiteRtPredictor.from_file(path, threads=2)
    assert predictor.layout == "nchw" and np.dtype(predictor.input["dtype"]).name == io_dtype
    assert tuple(predictor.input["shape"]) == (1, model.arch_cfg.in_channels, *model.arch_cfg.resolution)
    check = verify(model, predictor, images, precision="int8", batch_sizes=(1,))
    assert check.relative_rms < 0.15
    assert convert(path)[0].arch_cfg.resolution == model.arch_cfg.resolution  # NCHW input read as such


@litert_installed
@pytest.mark.slow
def test_tflite_fp16_halves_the_file_and_converts_back(model, images, tflite_fp32, tmp_path):
    from mobilenet.deploy.formats import litert
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor
    from mobilenet.weights import convert
    from mobilenet.weights.tflite import describe_tflite

    path = litert.write(model, tmp_path / "fp16.tflite", precision="fp16")[0]
    assert describe_tflite(path)["weight_dtype"] == "float16" and "DEQUANTIZE" in describe_tflite(path)["ops"]
    assert path.stat().st_size < 0.6 * tflite_fp32.stat().st_size
    predictor = LiteRtPredictor.from_file(path, precision="fp16", threads=2)
    verify(model, predictor, images, precision="fp16", batch_sizes=(1,))
    converted, cfg = convert(path)
    assert cfg.format == "tflite-float16"
    with torch.no_grad():
        torch.testing.assert_close(converted(images), predictor(images), rtol=1e-3, atol=1e-4)


@litert_installed
def test_asking_for_the_wrong_precision_is_refused(tflite_fp32):
    from mobilenet.deploy.runtimes.litert import LiteRtPredictor
    from mobilenet.predictor import PrecisionUnavailableError

    with pytest.raises(PrecisionUnavailableError, match="is fp32"):
        LiteRtPredictor.from_file(tflite_fp32, precision="int8")


def test_int8_tflite_without_calibration_is_a_clear_error(model, tmp_path):
    from mobilenet.deploy.formats import litert

    with pytest.raises(ValueError, match="calibration images"):
        litert.write(model, tmp_path / "m.tflite", precision="int8")
    with pytest.raises(ValueError, match="layout must be one of"):
        litert.write(model, tmp_path / "m.tflite", layout="chw")


@pytest.mark.parametrize(("module", "name", "extra"), [
    ("mobilenet.deploy.formats.litert", "litert_torch", "litert"),
    ("mobilenet.deploy.formats.executorch", "executorch", "executorch"),
    ("mobilenet.deploy.formats.coreml", "coremltools", "coreml"),
])
def test_a_missing_converter_names_its_extra(model, tmp_path, monkeypatch, module, name, extra):
    import importlib

    writer = importlib.import_module(module)
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail, as if not installed
    with pytest.raises(MissingRuntimeError, match=rf"pip install 'mobilenet\[{extra}\]'"):
        writer.write(model, tmp_path / f"m{writer.SUFFIXES[0]}", precision="fp32")


# --- ExecuTorch -----------------------------------------------------------------------------


@executorch_installed
def test_pte_fp32_runs_in_executorch_as_pytorch_does(model, images, pte_fp32):
    from mobilenet.deploy.formats.executorch import read_metadata
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor

    predictor = ExecuTorchPredictor.from_file(pte_fp32, threads=2)
    assert predictor.precision == "fp32" and predictor.shape == (1, 3, *model.arch_cfg.resolution)  # NCHW
    check = verify(model, predictor, images, precision="fp32", batch_sizes=(1, len(images)))
    assert check.max_abs_diff < 1e-4 * check.logit_spread
    meta = read_metadata(pte_fp32)
    assert meta["arch"] == model.arch_cfg.to_dict() and len(meta["labels"]) == model.arch_cfg.num_classes


@executorch_installed
def test_a_pte_is_nchw_and_one_xnnpack_call_with_nothing_outside(model, images, pte_export):
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor

    runs = pte_export.execution
    assert runs.delegate_calls == 1 and runs.outside == () and runs.fully_delegated
    assert dict(runs.weights) == {"float32": sum(1 for _ in model.conv_layers()) + 1}
    assert "input NCHW 3x" in pte_export.summary() and runs.summary() in pte_export.summary()
    predictor = ExecuTorchPredictor.from_file(pte_export.files[0], threads=2)
    h, w = model.arch_cfg.resolution
    with pytest.raises(ValueError, match=rf"input of shape \(2, {h}, {w}, 3\) \(NHWC float32\) does not fit: "
                       rf"this file takes NCHW float32 \(N, 3, {h}, {w}\)"):
        predictor(images[:2].permute(0, 2, 3, 1))


@executorch_installed
def test_a_flipped_bit_in_a_pte_export_is_refused(pte_export, tmp_path):
    from mobilenet.deploy.integrity import DamagedFileError
    from mobilenet.deploy.runtime import predictor_from_file

    with pytest.raises(DamagedFileError, match="is damaged"):
        predictor_from_file(_flipped_copy(pte_export.files[0], tmp_path))


@executorch_installed
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_nhwc_pte_on_request_is_one_xnnpack_call_too(model, images, calibration, tmp_path, precision):
    # Before, NHWC left aten::as_strided_copy outside XNNPACK, between two delegate calls.
    from mobilenet.deploy.formats import executorch
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor

    path = executorch.write(model, tmp_path / "m.pte", precision=precision, calibration=calibration,
                            layout="nhwc")[0]
    predictor = ExecuTorchPredictor.from_file(path, threads=2)
    assert predictor.layout == "nhwc" and predictor.execution.outside == ()
    assert predictor.execution.delegate_calls == 1
    torch.testing.assert_close(predictor(images[:1].permute(0, 2, 3, 1)), predictor(images[:1]), rtol=0, atol=0)


@executorch_installed
def test_pte_int8_is_quarter_size_and_close(model, images, pte_fp32, pte_int8):
    from mobilenet.deploy.runtimes.executorch import ExecuTorchPredictor

    assert pte_int8.stat().st_size < 0.35 * pte_fp32.stat().st_size
    predictor = ExecuTorchPredictor.from_file(pte_int8, precision="int8", threads=2)
    check = verify(model, predictor, images, precision="int8", batch_sizes=(1,))
    with torch.no_grad():
        reference = model(images)
    assert check.max_abs_diff > 0 and check.relative_rms < 0.15
    assert _cosine(predictor(images), reference) > 0.98


def test_pte_takes_float_input_only(model, tmp_path):
    from mobilenet.deploy.formats import executorch

    with pytest.raises(ValueError, match="float32 input"):
        executorch.write(model, tmp_path / "m.pte", io_dtype="uint8")


# --- Core ML --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlpackage(model, tmp_path_factory):
    from mobilenet.deploy.formats import coreml

    return coreml.write(model, tmp_path_factory.mktemp("coreml") / "m.mlpackage", precision="fp32")[0]


@coreml_installed
def test_coreml_package_has_the_structure_arch_implies(model, mlpackage):
    from mobilenet import arch
    from mobilenet.deploy.formats.coreml import check_structure, expected_operations, read_metadata

    assert mlpackage.is_dir()
    summary = check_structure(mlpackage, model)
    convs = sum(layer.kind in ("conv", "depthwise", "pointwise") for layer in arch.layers(model.arch_cfg))
    assert f"{convs} conv" in summary and "Apple platforms" in summary
    assert expected_operations(model)["pad"] == 5  # the strided TF-padded convs: stem + 4 depthwise
    assert read_metadata(mlpackage)["arch"] == model.arch_cfg.to_dict()


@coreml_installed
def test_a_keras_padded_coreml_export_has_the_pads_its_model_builds(tmp_path):
    """Keras padding pads each strided depthwise conv with a ZeroPad2d of its own, and its stem
    'SAME' as TF does: five pad operations at 128 px, which the structure check must expect."""
    from deploy_helpers import trained_looking_model
    from mobilenet.deploy.export import export
    from mobilenet.deploy.formats.coreml import _spec, check_structure, expected_operations, operation_counts

    keras = trained_looking_model(padding="keras")
    path = tmp_path / "k.mlpackage"
    result = export(keras, path)
    assert expected_operations(keras)["pad"] == 5 == operation_counts(_spec(path))["pad"]
    assert "5 pad" in check_structure(path, keras) and result.files == (path,)


@coreml_installed
def test_coreml_structure_check_catches_another_network(mlpackage):
    from deploy_helpers import trained_looking_model
    from mobilenet.deploy.formats.coreml import CoreMlStructureError, check_structure

    with pytest.raises(CoreMlStructureError, match="input shape"):
        check_structure(mlpackage, trained_looking_model(resolution=160))
    with pytest.raises(CoreMlStructureError, match="'conv' operations"):
        check_structure(mlpackage, trained_looking_model(variant="shallow"))


@coreml_installed
@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML predictions do run on macOS")
def test_coreml_predictions_off_macos_say_they_need_macos(mlpackage):
    from mobilenet.deploy.runtimes.coreml import CoreMlPredictor, CoreMlUnavailableError
    from mobilenet.errors import MobileNetError

    with pytest.raises(CoreMlUnavailableError, match="only on Apple platforms") as err:
        CoreMlPredictor.from_file(mlpackage)
    assert isinstance(err.value, MobileNetError)


@coreml_installed
@pytest.mark.skipif(sys.platform != "darwin", reason="Core ML predictions run only on macOS")
def test_coreml_runs_as_pytorch_does_on_macos(model, images, mlpackage):
    from mobilenet.deploy.runtimes.coreml import CoreMlPredictor

    verify(model, CoreMlPredictor.from_file(mlpackage), images, precision="fp32", batch_sizes=(1,))


@coreml_installed
@pytest.mark.slow
def test_a_second_coreml_export_replaces_the_first_whole(model, tmp_path):
    from mobilenet.deploy.export import export
    from mobilenet.deploy.formats.coreml import read_metadata
    from mobilenet.deploy.integrity import verify_checksums

    path = tmp_path / "m.mlpackage"
    first = export(model, path)
    shutil.copytree(path, tmp_path / ".m.mlpackage.old")  # as an interrupted replacement leaves it: no obstacle
    assert first.files == (path,) and not first.verification.numerical  # checked structurally off macOS
    assert first.input == "batch 1, input NCHW 3x128x128"
    second = export(model, path, precision="fp16")
    assert read_metadata(path)["precision"] == "fp16" and second.size_bytes < first.size_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage", "m.mlpackage.sha256"]
    assert verify_checksums(path)  # every file of the new package, none of the old

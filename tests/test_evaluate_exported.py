"""``evaluate`` / ``classify`` of an exported file (issue 18, item 6): the file's own metadata gives
the preprocessing and labels, the weights it names are the fp32 reference (or there is none, and
stderr says so), and flags that cannot apply to a file are refused, never ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import mobilenet.inference as inference
from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.deploy.optional import available
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from mobilenet.weights import REGISTRY, PretrainedCfg, save_safetensors, weights_of
from weights_helpers import randomize_batchnorm

NAMES = ("cat", "dog", "eel")
litert_installed = pytest.mark.skipif(
    not (available("litert_torch") and available("ai_edge_litert")), reason="pip install 'mobilenet[litert]'"
)


def _tiny(name: str) -> MobileNetV1:
    """A 3-class 32-px model whose recipe is nobody's default (ImageNet mean/std, crop 0.9)."""
    torch.manual_seed(0)
    arch = ArchConfig(alpha=0.25, resolution=32, num_classes=3)
    model = MobileNetV1(arch).eval()
    randomize_batchnorm(model, torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    preprocess = Preprocess(resolution=32, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_fraction=0.9)
    model.pretrained_cfg = PretrainedCfg(name=name, arch_cfg=arch, preprocess=preprocess, label_set="custom",
                                         labels=NAMES)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an fp32 .tflite whose metadata names the weights ``tiny``."""
    if not (available("litert_torch") and available("ai_edge_litert")):
        pytest.skip("pip install 'mobilenet[litert]'")
    from mobilenet.deploy.formats import litert

    path = tmp_path_factory.mktemp("exported") / "tiny.tflite"
    return litert.write(_tiny("tiny"), path, precision="fp32")[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """An ImageFolder with the model's own class names as folders (the file's labels label it)."""
    for i, name in enumerate(NAMES):
        (tmp_path / "val" / name).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (48, 40), (40 * i + 20 * j, 90, 200 - 50 * i)).save(tmp_path / "val" / name / f"{j}.png")
    return tmp_path / "val"


def test_flags_that_cannot_apply_to_a_file_are_refused(tmp_path, capsys):
    with pytest.raises(InputError, match=r"runtime='openvino' and precision='int8' cannot apply to exported='m.onnx'"):
        inference.evaluate(tmp_path, exported=tmp_path / "m.onnx", runtime="openvino", precision="int8")
    assert main(["classify", "--exported", str(tmp_path / "m.tflite"), "--runtime", "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet classify: error: --runtime onnxruntime cannot apply") and "\n" not in err
    assert main(["classify", "--exported", str(tmp_path / "m.tflite"), "--allow-emulated-bf16"]) == 2
    assert "error: --allow-emulated-bf16 cannot apply to --exported m.tflite" in capsys.readouterr().err
    # classify's and evaluate's old name for allow_emulation (optimize's and make_predictor's) still works, warned.
    with pytest.warns(DeprecationWarning, match="allow_emulated_bf16= is now allow_emulation="), \
            pytest.raises(InputError, match=r"^allow_emulation=True cannot apply to exported='m.onnx'"):
        inference.evaluate(tmp_path, exported=tmp_path / "m.onnx", allow_emulated_bf16=True)


@pytest.mark.assets
def test_a_file_without_metadata_needs_the_weights(assets_dir, data):
    pytest.importorskip("ai_edge_litert")
    # TF's own file
    with pytest.raises(InputError, match=r"carries no metadata.*name the weights it was made from \(weights\)"):
        inference.evaluate(data, exported=assets_dir / "tflite" / "mobilenet_v1_0.25_224.tflite")


@pytest.mark.slow
@litert_installed
def test_the_files_own_metadata_without_a_reference(exported, data, monkeypatch, capsys):
    def no_default(weights, **settings):
        raise AssertionError(f"{weights} loaded: an exported file needs no weights")

    monkeypatch.setattr(inference, "load_model", no_default)
    evaluation = inference.evaluate(data, exported=exported)  # 32 px and cat/dog/eel: the file's own
    assert evaluation.weights == "tiny" and evaluation["images"] == 6 and "fp32" not in evaluation
    assert [run.precision for run in evaluation.runs] == ["exported"]
    err = capsys.readouterr().err
    assert "no fp32 reference for tiny.tflite: its weights 'tiny' are no registry entry" in err
    answer = inference.classify(sorted(data.rglob("*.png"))[:1], exported=exported, top_k=3)
    assert sorted(p.label for p in answer[0].top) == sorted(NAMES)


@pytest.mark.slow
@litert_installed
def test_the_weights_the_file_names_are_its_reference(exported, data, tmp_path, monkeypatch):
    """A file made from published weights is compared with them: here a registry entry ``tiny``
    whose converted file sits in the cache."""
    model = _tiny("tiny")
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(REGISTRY, "tiny", model.pretrained_cfg)
    save_safetensors(weights_of(model), tmp_path / "cache" / "converted" / "tiny.safetensors")
    evaluation = inference.evaluate(data, exported=exported, progress=False)
    assert [run.precision for run in evaluation.runs] == ["exported", "fp32"]
    assert evaluation["top1"] == evaluation["fp32"]["top1"]  # the fp32 file runs as the weights do
    status = main(["evaluate", "--exported", str(exported), "--data", str(data), "--json"])
    assert status == 0


@pytest.mark.slow
@litert_installed
def test_weights_with_other_classes_than_the_file_are_refused(exported, data, tmp_path):
    other = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=4))
    path = save_safetensors(weights_of(other), tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="do not have the classes of"):
        inference.evaluate(data, exported=exported, weights=path)
    assert json.loads(json.dumps(inference.evaluate(data, exported=exported, weights=_tiny("x"),
                                                    progress=False).to_dict()))["fp32"]["images"] == 6

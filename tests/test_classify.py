"""``classify()`` and ``mobilenet classify``: answers in ImageNet's 1000-class order, errors kept per
image (one line each on the command line, and the exit status), and the real photos shipped by the
dependencies named correctly by the default weights."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet import classify
from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.errors import InputError
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess, sample_photos
from mobilenet.weights import PretrainedCfg, imagenet_names, save_safetensors, weights_of
from weights_helpers import models_built


@pytest.fixture
def small_weights(tmp_path):
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32, num_classes=1001)).eval()
    with torch.no_grad():
        model.classifier.bias[1 + 934 - 1] = 50.0  # TF index 934 = ImageNet class 933, "cheeseburger"
        model.classifier.bias[0] = 100.0  # a huge background logit must not show up anywhere
    cfg = PretrainedCfg(name="small", arch_cfg=model.arch_cfg, preprocess=Preprocess(resolution=32),
                        label_set="imagenet-1001")
    return save_safetensors(weights_of(model, cfg), tmp_path / "small.safetensors")


def test_classify_keeps_each_images_error_as_data(tmp_path, small_weights, monkeypatch):
    built = models_built(monkeypatch)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    answer = classify([tmp_path / "a.jpg", tmp_path / "bad.jpg"], weights=small_weights, top_k=2)
    assert answer.weights == "small" and len(answer) == 2
    assert answer.description.startswith("PyTorch") and "fp32 on cpu" in answer.description  # optimize's path
    good, bad = answer
    assert good.ok and [p.label for p in good.top][:1] == ["cheeseburger"] and good.top[0].wnid == "n07697313"
    assert not bad.ok and bad.error.endswith("not an image Pillow can read") and answer.failed == [bad]
    assert bad.to_dict() == {"image": str(tmp_path / "bad.jpg"), "error": bad.error}
    assert len(built) == 1  # one model built, once
    with pytest.raises(ValueError, match="top_k must be"):
        classify(tmp_path / "a.jpg", weights=small_weights, top_k=0)


def test_paths_that_do_not_exist_are_refused_before_any_weights_are_loaded(tmp_path, small_weights, monkeypatch,
                                                                          capsys):
    """A mistyped path is said at once, not after loading (or downloading) the weights and
    building the predictor; among paths that exist, a missing one is that image's error."""
    built = models_built(monkeypatch)
    loaded = []
    monkeypatch.setattr("mobilenet.inference._what_runs", lambda *a, **k: loaded.append(1) or pytest.fail("loaded"))
    with pytest.raises(InputError, match=r"nowhere\.jpg: no such file \(and 1 more\)$"):
        classify([tmp_path / "nowhere.jpg", tmp_path / "elsewhere.jpg"], weights=small_weights)
    assert main(["classify", str(tmp_path / "nowhere.jpg"), "--weights", str(small_weights)]) == 2
    assert capsys.readouterr().err.strip() == f"mobilenet classify: error: {tmp_path / 'nowhere.jpg'}: no such file"
    assert not built and not loaded
    monkeypatch.undo()
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.jpg")
    good, gone = classify([tmp_path / "a.jpg", tmp_path / "nowhere.jpg"], weights=small_weights, top_k=1)
    assert good.ok and not gone.ok and gone.error.endswith("no such file")


def test_json_in_1000_class_order_and_bad_files_reported(tmp_path, small_weights, capsys):
    Image.fromarray(np.zeros((20, 30, 4), np.uint8), "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(tmp_path / "deep.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    images = [tmp_path / "clear.png", tmp_path / "bad.jpg", tmp_path / "deep.png"]
    code = main(["classify", *map(str, images), "--weights", str(small_weights), "--top-k", "3", "--json"])
    captured = capsys.readouterr()
    assert code == 1  # one image failed
    assert [line for line in captured.err.splitlines() if "error" in line] == [
        f"mobilenet classify: error: {tmp_path / 'bad.jpg'}: not an image Pillow can read"]
    results = json.loads(captured.out)
    assert [r["image"] for r in results] == list(map(str, images))
    assert results[1] == {"image": str(images[1]), "error": f"{images[1]}: not an image Pillow can read"}
    for result in (results[0], results[2]):
        top = result["top"]
        assert len(top) == 3 and top[0] == {"index": 933, "label": "cheeseburger", "probability": top[0]["probability"]}
        assert top[0]["probability"] > 0.99  # background dropped before the softmax
        assert all(t["label"] == imagenet_names()[t["index"]] for t in top)


def test_all_good_exits_zero_and_prints_text(tmp_path, small_weights, capsys):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.jpg")
    assert main(["classify", str(tmp_path / "a.jpg"), "--weights", str(small_weights), "--top-k", "1"]) == 0
    assert "cheeseburger" in capsys.readouterr().out
    assert main(["classify", str(tmp_path / "a.jpg"), "--weights", str(small_weights), "--top-k", "0"]) == 2
    assert "error: --top-k must be an int >= 1, got 0" in capsys.readouterr().err


def test_pretrained_lists_the_registry(capsys):
    assert main(["pretrained", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tf_mobilenet_v1_1.0_224"]["default"] and rows["tf_mobilenet_v1_1.0_224"]["published"]["top1"] == 70.9
    assert len(rows) == 53  # TF float 16 + the default graph, TF uint8 16, Keras 16, timm 2, transformers 2
    timm = rows["timm_mobilenetv1_125"]
    assert timm["publisher"] == "hf:timm/mobilenetv1_125.ra4_e3600_r224_in1k"
    assert timm["preprocess"]["crop_fraction"] == 0.9
    assert rows["tflite_mobilenet_v1_0.25_224"]["verified"] and not rows["keras_mobilenet_v1_1.0_224"]["verified"]
    assert rows["keras_mobilenet_v1_0.5_160"]["padding"] == "keras"


@pytest.mark.slow
def test_default_weights_on_the_photos_shipped_with_dependencies(capsys):
    """No IMAGE: matplotlib's and scikit-image's photos, classified by TF-slim's 1.0-224 weights
    (fetched from PyPI into the cache on first use, checksum-verified)."""
    photos = {p.name for p in sample_photos()}
    if not {"chelsea.png", "coffee.png"} <= photos:
        pytest.skip("scikit-image's sample photos are not installed")
    assert main(["classify", "--json", "--top-k", "1"]) == 0
    top1 = {r["image"].rsplit("/", 1)[-1]: r["top"][0]["label"] for r in json.loads(capsys.readouterr().out)}
    assert top1["chelsea.png"] == "Egyptian cat"
    assert top1["coffee.png"] == "espresso"


def test_a_gpu_device_runs_pytorch_only_and_a_missing_gpu_is_named(tmp_path, small_weights, monkeypatch, capsys):
    # --device moves the PyTorch model; the other runtimes run on the CPU whatever it says, so a
    # GPU asked of them is refused rather than ignored (described: a GPU is "there" for the check).
    photo = tmp_path / "burger.png"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(photo)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(["classify", str(photo), "--weights", str(small_weights), "--runtime", "onnxruntime",
                 "--device", "cuda"]) == 2
    assert "--device cuda runs --runtime torch only; onnxruntime runs on the CPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["classify", str(photo), "--weights", str(small_weights), "--device", "cuda"]) == 2
    assert "no CUDA GPU is available to PyTorch here" in capsys.readouterr().err


def test_an_empty_list_of_images_is_refused_not_the_sample_photos(tmp_path, small_weights, monkeypatch):
    # A glob that matched nothing is no request for the samples: only images=None is.
    built = models_built(monkeypatch)
    with pytest.raises(InputError, match=r"^no images given \(images is empty.*leave images out to classify the "
                                         r"sample photos$"):
        classify(sorted(tmp_path.glob("*.jpg")), weights=small_weights)
    assert not built


def test_classify_leaves_the_callers_model_and_thread_count_as_they_were(tmp_path, small_weights):
    """The caller's own model keeps each module's mode (a model classified mid-training goes on
    training, its BatchNorm learning) and its tensors; the process keeps its thread count."""
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.jpg")
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=32)).train()
    model.blocks[0].eval()  # a mix of modes, as a fine-tuning run that freezes some BatchNorms has
    modes = [m.training for m in model.modules()]
    params = [(p, p.data_ptr()) for p in model.parameters()]
    torch.set_num_threads(2)  # (conftest's fixture puts the test process's count back)
    for runtime in ("torch", "onnxruntime"):
        if runtime == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            continue
        [answer] = classify(tmp_path / "a.jpg", weights=model, runtime=runtime, threads=1, top_k=1)
        assert answer.ok, runtime
        assert [m.training for m in model.modules()] == modes, runtime
        assert all(p is q and p.data_ptr() == ptr and p.device.type == "cpu"
                   for p, (q, ptr) in zip(model.parameters(), params, strict=True)), runtime
        assert torch.get_num_threads() == 2, runtime

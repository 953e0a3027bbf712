"""Our safetensors format, load_pretrained's contract, the registry and checksum-verified fetching."""

from __future__ import annotations

import json
import re

import pytest
import torch

from mobilenet.arch import ArchConfig
from mobilenet.cli import main
from mobilenet.errors import command_line_spelling
from mobilenet.factory import load_model, mobilenet_v1
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess
from mobilenet.weights import (
    REGISTRY,
    FetchError,
    PretrainedCfg,
    WeightFormatError,
    WeightsMismatch,
    convert_file,
    fetch_file,
    load_pretrained,
    load_safetensors,
    read_safetensors,
    save_safetensors,
    sha256_file,
    weights_of,
)
from mobilenet.weights.io import read_safetensors_metadata
from mobilenet.weights.publishers import publisher_preprocess, tf_preprocess
from weights_helpers import models_built, randomize_batchnorm, write_tf_graphdef

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _model(**settings) -> MobileNetV1:
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=64, **settings)).eval()
    randomize_batchnorm(model, torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1)
    return model


def _cfg(model: MobileNetV1, label_set: str = "imagenet-1001", **kw) -> PretrainedCfg:
    return PretrainedCfg(name="t", arch_cfg=model.arch_cfg, preprocess=Preprocess(resolution=64),
                         label_set=label_set, **kw)


def _save(model: MobileNetV1, path, cfg: PretrainedCfg | None = None):
    return save_safetensors(weights_of(model, cfg or _cfg(model)), path)


@pytest.mark.parametrize("fold", [False, True])
def test_safetensors_round_trip_folded_or_not(tmp_path, fold):
    model = _model(num_classes=1001)
    if fold:
        model.fold_batchnorm()
    path = _save(model, tmp_path / "m.safetensors")
    meta = read_safetensors_metadata(path)
    assert meta["format"] == "mobilenet" and meta["bn_folded"] == str(fold).lower()
    assert json.loads(meta["arch"]) == model.arch_cfg.to_dict()
    loaded, cfg = load_safetensors(path)
    assert loaded.stem.folded == fold and cfg.preprocess == Preprocess(resolution=64)
    assert cfg.label_names[:2] == ["background", "tench"]
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed, not left behind


def test_custom_labels_travel_in_the_metadata(tmp_path):
    model = _model(num_classes=3)
    cfg = _cfg(model, label_set="custom", labels=("ant", "bee", "cat"))
    loaded = load_pretrained(_save(model, tmp_path / "c.safetensors", cfg))
    assert loaded.pretrained_cfg.label_names == ["ant", "bee", "cat"]


def test_load_pretrained_contract(tmp_path):
    model = _model(num_classes=1001)
    path = _save(model, tmp_path / "tf.safetensors")
    # By default TF's 1001 ImageNet classes become 1000: the background logit dropped, the other
    # weights exact. The logits agree to a few ulp, not bit for bit: a 256x1000 classifier is a
    # matmul of another shape than 256x1001, and the BLAS may block (and so round) it differently.
    m1000 = load_pretrained(path)
    assert torch.equal(m1000.classifier.weight, model.classifier.weight[1:])
    with torch.no_grad():
        torch.testing.assert_close(m1000(X), model(X)[:, 1:], rtol=0, atol=8 * torch.finfo(torch.float32).eps)
    assert m1000.arch_cfg.num_classes == 1000 and m1000.pretrained_cfg.label_names[0] == "tench"
    assert not m1000.pretrained_cfg.has_background_class
    # 1001 on request keeps TF's layout, background first.
    m1001 = load_pretrained(path, num_classes=1001)
    with torch.no_grad():
        assert torch.equal(m1001(X), model(X))
    assert m1001.pretrained_cfg.label_names[:2] == ["background", "tench"]
    # Any other count is a fresh classifier; the body is untouched.
    m10 = load_pretrained(path, num_classes=10)
    assert m10.classifier.out_features == 10 and m10.arch_cfg.num_classes == 10
    assert torch.equal(m10.stem.conv.weight, model.stem.conv.weight)
    # Resolution may change (no weight depends on it), with the preprocessing following it.
    m96 = load_pretrained(path, resolution=96)
    assert m96.arch_cfg.resolution == (96, 96) and m96.pretrained_cfg.preprocess.resolution == (96, 96)
    # Settings that change the weights' meaning must agree.
    with pytest.raises(ValueError, match=r"alpha=0\.5 contradicts weights=.*, which is alpha=0\.25"):
        load_pretrained(path, alpha=0.5)
    with pytest.raises(ValueError, match=r"padding='symmetric' contradicts weights=.*, which is padding='tf'"):
        mobilenet_v1(weights=str(path), padding="symmetric")
    with pytest.raises(ValueError, match=r"neither a known weights name.*`mobilenet\.weights\.list_pretrained\(\)`"):
        load_pretrained("no_such_weights")


def test_advice_names_what_to_run_as_the_caller_runs_things(tmp_path, capsys):
    """Where a message says what to run, a Python caller hears the library's call and the command
    line's user the command: neither is told to run what they have no use for."""
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"  # no metadata of ours: not a file `convert` wrote
    save_file({"weight": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightFormatError, match=r"first \(`mobilenet\.weights\.convert_file\(SOURCE, OUT\)`\)"):
        read_safetensors(plain)
    assert main(["classify", "--weights", "no_such_weights"]) == 2
    assert "known names: `mobilenet pretrained` (" in capsys.readouterr().err


def test_training_checkpoint_is_loaded_safely(tmp_path):
    model = _model(num_classes=4)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = {"model": model.state_dict(), "arch": model.arch_cfg.to_dict(), "ema": ema, "epoch": 3,
            "preprocess": {"resolution": [64, 64], "mean": [0.5], "std": [0.25], "crop_fraction": 1.0,
                           "interpolation": "bilinear"}}
    torch.save(ckpt, tmp_path / "last.pt")
    loaded = load_pretrained(tmp_path / "last.pt")
    with torch.no_grad():
        assert torch.equal(loaded(X), model(X))
    assert loaded.pretrained_cfg.preprocess.channels == 1


def test_foreign_file_is_converted_on_the_fly(tmp_path):
    model = _model(num_classes=1001)
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    loaded = load_pretrained(tmp_path / "frozen.pb", resolution=64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X)[:, 1:], atol=1e-5, rtol=0)


def test_misshapen_safetensors_names_the_tensor(tmp_path):
    model = _model(num_classes=1001)
    path = _save(model, tmp_path / "m.safetensors")
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    state["blocks.3.pw.conv.weight"] = state["blocks.3.pw.conv.weight"][:-1]
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=read_safetensors_metadata(path))
    with pytest.raises(WeightFormatError, match=r"'blocks\.3\.pw\.conv\.weight' has shape"):
        load_pretrained(tmp_path / "bad.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightFormatError):
        load_pretrained(tmp_path / "cut.safetensors")


def test_registry_entries_are_complete():
    for name, entry in REGISTRY.items():
        cfg = entry.arch_cfg
        assert cfg.num_classes == len(entry.label_names), name
        assert entry.preprocess.resolution == cfg.resolution, name
        assert entry.files and all(f.sources for f in entry.files), name
        # A checksum wherever one could be verified; elsewhere the entry says so.
        assert all(f.sha256 is None or len(f.sha256) == 64 for f in entry.files), name
        assert entry.verified or "checked by tensor shapes and statistics" in entry.description, name
        assert entry.published.get("top1") and entry.publisher, name


def test_fetch_verifies_checksums(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "local").mkdir()
    blob = tmp_path / "local" / "w.bin"
    blob.write_bytes(b"weights")
    monkeypatch.setenv("MOBILENET_WEIGHTS_PATH", str(tmp_path / "local"))
    assert fetch_file("w.bin", sha256_file(blob), ()) == blob
    with pytest.raises(FetchError, match=r"could not fetch w\.bin"):
        fetch_file("w.bin", "0" * 64, ("ftp://nowhere/w.bin",))


def test_convert_file_writes_our_format_without_building_a_model(tmp_path, monkeypatch):
    model = _model(num_classes=1001)
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    built = models_built(monkeypatch)
    summary = convert_file(tmp_path / "frozen.pb", tmp_path / "out.safetensors", resolution=64)
    assert built == []
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert (summary["format"], summary["bn_folded"], summary["label_set"]) == ("tf-graphdef", False, "imagenet-1001")
    assert summary["arch"] == model.arch_cfg.replace(bn_eps=1e-3).to_dict()
    assert summary["preprocess"] == tf_preprocess(64).to_dict()
    with pytest.raises(ValueError, match=r"OUT must end in \.safetensors"):
        convert_file(tmp_path / "frozen.pb", tmp_path / "out.pt")


def test_load_model_settles_settings_and_names_what_contradicts(tmp_path):
    path = _save(_model(num_classes=1001), tmp_path / "m.safetensors")
    with pytest.raises(WeightsMismatch) as err:
        load_model(path, alpha=0.5, resolution=None)
    assert (err.value.key, err.value.have, err.value.want) == ("alpha", 0.25, 0.5)
    weights = read_safetensors(path)  # LoadedWeights already read: settled, not read again
    model = load_model(weights, resolution=96)
    assert model.arch_cfg.resolution == (96, 96) and model.arch_cfg.num_classes == 1000 and not model.training
    fresh = load_model(None, alpha=0.5, resolution=64)
    assert fresh.arch_cfg.alpha == 0.5 and not hasattr(fresh, "pretrained_cfg") and not fresh.training


def test_registry_and_converters_take_each_publishers_recipe_from_one_place():
    for name, entry in REGISTRY.items():
        quantized = (1 / 128, 128) if entry.family == "tf-quant" else None
        recipe = publisher_preprocess(entry.format, entry.arch_cfg.resolution, alpha=entry.arch_cfg.alpha,
                                      input_quantization=quantized)
        assert entry.preprocess == recipe, name
    assert REGISTRY["timm_mobilenetv1_125"].preprocess.crop_fraction == 0.9  # timm's pretrained cfg
    assert REGISTRY["timm_mobilenetv1_100"].preprocess.crop_fraction == 0.875
    assert REGISTRY["keras_mobilenet_v1_0.5_160"].preprocess == REGISTRY["tflite_mobilenet_v1_0.5_160"].preprocess


def test_timm_125_converted_gets_the_registrys_crop(tmp_path):
    timm = pytest.importorskip("timm")
    torch.save(timm.create_model("mobilenetv1_125").state_dict(), tmp_path / "m.pth")
    summary = convert_file(tmp_path / "m.pth", tmp_path / "m.safetensors")
    assert summary["preprocess"] == REGISTRY["timm_mobilenetv1_125"].preprocess.to_dict()


def test_cli_convert_writes_safetensors_and_reports_errors(tmp_path, capsys):
    model = _model(num_classes=1001)
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(tmp_path / "frozen.pb"), str(out), "--resolution", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "tf-graphdef" and summary["arch"]["alpha"] == 0.25
    assert "frozen.pb sha256" in read_safetensors_metadata(out)["source"]
    (tmp_path / "junk.pb").write_bytes(b"\x0a\xff\xff\xff")
    assert main(["convert", str(tmp_path / "junk.pb"), str(tmp_path / "j.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet convert: error:") and "\n" not in err
    assert not (tmp_path / "j.safetensors").exists()


@pytest.mark.slow
def test_default_weights_fetched_from_pypi_verified_and_converted(tmp_path, monkeypatch):
    """The real path of a first `load_pretrained()`: pip downloads the nudity==0.2.3 sdist (not
    installed), the graph inside is checksum-verified, converted and cached as safetensors."""
    from mobilenet.weights import fetch_pretrained

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path))
    monkeypatch.delenv("MOBILENET_WEIGHTS_PATH", raising=False)
    path = fetch_pretrained("tf_mobilenet_v1_1.0_224", quiet=True)
    graph = tmp_path / "files" / "mobilenet_v1_1.0_224_retrained_graph.pb"
    assert sha256_file(graph) == REGISTRY["tf_mobilenet_v1_1.0_224"].files[0].sha256
    model, _ = load_safetensors(path)
    assert model.arch_cfg == REGISTRY["tf_mobilenet_v1_1.0_224"].arch_cfg and not model.stem.folded
    assert sum(p.numel() for p in model.parameters()) == 4_253_864 - 2 * 10_944 + 1_024 + 1  # 1001 classes
    # A corrupted cached original is refetched, never used.
    graph.write_bytes(b"corrupt")
    (tmp_path / "converted" / path.name).unlink()
    fetch_pretrained("tf_mobilenet_v1_1.0_224", quiet=True)
    assert sha256_file(graph) == REGISTRY["tf_mobilenet_v1_1.0_224"].files[0].sha256


def test_unpinned_source_is_accepted_only_through_the_tensor_checksum(tmp_path, monkeypatch):
    """TF's own archive of the default graph is a different file than the PyPI copy: it is kept as
    'unverified-…' and accepted only if the converted tensors match the registry's digest. The
    https download itself is not exercised here (no network but package indexes)."""
    from dataclasses import replace

    import mobilenet.weights.load as load
    from mobilenet.weights import WeightFile, fetch_pretrained, read_weights, tensors_sha256

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    model = _model(num_classes=1001)
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    unverified = tmp_path / "cache" / "files" / "unverified-g.pb"
    unverified.parent.mkdir(parents=True)

    def fake_fetch(filename, sha256, sources, *, quiet=False, verify=None):
        assert verify is not None and any(s.startswith("unpinned:") for s in sources)
        unverified.write_bytes((tmp_path / "frozen.pb").read_bytes())
        if not verify(unverified):
            unverified.unlink()
            raise FetchError("the converted tensors differ from the pinned ones")
        return unverified

    monkeypatch.setattr(load, "fetch_file", fake_fetch)
    entry = replace(REGISTRY["tf_mobilenet_v1_1.0_224"], name="tiny", arch_cfg=model.arch_cfg,
                    preprocess=Preprocess(resolution=64),
                    files=(WeightFile("g.pb", "0" * 64, ("unpinned:https://example.invalid/g.tgz#g.pb",)),),
                    tensors_sha256="0" * 64)
    monkeypatch.setitem(REGISTRY, "tiny", entry)
    with pytest.raises(FetchError, match="differ from the pinned ones"):
        fetch_pretrained("tiny", quiet=True)
    assert not unverified.exists()  # a file that failed is not kept
    monkeypatch.setitem(REGISTRY, "tiny", replace(entry, tensors_sha256=tensors_sha256(read_weights(
        tmp_path / "frozen.pb", resolution=64).state)))
    reads = []
    monkeypatch.setattr(load, "read_weights", lambda *a, **k: reads.append(a) or read_weights(*a, **k))
    built = models_built(monkeypatch)
    path = fetch_pretrained("tiny", quiet=True)
    assert len(reads) == 1  # the verified file is converted once, not again to be saved
    assert built == []  # converting, checking, hashing and saving take tensors: no model is built
    loaded, _ = load_safetensors(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), atol=1e-5, rtol=0)


def test_corrupt_values_are_refused_with_a_clear_message(tmp_path):
    """Finite values within what trained MobileNets hold (see mobilenet.weights.loaded); a file
    whose values are absurd is refused on load, naming the tensor."""
    from safetensors.torch import load_file, save_file

    model = _model(num_classes=1001)
    path = _save(model, tmp_path / "m.safetensors")
    meta = read_safetensors_metadata(path)
    for key, change, message in [("classifier.weight", lambda t: t * 1e24, r"reaches \|"),
                                 ("blocks.2.dw.conv.weight", lambda t: t.fill_(float("nan")), "NaN or infinite"),
                                 ("blocks.4.pw.bn.running_var", lambda t: -t, "negative variances")]:
        state = load_file(str(path))
        state[key] = change(state[key].clone())
        save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
        with pytest.raises(WeightFormatError, match=rf"{re.escape(key)}.*{message}"):
            load_pretrained(tmp_path / "bad.safetensors")
    load_pretrained(path)  # the intact file loads


def test_cli_convert_refuses_to_overwrite_its_input(tmp_path, capsys):
    model = _model(num_classes=1001)
    path = _save(model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    assert main(["convert", str(path), str(path)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_model_flags_that_contradict_the_weights_are_an_error(tmp_path):
    import argparse

    from mobilenet.cli.common import add_model_arguments, model_from_args

    model = _model(num_classes=1001)
    path = _save(model, tmp_path / "m.safetensors")
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    parser.add_argument("--weights")
    args = parser.parse_args(["--weights", str(path), "--alpha", "0.5"])
    flags = {"alpha": "--alpha", "padding": "--padding", "weights": "--weights"}  # as `mobilenet` lends them
    with pytest.raises(ValueError, match=r"^--alpha 0\.5 contradicts --weights .*alpha=0\.25") as err, \
            command_line_spelling(flags):
        model_from_args(args)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="--padding symmetric contradicts"), command_line_spelling(flags):
        model_from_args(parser.parse_args(["--weights", str(path), "--padding", "symmetric"]))
    with pytest.raises(ValueError, match="alpha"):  # 0 is a value given, not "not given"
        model_from_args(parser.parse_args(["--alpha", "0"]))
    # Flags that agree, and the resolution (no weight depends on it), are fine.
    ours, preprocess = model_from_args(parser.parse_args(["--weights", str(path), "--alpha", "0.25",
                                                          "--resolution", "96"]))
    assert ours.arch_cfg.resolution == (96, 96) and preprocess.resolution == (96, 96)
    assert ours.arch_cfg.num_classes == 1000
    fresh, _ = model_from_args(parser.parse_args(["--alpha", "0.5", "--resolution", "64"]))
    assert fresh.arch_cfg.alpha == 0.5 and fresh.arch_cfg.num_classes == 1000


def test_decode_predictions_gives_labels_and_scores():
    from mobilenet import decode_predictions

    logits = torch.full((2, 1001), -10.0)
    logits[0, 934], logits[1, 0], logits[1, 286] = 5.0, 50.0, 4.0  # TF's 1001-class indices
    top = decode_predictions(logits, top=3)
    assert [len(row) for row in top] == [3, 3]
    assert (top[0][0].index, top[0][0].wnid, top[0][0].label) == (933, "n07697313", "cheeseburger")
    assert top[1][0].label == "Egyptian cat"  # the background logit is dropped before the softmax
    assert top[0][0].score > 0.99 and top[0][0].score >= top[0][1].score
    custom = decode_predictions(torch.tensor([[0.0, 2.0]]), top=5, labels=["ant", "bee"])
    assert [p.label for p in custom[0]] == ["bee", "ant"]
    with pytest.raises(ValueError, match="pass labels"):
        decode_predictions(torch.zeros(1, 10))

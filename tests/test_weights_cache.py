"""Cached conversions are checked on every use (issue 18, item 4): a cached ``.safetensors`` is
used only when it is its registry entry's (name, architecture) and its tensors match the checksum
the registry pins or the one recorded when it was written; otherwise it is converted again, with a
line on stderr naming the cache path. Tested offline, with a registry entry whose source is a file
built here."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mobilenet.arch import ArchConfig
from mobilenet.model import MobileNetV1
from mobilenet.weights import (
    REGISTRY,
    WeightFile,
    WeightFormatError,
    fetch_pretrained,
    load_pretrained,
    read_safetensors,
    read_weights,
    save_safetensors,
    tensors_sha256,
    weights_of,
)
from mobilenet.weights.io import CHECKSUM_KEY, read_safetensors_metadata
from weights_helpers import randomize_batchnorm, write_tf_graphdef

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _tf_model(seed: int) -> MobileNetV1:
    torch.manual_seed(seed)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=64, num_classes=1001)).eval()
    randomize_batchnorm(model, torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1, seed)
    return model


@pytest.fixture
def entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, MobileNetV1]:
    """Two registry entries, ``tiny`` and ``other``, each a TF GraphDef on disk, and an empty cache."""
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOBILENET_WEIGHTS_PATH", raising=False)
    base = REGISTRY["tf_mobilenet_v1_1.0_224"]
    models = {}
    for seed, name in enumerate(("tiny", "other")):
        model = _tf_model(seed)
        write_tf_graphdef(model, tmp_path / f"{name}.pb")
        entry = replace(base, name=name, arch_cfg=model.arch_cfg, preprocess=base.preprocess.replace(resolution=64),
                        files=(WeightFile(f"{name}.pb", None, (f"file:{tmp_path / name}.pb",)),), tensors_sha256=None)
        monkeypatch.setitem(REGISTRY, name, entry)
        models[name] = model
    return models


def _assert_runs_as(loaded: MobileNetV1, model: MobileNetV1) -> None:
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X)[:, 1:], atol=1e-5, rtol=0)


def test_a_conversion_records_its_name_and_tensor_checksum(entries, capsys):
    path = fetch_pretrained("tiny", quiet=True)
    meta = read_safetensors_metadata(path)
    assert meta["name"] == "tiny"
    assert meta[CHECKSUM_KEY] == tensors_sha256(read_safetensors(path).state)
    _assert_runs_as(load_pretrained("tiny"), entries["tiny"])
    assert capsys.readouterr().err == ""  # an intact cache is used without a word


def test_damaged_cache_is_converted_again_and_said(entries, capsys):
    path = fetch_pretrained("tiny", quiet=True)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 65536] = bytes(65536)  # zeroed on disk: plausible values, wrong ones
    path.write_bytes(bytes(data))
    loaded = load_pretrained("tiny")
    err = capsys.readouterr().err
    assert f"cached conversion {path} cannot be trusted" in err and "converting tiny again" in err
    assert "checksum" in err
    _assert_runs_as(loaded, entries["tiny"])
    assert capsys.readouterr().err == "" and load_pretrained("tiny") is not None  # repaired for good


def test_another_models_file_under_the_same_name_is_converted_again(entries, capsys):
    other = fetch_pretrained("other", quiet=True)
    target = other.with_name("tiny.safetensors")
    target.write_bytes(other.read_bytes())  # the same architecture, intact, but not tiny's weights
    loaded = load_pretrained("tiny")
    assert f"{target} cannot be trusted (it holds other, not tiny)" in capsys.readouterr().err
    _assert_runs_as(loaded, entries["tiny"])


def test_a_cache_without_a_checksum_is_converted_again(entries, capsys):
    path = fetch_pretrained("tiny", quiet=True)
    meta = read_safetensors_metadata(path)
    del meta[CHECKSUM_KEY]  # as versions before the check wrote it
    save_file(load_file(str(path)), str(path), metadata=meta)
    load_pretrained("tiny")
    assert "records no tensor checksum" in capsys.readouterr().err
    assert CHECKSUM_KEY in read_safetensors_metadata(path)


def test_a_pinned_entry_refuses_a_cache_with_other_tensors(entries, monkeypatch, capsys):
    pinned = tensors_sha256(read_weights(Path(REGISTRY["tiny"].files[0].sources[0].removeprefix("file:")),
                                         resolution=64).state)
    monkeypatch.setitem(REGISTRY, "tiny", replace(REGISTRY["tiny"], tensors_sha256=pinned))
    # Another model's tensors, self-consistent (their own checksum recorded) and named tiny.
    forged = weights_of(entries["other"], replace(REGISTRY["tiny"], arch_cfg=entries["other"].arch_cfg))
    target = fetch_pretrained("other", quiet=True).with_name("tiny.safetensors")
    save_safetensors(forged, target)
    loaded = load_pretrained("tiny")
    assert "not the ones the registry pins" in capsys.readouterr().err
    _assert_runs_as(loaded, entries["tiny"])


def test_the_registry_not_an_older_cached_copy_says_how_to_preprocess(entries, monkeypatch, capsys):
    """A conversion records its entry's recipe; when the registry corrects a publisher's recipe
    (transformers' centre crop rounds down, where torchvision's rounds), a conversion cached
    before the correction must not go on preprocessing the old way."""
    from mobilenet.weights.load import read_pretrained

    fetch_pretrained("tiny", quiet=True)
    corrected = REGISTRY["tiny"].preprocess.replace(crop_mode="resize_shorter", crop_offset="floor")
    monkeypatch.setitem(REGISTRY, "tiny", replace(REGISTRY["tiny"], preprocess=corrected))
    assert read_pretrained("tiny").pretrained_cfg.preprocess == corrected
    assert capsys.readouterr().err == ""  # the tensors were still good: no conversion again


def test_our_file_with_damaged_tensors_is_refused(tmp_path):
    model = _tf_model(0)
    path = save_safetensors(weights_of(model), tmp_path / "m.safetensors")
    state = load_file(str(path))
    state["blocks.3.pw.conv.weight"] = torch.zeros_like(state["blocks.3.pw.conv.weight"])
    save_file(state, str(path), metadata=read_safetensors_metadata(path))
    with pytest.raises(WeightFormatError, match="damaged: its tensors do not match the checksum recorded"):
        load_pretrained(path)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("arch", '{"alpha"; 0.25}', "'arch' is not valid JSON"),
    ("arch", '{"alpha": 0.25, "wings": 2}', "'arch' is not a valid architecture"),
    ("arch", "[0.25, 64]", "'arch' is a list, not a dict"),
    ("preprocess", '{"mean": [0.5, 0.5, 0.5}', "'preprocess' is not valid JSON"),
    ("preprocess", '{"zoom": 2}', "'preprocess' is not valid"),
    ("labels", '"ant"', "'labels' is a str, not a list"),
    ("published", "[", "'published' is not valid JSON"),
])
def test_damaged_metadata_is_converted_again_or_refused(entries, capsys, key, value, message):
    """The tensor checksum does not cover the metadata: damage there (one JSON string of the
    header, the header itself still valid) is a WeightFormatError like any other damage, so a
    cached conversion is converted again, and our file given by path is a one-line error."""
    path = fetch_pretrained("tiny", quiet=True)
    meta = read_safetensors_metadata(path)
    meta[key] = value
    save_file(load_file(str(path)), str(path), metadata=meta)
    with pytest.raises(WeightFormatError, match=rf"tiny\.safetensors: its metadata {message}.*convert or copy it"):
        load_pretrained(path)
    loaded = load_pretrained("tiny")
    err = capsys.readouterr().err
    assert f"cached conversion {path} cannot be trusted (its metadata {key!r}" in err and "converting tiny again" in err
    _assert_runs_as(loaded, entries["tiny"])
    assert read_safetensors_metadata(path).get(key) != value  # repaired

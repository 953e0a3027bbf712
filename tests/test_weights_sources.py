"""Where published weights come from, tested without the internet: a local HTTP server on
127.0.0.1 serving release-style archives built here, a Hugging Face hub-style cache snapshot
served by ``huggingface_hub`` offline, a local file or directory; and which published model
``mobilenet_v1(pretrained=True, ...)`` picks."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from mobilenet.arch import ArchConfig
from mobilenet.factory import mobilenet_v1
from mobilenet.model import MobileNetV1
from mobilenet.weights import (
    REGISTRY,
    FetchError,
    WeightFile,
    fetch_pretrained,
    find_pretrained,
    list_pretrained,
    load_pretrained,
)
from weights_helpers import randomize_batchnorm, write_tf_graphdef

X = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _tf_model() -> MobileNetV1:
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(alpha=0.25, resolution=64, num_classes=1001)).eval()
    randomize_batchnorm(model, torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(9)) * 2 - 1)
    return model


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _entry(name: str, model: MobileNetV1, files: tuple[WeightFile, ...], **changes):
    base = REGISTRY["tf_mobilenet_v1_1.0_224"]
    changes = {"tensors_sha256": None, **changes}
    return replace(base, name=name, arch_cfg=model.arch_cfg, preprocess=base.preprocess.replace(resolution=64),
                   files=files, **changes)


def test_release_archive_over_http_then_cached(tmp_path, server, monkeypatch):
    url, root = server
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    model = _tf_model()
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    _tgz(root / "m.tgz", {"m/m_frozen.pb": (tmp_path / "frozen.pb").read_bytes(), "m/m_info.txt": b"info"})
    entry = _entry("tiny", model, (WeightFile("m_frozen.pb", None, (f"{url}/missing.tgz#m_frozen.pb",
                                                                        f"{url}/m.tgz#m_frozen.pb")),))
    monkeypatch.setitem(REGISTRY, "tiny", entry)
    loaded = load_pretrained("tiny")  # the first source is a 404, the second the archive
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X)[:, 1:], atol=1e-5, rtol=0)
    (root / "m.tgz").unlink()  # offline now: the cache serves it
    assert load_pretrained("tiny", num_classes=1001).arch_cfg.num_classes == 1001


def test_pinned_checksum_refuses_a_different_file(tmp_path, server, monkeypatch):
    url, root = server
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    (root / "w.bin").write_bytes(b"not the weights")
    entry = _entry("pinned", _tf_model(), (WeightFile("w.bin", "0" * 64, (f"{url}/w.bin",)),))
    monkeypatch.setitem(REGISTRY, "pinned", entry)
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch_pretrained("pinned", quiet=True)
    assert not (tmp_path / "cache" / "files" / "w.bin").exists()


def test_unpinned_archive_falls_back_to_the_next_source_when_its_tensors_differ(tmp_path, server, monkeypatch):
    """The default entry's shape: TF's archive first (a different file, checked by the converted
    tensors' digest), the pinned PyPI-style copy after it."""
    from mobilenet.weights import read_weights, sha256_file, tensors_sha256

    url, root = server
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    good, other = _tf_model(), _tf_model()
    with torch.no_grad():
        other.classifier.weight.mul_(2)
    write_tf_graphdef(other, root / "archive_frozen.pb")
    write_tf_graphdef(good, root / "copy.pb")
    digest = tensors_sha256(read_weights(root / "copy.pb", resolution=64).state)
    entry = _entry("default-like", good, (WeightFile("g.pb", sha256_file(root / "copy.pb"), (
        f"unpinned:{url}/archive_frozen.pb", f"file:{root / 'copy.pb'}")),), tensors_sha256=digest)
    monkeypatch.setitem(REGISTRY, "default-like", entry)
    loaded = load_pretrained("default-like")
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), good(X)[:, 1:], atol=1e-5, rtol=0)


def _hub_snapshot(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """The layout huggingface_hub keeps in its cache: models--OWNER--NAME/{refs/main, snapshots/REV/...}."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_hub_source_through_huggingface_hub_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    timm = pytest.importorskip("timm")
    from safetensors.torch import save

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.manual_seed(0)
    reference = timm.create_model("mobilenetv1_100").eval()
    randomize_batchnorm(reference, torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    _hub_snapshot(tmp_path / "hub", "timm/mobilenetv1_100.ra4_e3600_r224_in1k",
                  {"model.safetensors": save(reference.state_dict()), "config.json": b"{}"})
    model = load_pretrained("timm_mobilenetv1_100")
    assert model.pretrained_cfg.family == "timm" and model.arch_cfg.padding == "symmetric"
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() <= 1e-4
    # An entry whose repository is not in the snapshot fails with one clear line, naming the source.
    with pytest.raises(FetchError, match="hf:timm/mobilenetv1_125"):
        fetch_pretrained("timm_mobilenetv1_125", quiet=True)


def test_local_directory_and_search_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    model = _tf_model()
    (tmp_path / "mine").mkdir()
    write_tf_graphdef(model, tmp_path / "mine" / "m_frozen.pb")
    monkeypatch.setenv("MOBILENET_WEIGHTS_PATH", str(tmp_path / "mine"))
    entry = _entry("local", model, (WeightFile("m_frozen.pb", None, ("https://unreachable.invalid/m.tgz",)),))
    monkeypatch.setitem(REGISTRY, "local", entry)
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained("local")(X), model(X)[:, 1:], atol=1e-5, rtol=0)


def test_registry_holds_every_published_model():
    families = {f: list_pretrained(f) for f in ("tf", "tf-quant", "keras", "timm", "hf")}
    assert [len(v) for v in families.values()] == [17, 16, 16, 2, 2]  # tf: 16 TFLite + the default graph
    for alpha in (0.25, 0.5, 0.75, 1.0):
        for size in (128, 160, 192, 224):
            for source in ("tf", "tf-quant", "keras"):
                entry = find_pretrained(alpha, size, source)
                assert entry.arch_cfg.alpha == alpha and entry.arch_cfg.resolution == (size, size)
                assert entry.family == source
    assert find_pretrained().name == "tf_mobilenet_v1_1.0_224"
    assert find_pretrained(0.5, 160, "keras").arch_cfg.padding == "keras"
    assert find_pretrained(1.25, source="timm").preprocess.crop_fraction == 0.9
    assert find_pretrained(1.0, source="timm").preprocess.crop_fraction == 0.875
    assert find_pretrained(0.75, 192, "hf").publisher == "hf:google/mobilenet_v1_0.75_192"
    assert find_pretrained(0.5, 200).name == "tflite_mobilenet_v1_0.5_224"  # unpublished size: the α's 224
    with pytest.raises(ValueError, match=r"no keras weights published for alpha=0\.35"):
        find_pretrained(0.35, source="keras")


def test_factory_picks_the_published_model(tmp_path, monkeypatch):
    picked = []

    def fake_load(weights, **settings):
        picked.append((weights, settings))
        raise FetchError("stop here")

    import mobilenet.factory as factory

    monkeypatch.setattr(factory, "load_weights", fake_load)
    for kwargs, name in [({}, "tf_mobilenet_v1_1.0_224"),
                         ({"alpha": 0.5, "resolution": 160}, "tflite_mobilenet_v1_0.5_160"),
                         ({"alpha": 0.5, "resolution": 160, "source": "keras"}, "keras_mobilenet_v1_0.5_160"),
                         ({"alpha": 0.25, "resolution": 128, "source": "tf-quant"},
                          "tflite_mobilenet_v1_0.25_128_quant"),
                         ({"source": "hf"}, "hf_mobilenet_v1_1.0_224")]:
        with pytest.raises(FetchError):
            mobilenet_v1(pretrained=True, **kwargs)
        assert picked[-1][0] == name
    assert picked[1][1] == {"alpha": 0.5, "resolution": 160}  # and the settings are checked against it
    with pytest.raises(ValueError, match="source= chooses between published weights"):
        mobilenet_v1(source="keras")


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_archive_is_skipped_for_the_next_source(tmp_path, monkeypatch, damage):
    """An interrupted download leaves a .tgz cut short (gzip: EOFError), a damaged one a deflate
    stream that fails (zlib.error): either is one source's failure, and the next source is tried."""
    from mobilenet.weights import fetch_file, sha256_file

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOBILENET_WEIGHTS_PATH", raising=False)
    payload = b"".join(i.to_bytes(4, "little") for i in range(1 << 18))  # 1 MiB that deflate compresses
    (tmp_path / "good.bin").write_bytes(payload)
    _tgz(tmp_path / "full.tgz", {"m/w.bin": payload})
    data = bytearray((tmp_path / "full.tgz").read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64  # past the tar header: not an open error
    (tmp_path / "bad.tgz").write_bytes(bytes(data))
    digest = sha256_file(tmp_path / "good.bin")
    bad = f"file:{tmp_path / 'bad.tgz'}#w.bin"
    got = fetch_file("w.bin", digest, (bad, f"file:{tmp_path / 'good.bin'}"), quiet=True)
    assert got == tmp_path / "cache" / "files" / "w.bin" and sha256_file(got) == digest
    got.unlink()
    with pytest.raises(FetchError, match=r"could not fetch w\.bin:\n  file:.*bad\.tgz#w\.bin: bad\.tgz is damaged"):
        fetch_file("w.bin", digest, (bad,), quiet=True)


def test_a_file_from_an_unpinned_source_is_kept_and_used_again(tmp_path, monkeypatch, capsys):
    """A file an unpinned: source gave (another file holding the pinned tensors) is kept under a
    name of its own and used again, checked by its tensors, once the source is unreachable; the
    pinned file's name holds only a file with the pinned checksum."""
    from mobilenet.weights import read_weights, tensors_sha256

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOBILENET_WEIGHTS_PATH", raising=False)
    model = _tf_model()
    online = tmp_path / "online" / "frozen.pb"
    online.parent.mkdir()
    write_tf_graphdef(model, online)
    digest = tensors_sha256(read_weights(online, resolution=64).state)
    entry = _entry("alt", model, (WeightFile("g.pb", "0" * 64, (  # the pinned file itself is nowhere
        f"unpinned:file:{online}",)),), tensors_sha256=digest)
    monkeypatch.setitem(REGISTRY, "alt", entry)
    converted = fetch_pretrained("alt", quiet=True)
    online.unlink()  # offline now, and the conversion lost: the kept file serves
    converted.unlink()
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained("alt")(X), model(X)[:, 1:], atol=1e-5, rtol=0)
    files = tmp_path / "cache" / "files"
    assert not (files / "g.pb").exists() and (files / "unpinned" / "g.pb").is_file()
    # A kept file damaged on disk is discarded, never converted: offline, that is a FetchError.
    converted.unlink()
    (files / "unpinned" / "g.pb").write_bytes(b"\x0a\x00")
    with pytest.raises(FetchError, match=r"could not fetch g\.pb"):
        fetch_pretrained("alt", quiet=True)
    assert not (files / "unpinned" / "g.pb").exists()


def test_an_unreadable_unpinned_candidate_is_one_sources_failure(tmp_path, monkeypatch):
    """Checking an unpinned: candidate converts it; one that cannot be read (here not a weight
    file at all) fails that source like different tensors would, and the next source is tried."""
    from mobilenet.weights import read_weights, sha256_file, tensors_sha256

    monkeypatch.setenv("MOBILENET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOBILENET_WEIGHTS_PATH", raising=False)
    model = _tf_model()
    write_tf_graphdef(model, tmp_path / "copy.pb")
    (tmp_path / "junk.pb").write_bytes(b"\x0a\xff\xff\xff")
    digest = tensors_sha256(read_weights(tmp_path / "copy.pb", resolution=64).state)
    entry = _entry("alt", model, (WeightFile("g.pb", sha256_file(tmp_path / "copy.pb"), (
        f"unpinned:file:{tmp_path / 'junk.pb'}", f"file:{tmp_path / 'copy.pb'}")),), tensors_sha256=digest)
    monkeypatch.setitem(REGISTRY, "alt", entry)
    with torch.no_grad():
        torch.testing.assert_close(load_pretrained("alt")(X), model(X)[:, 1:], atol=1e-5, rtol=0)
    junk_only = replace(entry.files[0], sources=entry.files[0].sources[:1])
    monkeypatch.setitem(REGISTRY, "alt", replace(entry, files=(junk_only,)))
    (tmp_path / "cache" / "files" / "g.pb").unlink()
    (tmp_path / "cache" / "converted" / "alt.safetensors").unlink()
    with pytest.raises(FetchError, match=r"unpinned:file:.*junk\.pb: junk\.pb: file is empty or truncated"):
        fetch_pretrained("alt", quiet=True)

"""Converters against files written independently: a frozen GraphDef encoded by hand, and a TFLite
model packed with TFLite's own schema and run by TFLite's own interpreter (ai-edge-litert)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilenet.arch import ArchConfig
from mobilenet.model import MobileNetV1
from mobilenet.weights import WeightFormatError, convert, detect_format
from weights_helpers import randomize_batchnorm, run_tflite, write_tf_graphdef, write_tflite


def _model(**settings) -> MobileNetV1:
    torch.manual_seed(0)
    model = MobileNetV1(ArchConfig(**settings)).eval()
    size = model.arch_cfg.resolution[0]
    randomize_batchnorm(model, torch.rand(8, 3, size, size, generator=torch.Generator().manual_seed(9)) * 2 - 1)
    return model


def _inputs(n: int, size: int) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.mark.parametrize(("alpha", "size", "depth_multiplier"), [(0.25, 64, 1), (0.5, 96, 2)])
def test_graphdef_round_trip_is_exact(tmp_path, alpha, size, depth_multiplier):
    model = _model(alpha=alpha, resolution=size, num_classes=1001, depth_multiplier=depth_multiplier)
    write_tf_graphdef(model, tmp_path / "frozen.pb")
    assert detect_format(tmp_path / "frozen.pb") == "tf-graphdef"
    converted, cfg = convert(tmp_path / "frozen.pb", resolution=size)
    assert converted.arch_cfg == model.arch_cfg
    assert cfg.label_set == "imagenet-1001" and cfg.preprocess.mean == (0.5, 0.5, 0.5)
    x = _inputs(2, size)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-5, rtol=0)


def test_graphdef_reads_eps_from_the_graph(tmp_path):
    model = _model(alpha=0.25, resolution=64, bn_eps=1e-5)
    write_tf_graphdef(model, tmp_path / "eps.pb", eps=1e-5)
    assert convert(tmp_path / "eps.pb")[0].arch_cfg.bn_eps == 1e-5


def test_tflite_written_and_run_by_tflite_matches_conversion(tmp_path):
    model = _model(alpha=0.25, resolution=64, num_classes=1001).fold_batchnorm()
    write_tflite(model, tmp_path / "m.tflite")
    x = _inputs(3, 64)
    tflite_out = run_tflite(tmp_path / "m.tflite", x.permute(0, 2, 3, 1).numpy())
    converted, cfg = convert(tmp_path / "m.tflite")
    assert converted.stem.folded and cfg.format == "tflite" and converted.arch_cfg.resolution == (64, 64)
    with torch.no_grad():
        ours = converted(x).numpy()
        np.testing.assert_allclose(ours, tflite_out, atol=1e-4, rtol=0)
        # The same weights with PyTorch's symmetric padding no longer reproduce TFLite.
        symmetric = MobileNetV1(converted.arch_cfg.replace(padding="symmetric")).eval()
        for _, module in symmetric.conv_layers():
            module.unfold_structure()
        symmetric.load_state_dict(converted.state_dict())
        assert np.abs(symmetric(x).numpy() - tflite_out).max() > 1e-3  # vs ~1e-7 with tf padding


def test_wrong_truncated_and_misfitting_files_are_clear_errors(tmp_path):
    model = _model(alpha=0.25, resolution=64)
    write_tf_graphdef(model, tmp_path / "ok.pb")
    data = (tmp_path / "ok.pb").read_bytes()
    (tmp_path / "cut.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFormatError, match="truncated"):
        convert(tmp_path / "cut.pb")
    (tmp_path / "notes.txt").write_text("these are not weights\n")
    with pytest.raises(WeightFormatError, match="unrecognised weight file"):
        convert(tmp_path / "notes.txt")
    (tmp_path / "tiny.tflite").write_bytes(b"\x00\x01")
    with pytest.raises(WeightFormatError, match="empty or truncated"):
        convert(tmp_path / "tiny.tflite")
    folded = _model(alpha=0.25, resolution=64).fold_batchnorm()
    write_tflite(folded, tmp_path / "m.tflite")
    blob = (tmp_path / "m.tflite").read_bytes()
    (tmp_path / "cut.tflite").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(WeightFormatError, match=r"truncated|corrupt"):
        convert(tmp_path / "cut.tflite")
    # Shapes that do not fit the requested architecture: the first misfit tensor is named.
    misfit = r"MobilenetV1/Conv2d_0/weights: shape \(8, 3, 3, 3\) does not fit stem"
    with pytest.raises(WeightFormatError, match=misfit):
        convert(tmp_path / "ok.pb", alpha=0.5)


def test_helper_models_have_input_dependent_logits():
    # Guards the tests above: identical logits for different images would let a broken converter pass.
    model = _model(alpha=0.25, resolution=64)
    with torch.no_grad():
        logits = model(_inputs(2, 64))
    assert (logits[0] - logits[1]).abs().max() > 0.1 * logits.std()


def test_tflite_with_a_damaged_offset_is_a_one_line_error(tmp_path, capsys):
    """An offset pointing past the end of the file (here the root table's) is a WeightFormatError
    naming the file, not a struct.error from reading it unchecked."""
    from mobilenet.cli import main

    write_tflite(_model(alpha=0.25, resolution=64).fold_batchnorm(), tmp_path / "m.tflite")
    blob = bytearray((tmp_path / "m.tflite").read_bytes())
    blob[0:4] = (len(blob) - 2).to_bytes(4, "little")  # the root table starts 2 bytes before the end
    (tmp_path / "bad.tflite").write_bytes(bytes(blob))
    with pytest.raises(WeightFormatError, match=r"bad\.tflite: TFLite file is truncated or corrupt"):
        convert(tmp_path / "bad.tflite")
    assert main(["convert", str(tmp_path / "bad.tflite"), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet convert: error: bad.tflite:") and "\n" not in err


def test_split_tflite_parts_in_the_wrong_order_say_so(tmp_path):
    """A model split in parts (TF's 1.0-224 uint8 body and head) given head first: the error names
    the order, not the head's 1x1 input read as a resolution. Here the "body" is a model whose
    logits have as many values as the "head" (a whole model) takes as input."""
    body = _model(alpha=0.25, resolution=32, num_classes=32 * 32 * 3).fold_batchnorm()
    write_tflite(body, tmp_path / "body.tflite")
    write_tflite(_model(alpha=0.25, resolution=32).fold_batchnorm(), tmp_path / "head.tflite")
    with pytest.raises(WeightFormatError, match=r"wrong order .*give body\.tflite before head\.tflite"):
        convert([tmp_path / "head.tflite", tmp_path / "body.tflite"])
    with pytest.raises(WeightFormatError, match=r"head\.tflite cannot follow head\.tflite"):
        convert([tmp_path / "head.tflite", tmp_path / "head.tflite"])  # in neither order: not parts of one


def test_damaged_keras_h5_is_a_one_line_error_naming_the_file(tmp_path):
    """Damage h5py meets only on reading, after the file opened (here a deflate chunk of a dataset
    that no longer inflates), and a .keras member whose CRC fails (below): WeightFormatError."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:  # Keras' legacy layout: conv1/conv1/kernel:0, stored compressed
        f.create_dataset("conv1/conv1/kernel:0", data=np.arange(3 * 3 * 3 * 8, dtype=np.float32).reshape(3, 3, 3, 8),
                         chunks=True, compression="gzip")
    with h5py.File(path, "r") as f:
        chunk = f["conv1/conv1/kernel:0"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset + 2: chunk.byte_offset + chunk.size] = b"\xff" * (chunk.size - 2)
    path.write_bytes(bytes(data))
    with pytest.raises(WeightFormatError, match=r"m\.h5: a damaged HDF5 file .*; download or save it again"):
        convert(path, resolution=64)


def test_keras_archive_with_a_bad_member_crc_is_a_one_line_error(tmp_path):
    import zipfile

    archive = tmp_path / "m.keras"
    payload = b"weights " * 64
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.h5", payload)
    data = bytearray(archive.read_bytes())
    data[data.index(payload) + 10] ^= 0xFF  # the member's bytes, not its CRC: the check fails on reading
    archive.write_bytes(bytes(data))
    assert detect_format(archive) == "keras"
    with pytest.raises(WeightFormatError, match=r"m\.keras: a damaged \.keras archive \(Bad CRC-32"):
        convert(archive, resolution=64)

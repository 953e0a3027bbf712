"""ImageFolder and CSV datasets: labels, class sets, and what happens to bad or missing files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilenet.datasets import CsvDataset, ImageFolderDataset, make_loader, open_dataset
from mobilenet.preprocess import ImageError, Preprocess


def _save(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10, 3), value, np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path):
    _save(tmp_path / "tree" / "cat" / "a.png", 10)
    _save(tmp_path / "tree" / "cat" / "b.jpg", 20)
    _save(tmp_path / "tree" / "dog" / "c.png", 30)
    (tmp_path / "tree" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "tree" / "dog" / "notes.txt").write_text("not an image, ignored")
    return tmp_path / "tree"


def test_image_folder_labels_follow_sorted_folders(tree):
    ds = ImageFolderDataset(tree, Preprocess(resolution=8).eval_transform())
    assert ds.classes == ["cat", "dog"]
    assert [(p.name, label) for p, label in ds.samples] == [
        ("a.png", 0), ("b.jpg", 0), ("broken.jpg", 1), ("c.png", 1)]
    x, label = ds[0]
    assert x.shape == (3, 8, 8) and label == 0


def test_fixed_class_list_maps_folders_into_it(tree):
    ds = ImageFolderDataset(tree, classes=["ant", "cat", "dog", "eel"])
    assert sorted({label for _, label in ds.samples}) == [1, 2]
    with pytest.raises(ValueError, match="neither a class index nor a known class"):
        ImageFolderDataset(tree, classes=["ant", "cat"])


def test_bad_file_skipped_and_counted_or_stops(tree, capsys):
    ds = ImageFolderDataset(tree, Preprocess(resolution=8).eval_transform())
    seen = sum(len(labels) for _, labels in make_loader(ds, batch_size=3))
    assert (len(ds), seen) == (4, 3)
    assert "broken.jpg" in capsys.readouterr().err
    stop = ImageFolderDataset(tree, bad_files="stop")
    with pytest.raises(ImageError, match=r"broken\.jpg"):
        stop[2]


def test_all_bad_batch_is_empty_not_an_error(tree):
    ds = ImageFolderDataset(tree, Preprocess(resolution=8).eval_transform())
    ds.samples = [s for s in ds.samples if s[0].name == "broken.jpg"]
    images, labels = next(iter(make_loader(ds, batch_size=2)))
    assert images.shape[0] == 0 and labels.shape == (0,)


def test_structural_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    _save(tmp_path / "flat" / "x.png", 1)
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataset(tmp_path / "flat")
    (tmp_path / "flat" / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class has no images"):
        ImageFolderDataset(tmp_path / "flat")
    with pytest.raises(ValueError, match="bad_files"):
        ImageFolderDataset(tmp_path / "flat", bad_files="ignore")


def test_csv_with_header_relative_paths_and_images_subfolder(tmp_path):
    _save(tmp_path / "images" / "one.png", 5)
    _save(tmp_path / "images" / "two.png", 6)
    (tmp_path / "labels.csv").write_text("file,label\none.png,7\ntwo.png,999\n")
    ds = open_dataset(tmp_path / "labels.csv", num_classes=1000)
    assert isinstance(ds, CsvDataset)
    assert ds.targets == [7, 999] and len(ds.classes) == 1000
    assert ds.root == tmp_path / "images"


def test_csv_errors_and_missing_files(tmp_path, capsys):
    _save(tmp_path / "one.png", 5)
    (tmp_path / "range.csv").write_text("one.png,1000\n")
    with pytest.raises(ValueError, match="row 1: label 1000 is out of range"):
        CsvDataset(tmp_path / "range.csv", num_classes=1000)
    (tmp_path / "short.csv").write_text("one.png\n")
    with pytest.raises(ValueError, match="expected 'file,label'"):
        CsvDataset(tmp_path / "short.csv")
    (tmp_path / "empty.csv").write_text("file,label\n")
    with pytest.raises(ValueError, match="no rows"):
        CsvDataset(tmp_path / "empty.csv")
    (tmp_path / "gone.csv").write_text("one.png,1\ngone.png,2\n")
    ds = CsvDataset(tmp_path / "gone.csv", Preprocess(resolution=8).eval_transform())
    assert [p.name for p in ds.missing] == ["gone.png"]
    assert "do not exist" in capsys.readouterr().err
    # Kept in the samples and skipped when loaded, so whoever counts skipped files counts it too.
    assert ds[1] is None and sum(len(y) for _, y in make_loader(ds, batch_size=2)) == 1
    with pytest.raises(ImageError, match=r"gone\.png"):
        CsvDataset(tmp_path / "gone.csv", bad_files="stop")
    with pytest.raises(ValueError, match="no such file or directory"):
        open_dataset(tmp_path / "absent")


def test_loader_with_workers_drops_bad_files(tree):
    ds = ImageFolderDataset(tree, Preprocess(resolution=8).eval_transform())
    labels = torch.cat([y for _, y in make_loader(ds, batch_size=2, num_workers=2)])
    assert labels.tolist() == [0, 0, 1]


def test_broken_symlink_in_a_folder_is_skipped_and_counted_or_stops(tree, capsys):
    (tree / "cat" / "gone.png").symlink_to(tree / "nowhere.png")
    ds = ImageFolderDataset(tree, Preprocess(resolution=8).eval_transform())
    assert [p.name for p in ds.missing] == ["gone.png"]
    seen = sum(len(labels) for _, labels in make_loader(ds, batch_size=8))
    assert (len(ds), seen) == (5, 3)  # gone.png and broken.jpg are left out, and both count
    assert "broken links" in capsys.readouterr().err
    with pytest.raises(ImageError, match=r"gone\.png: a broken symbolic link"):
        ImageFolderDataset(tree, bad_files="stop")


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32"])
def test_csv_encodings_with_a_byte_order_mark(tmp_path, encoding):
    _save(tmp_path / "a.png", 1)
    _save(tmp_path / "b.png", 2)
    text = "a.png,0\nb.png,1\n"  # no header: a byte-order mark must not turn the first row into one
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # Python's utf-16-be writes no mark
    (tmp_path / "list.csv").write_bytes(data)
    ds = CsvDataset(tmp_path / "list.csv")
    assert [(p.name, label) for p, label in ds.samples] == [("a.png", 0), ("b.png", 1)]


def test_csv_not_in_utf8_is_one_line_naming_utf8(tmp_path):
    (tmp_path / "list.csv").write_bytes("file,label\na.png,0\ncaf\u00e9.png,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"list.csv line 3: byte 0xe9 is not UTF-8.*save the CSV as UTF-8"):
        CsvDataset(tmp_path / "list.csv")


def _split_config(data, val_data, num_classes):
    from mobilenet.arch import ArchConfig
    from mobilenet.train.config import TrainConfig

    return TrainConfig(data=str(data), val_data=str(val_data),
                       arch=ArchConfig(alpha=0.25, resolution=32, num_classes=num_classes))


def test_validation_folders_take_a_training_csvs_class_numbers(tmp_path):
    # A training CSV's classes are 0..11; validation folders named so must get those labels, not
    # the text order of their names ("0", "1", "10", "11", "2", ...).
    from mobilenet.train.files import build_splits

    for c in range(12):
        _save(tmp_path / "images" / f"t{c}.png", c)
        _save(tmp_path / "val" / str(c) / f"v{c}.png", c)
    (tmp_path / "train.csv").write_text("".join(f"t{c}.png,{c}\n" for c in range(12)))
    splits = build_splits(_split_config(tmp_path / "train.csv", tmp_path / "val", 12))
    assert sorted((int(p.parent.name), label) for p, label in splits.val.samples) == [(c, c) for c in range(12)]
    _save(tmp_path / "val" / "cat" / "x.png", 1)  # a class the training set lacks
    with pytest.raises(ValueError, match=r"val/cat: 'cat' is neither a class index nor a known class name"):
        build_splits(_split_config(tmp_path / "train.csv", tmp_path / "val", 12))


def test_a_folder_with_train_val_and_validation_data_named_elsewhere_trains_on_its_train_folder(tmp_path):
    from mobilenet.train.files import build_splits, count_classes

    for c in "abc":
        _save(tmp_path / "d" / "train" / c / "x.png", 1)
    for c in "ac":
        _save(tmp_path / "d" / "val" / c / "x.png", 2)
    (tmp_path / "v.csv").write_text("d/val/a/x.png,0\nd/val/c/x.png,2\n")
    assert count_classes(str(tmp_path / "d"), str(tmp_path / "v.csv")) == 3
    splits = build_splits(_split_config(tmp_path / "d", tmp_path / "v.csv", 3))
    assert splits.classes == ("a", "b", "c")
    assert {p.relative_to(tmp_path / "d").parts[:2] for p, _ in splits.train.samples} == {
        ("train", "a"), ("train", "b"), ("train", "c")}
    assert [label for _, label in splits.val.samples] == [0, 2]

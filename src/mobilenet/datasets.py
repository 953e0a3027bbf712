"""Image classification datasets on disk: an ImageFolder tree or a ``file,label`` CSV.

API::

    ds = open_dataset(path, transform, classes=None, bad_files="skip", loader=load_image)
        # a directory -> ImageFolderDataset, a .csv file -> CsvDataset; ``loader`` reads each file
        # (``Preprocess.open_image`` decodes as the weights' publisher did)
    ImageFolderDataset(root, transform=None, classes=None, bad_files="skip")
        # root/<class>/<image>; classes sorted by folder name unless ``classes`` fixes the order
    CsvDataset(csv_path, transform=None, classes=None, root=None, bad_files="skip")
        # rows "file,label" (an optional header row); files relative to ``root`` (default: the
        # CSV's folder); a label is an integer index or, when ``classes`` is given, a class name;
        # UTF-8 (a byte-order mark allowed), or UTF-16/32 with their byte-order mark
    loader = make_loader(ds, batch_size, shuffle=False, num_workers=0, sampler=None)
        # a DataLoader whose batches are (images NCHW, labels) with unreadable files left out

Each dataset has ``samples`` (list of (path, label)), ``classes`` (names, index = label),
``transform`` and ``bad_files``. ``ds[i]`` is ``(transform(image), label)``.

Bad files. ``bad_files="stop"`` raises ``ImageError`` (a ``ValueError``) naming the first file that
cannot be decoded. ``bad_files="skip"`` prints one warning line per bad file to stderr and makes
``ds[i]`` return ``None``; ``make_loader``'s collate function drops those, so a batch may be
shorter than ``batch_size`` (or empty). Count what was left out as ``len(ds) - images seen``:
this stays right with DataLoader workers, where a counter in the dataset would not. Files that are
missing altogether (or broken symbolic links in a folder) are found when the dataset is built: the
same policy applies (``stop`` raises; ``skip`` records them in ``missing`` and keeps them in
``samples``, so they are skipped and counted like any other unreadable file). Images declaring
more than Pillow's decompression-bomb limit of pixels are unreadable too, refused from their header
without being decoded (``load_image``).

Structural problems are always errors: a root that does not exist, no class folders, a class
folder with no images, a CSV without rows, a label out of range or unknown.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mobilenet.errors import InputError, option
from mobilenet.preprocess import ImageError, load_image

BadFiles = Literal["skip", "stop"]
BAD_FILE_POLICIES: tuple[str, ...] = ("skip", "stop")
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)
Sample = tuple[torch.Tensor, int]
# Path -> 8-bit RGB image, raising ImageError: load_image, or a recipe's own (Preprocess.open_image,
# which decodes JPEGs as TF does for TF's weights). Picklable, for DataLoader workers.
Loader = Callable[[Path], Any]
# Byte-order marks a CSV may start with, and the encoding each announces (UTF-32's before UTF-16's,
# which is its prefix).
BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


class _ImageDataset(Dataset):
    """Shared loading and bad-file handling; subclasses fill ``samples`` and ``classes``."""

    def __init__(self, transform: Callable[[Any], Any] | None, bad_files: BadFiles, loader: Loader) -> None:
        if bad_files not in BAD_FILE_POLICIES:
            raise InputError(f"{option('bad_files')} must be one of {BAD_FILE_POLICIES}, got {bad_files!r}")
        self.transform = transform
        self.bad_files = bad_files
        self.loader = loader
        self.samples: list[tuple[Path, int]] = []
        self.classes: list[str] = []
        self.missing: list[Path] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample | None:
        path, label = self.samples[index]
        try:
            image = self.loader(path)
        except ImageError as err:
            if self.bad_files == "stop":
                raise
            print(f"warning: skipping {err}", file=sys.stderr)
            return None
        return (self.transform(image) if self.transform else image), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def _find_missing(self) -> None:
        """Listed files that do not exist (or are folders): ``stop`` raises now, before any work;
        ``skip`` warns once and keeps them in ``samples``, where loading them gives ``None`` like
        any other unreadable file, so they are counted wherever skipped files are counted (the
        ``skipped`` of an evaluation, the ``skipped_images`` of a training epoch)."""
        for path, _ in self.samples:
            if not path.is_file():
                if self.bad_files == "stop":
                    why = ("is a directory, not an image" if path.is_dir()
                           else "a broken symbolic link" if path.is_symlink() else "no such file")
                    raise ImageError(f"{path}: {why}")
                self.missing.append(path)
        if self.missing:
            print(f"warning: {len(self.missing)} image files do not exist or are broken links (first: "
                  f"{self.missing[0]}); they are skipped and counted", file=sys.stderr)


class ImageFolderDataset(_ImageDataset):
    """``root/<class name>/<image files>``, as torchvision's ImageFolder.

    Without ``classes`` the labels are the sorted folder names, and every folder must hold
    images. With ``classes`` (e.g. the 1,000 ImageNet synsets, to evaluate on a subset of them)
    each folder must be one of those names, or an integer index into them; classes without a
    folder are allowed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        classes: Sequence[str] | None = None,
        bad_files: BadFiles = "skip",
        loader: Loader = load_image,
    ) -> None:
        super().__init__(transform, bad_files, loader)
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: no such directory")
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise InputError(f"{self.root}: no class folders (expected {self.root}/<class name>/<images>)")
        if classes is None:
            self.classes = [f.name for f in folders]
            index = {name: i for i, name in enumerate(self.classes)}
        else:
            self.classes = list(classes)
            index = {name: i for i, name in enumerate(self.classes)}
        for folder in folders:
            label = _class_index(folder.name, index, len(self.classes), f"class folder {folder}")
            # A broken symlink is no file, but it stands for an image: kept, so it is skipped and counted.
            files = sorted(p for p in folder.rglob("*") if (p.is_file() or p.is_symlink()) and is_image_file(p))
            if not files:
                raise InputError(
                    f"class folder {folder} has no images (extensions {', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            self.samples += [(f, label) for f in files]
        self._find_missing()


class CsvDataset(_ImageDataset):
    """Rows ``file,label``. A first row whose label is not an integer (nor a known class name) is
    a header. Paths are relative to ``root``, by default the CSV's own folder; if the CSV sits
    beside an ``images/`` folder holding the files, that folder is used."""

    def __init__(
        self,
        csv_path: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        classes: Sequence[str] | None = None,
        root: str | os.PathLike[str] | None = None,
        bad_files: BadFiles = "skip",
        num_classes: int | None = None,
        loader: Loader = load_image,
    ) -> None:
        super().__init__(transform, bad_files, loader)
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise InputError(f"{self.csv_path}: no such file")
        self.classes = list(classes) if classes is not None else []
        index = {name: i for i, name in enumerate(self.classes)}
        rows = _read_csv_rows(self.csv_path)
        if rows and _is_header(rows[0], index):
            rows = rows[1:]
        if not rows:
            raise InputError(f"{self.csv_path}: no rows (expected lines 'file,label')")
        limit = len(self.classes) if self.classes else num_classes
        self.root = Path(root) if root is not None else self._default_root(rows[0][0])
        for lineno, (file, label_text) in enumerate(rows, start=1):
            label = _class_index(label_text, index, limit, f"{self.csv_path} row {lineno}")
            self.samples.append((self.root / file, label))
        if not self.classes:
            self.classes = [str(i) for i in range(num_classes or max(self.targets) + 1)]
        self._find_missing()
        if len(self.missing) == len(self.samples):
            raise InputError(f"{self.csv_path}: none of the listed files exist under {self.root}")

    def _default_root(self, first_file: str) -> Path:
        here = self.csv_path.parent
        if not (here / first_file).exists() and (here / "images" / first_file).exists():
            return here / "images"
        return here


def csv_text(path: Path) -> str:
    """The text of a CSV: UTF-8, with or without a byte-order mark (Excel writes one), or UTF-16 or
    UTF-32 announced by theirs; anything else that is not valid UTF-8 (Latin-1, say) is refused in
    one line rather than guessed at, since a wrong guess would name files that do not exist."""
    data = path.read_bytes()
    for bom, encoding in BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as err:
                raise InputError(f"{path}: starts with a {encoding} byte-order mark but does not decode as "
                                 f"{encoding} ({err.reason}); save it as UTF-8") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(f"{path} line {line}: byte 0x{data[err.start]:02x} is not UTF-8 (Latin-1 or another "
                         "legacy encoding?); save the CSV as UTF-8") from None


def _read_csv_rows(path: Path) -> list[tuple[str, str]]:
    rows = []
    with io.StringIO(csv_text(path), newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < 2:
                raise InputError(f"{path} line {lineno}: expected 'file,label', got {','.join(row)!r}")
            rows.append((row[0].strip(), row[1].strip()))
    return rows


def _looks_like_label(text: str, index: dict[str, int]) -> bool:
    return text in index or text.lstrip("-").isdigit()


def _is_header(row: tuple[str, str], index: dict[str, int]) -> bool:
    """A first row is a header when its label is not a label and its first cell is not an image
    file name: ``file,label`` is a header, ``cat1.png,O`` (a typo for 0) is a row with a bad label,
    which must be reported, not dropped."""
    return not _looks_like_label(row[1], index) and not is_image_file(row[0])


def _class_index(text: str, index: dict[str, int], limit: int | None, where: str) -> int:
    if text in index:
        return index[text]
    try:
        label = int(text)
    except ValueError:
        known = f"; known classes are e.g. {', '.join(list(index)[:3])}" if index else ""
        raise InputError(f"{where}: {text!r} is neither a class index nor a known class name{known}") from None
    if label < 0 or (limit is not None and label >= limit):
        raise InputError(f"{where}: label {label} is out of range [0, {limit})")
    return label


def open_dataset(
    path: str | os.PathLike[str],
    transform: Callable[[Any], Any] | None = None,
    classes: Sequence[str] | None = None,
    bad_files: BadFiles = "skip",
    num_classes: int | None = None,
    loader: Loader = load_image,
) -> ImageFolderDataset | CsvDataset:
    """A directory is an ImageFolder tree; a file is a ``file,label`` CSV."""
    p = Path(path)
    if p.is_dir():
        return ImageFolderDataset(p, transform, classes=classes, bad_files=bad_files, loader=loader)
    if p.is_file():
        return CsvDataset(p, transform, classes=classes, bad_files=bad_files, num_classes=num_classes, loader=loader)
    raise InputError(f"{p}: no such file or directory (give an ImageFolder directory or a file,label CSV)")


def collate_skipping_bad(batch: list[Sample | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """default_collate without the ``None`` left by unreadable files; an all-bad batch is empty."""
    good = [sample for sample in batch if sample is not None]
    if not good:
        return torch.empty(0, 3, 1, 1), torch.empty(0, dtype=torch.long)
    images, labels = default_collate(good)
    return images, labels


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over one of these datasets that leaves unreadable files out of its batches."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_skipping_bad,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
    )

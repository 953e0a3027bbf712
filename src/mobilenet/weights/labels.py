"""ImageNet class names shipped with the package (see ``mobilenet/data/README.md`` for their origin)."""

from __future__ import annotations

from functools import cache
from importlib import resources

IMAGENET_1000 = "imagenet-1000"
IMAGENET_1001 = "imagenet-1001"  # TF's: index 0 is "background", then the 1,000 classes
BACKGROUND = "background"


@cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """(wnid, lemmas) of the 1,000 classes in the standard order."""
    text = resources.files("mobilenet").joinpath("data/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line.strip())
    if len(rows) != 1000:
        raise RuntimeError(f"package data imagenet_classes.tsv has {len(rows)} rows, expected 1000")
    return rows  # type: ignore[return-value]


def imagenet_names() -> list[str]:
    """Short display names (the first lemma): "tench", ..., "Egyptian cat", ..., "cheeseburger"."""
    return [lemmas.split(",")[0].strip() for _, lemmas in imagenet_classes()]


def label_names(label_set: str, num_classes: int) -> list[str]:
    """Names for a label set: ``imagenet-1000``, ``imagenet-1001`` or anything else (class indices)."""
    if label_set == IMAGENET_1000 and num_classes == 1000:
        return imagenet_names()
    if label_set == IMAGENET_1001 and num_classes == 1001:
        return [BACKGROUND, *imagenet_names()]
    return [str(i) for i in range(num_classes)]

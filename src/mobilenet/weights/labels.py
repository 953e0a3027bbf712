"""ImageNet class names shipped with the package (see ``mobilenet/data/README.md`` for their origin)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from mobilenet.errors import InputError

IMAGENET_1000 = "imagenet-1000"
IMAGENET_1001 = "imagenet-1001"  # TF's: index 0 is "background", then the 1,000 classes
CUSTOM = "custom"  # class names listed with the weights, or class indices
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


def label_set_for(num_classes: int) -> str:
    """The label set a classifier of this size most likely has when nothing names its classes:
    1001 is TF's ImageNet (background first), 1000 ImageNet, anything else custom."""
    return {1001: IMAGENET_1001, 1000: IMAGENET_1000}.get(num_classes, CUSTOM)


def label_set_of(names: Sequence[str]) -> tuple[str, tuple[str, ...] | None]:
    """(label set, explicit names) for the class names a checkpoint lists: ImageNet's 1,000 (after a
    leading "background": TF's 1001) when at least 99 % of their first lemmas are ImageNet's in the
    standard order (copies of the list differ in a few spellings), else ``custom`` with the names."""
    names = tuple(str(n) for n in names)
    real = names[1:] if names and names[0].strip().lower() == BACKGROUND else names
    if len(real) == 1000:
        same = sum(a.split(",")[0].strip().lower() == b.lower() for a, b in zip(real, imagenet_names()))
        if same >= 990:
            return (IMAGENET_1001 if len(names) == 1001 else IMAGENET_1000), None
    return CUSTOM, names


def label_names(label_set: str, num_classes: int) -> list[str]:
    """Names for a label set: ``imagenet-1000``, ``imagenet-1001`` or anything else (class indices)."""
    if label_set == IMAGENET_1000 and num_classes == 1000:
        return imagenet_names()
    if label_set == IMAGENET_1001 and num_classes == 1001:
        return [BACKGROUND, *imagenet_names()]
    return [str(i) for i in range(num_classes)]


class Prediction(NamedTuple):
    """One of ``decode_predictions``' answers: class index (1000-class order for ImageNet),
    WordNet id (ImageNet only, else ""), display name, and softmax probability."""

    index: int
    wnid: str
    label: str
    score: float


def decode_predictions(logits: Any, top: int = 5, labels: Sequence[str] | None = None) -> list[list[Prediction]]:
    """Logits (N, classes) -> the ``top`` classes of each row, best first: what Keras'
    ``decode_predictions`` gives, as ``Prediction(index, wnid, label, score)``.

    Scores are softmax probabilities. 1,001 ImageNet logits (TF's, index 0 "background") have the
    background logit dropped before the softmax, so indices and probabilities are over the 1,000
    real classes whatever the weights. ``labels``: names for a custom classifier."""
    import torch

    x = torch.as_tensor(logits).detach().float().cpu()
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise InputError(f"logits must be (N, classes), got shape {tuple(x.shape)}")
    if not isinstance(top, int) or top < 1:
        raise InputError(f"top must be an int >= 1, got {top!r}")
    wnids: list[str] = []
    if labels is None:
        if x.shape[1] == 1001:
            x = x[:, 1:]
        if x.shape[1] != 1000:
            raise InputError(f"{x.shape[1]} classes are not ImageNet's: pass labels=[...] to name them")
        labels, wnids = imagenet_names(), [wnid for wnid, _ in imagenet_classes()]
    elif len(labels) != x.shape[1]:
        raise InputError(f"{len(labels)} labels for {x.shape[1]} classes")
    probs = torch.softmax(x, dim=1)
    best = probs.topk(min(top, probs.shape[1]), dim=1)
    return [
        [Prediction(int(i), wnids[int(i)] if wnids else "", labels[int(i)], float(p)) for p, i in zip(values, indices)]
        for values, indices in zip(best.values, best.indices)
    ]

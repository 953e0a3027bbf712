"""``classify()`` and ``evaluate()``: what ``mobilenet classify`` and ``mobilenet evaluate`` do, as
library calls (the commands only parse their arguments and print what these return)::

    import mobilenet
    for image in mobilenet.classify(["cat.jpg", "dog.png"], weights="keras_mobilenet_v1_0.5_160"):
        print(image.image, image.top[0].label if image.ok else image.error)
    mobilenet.evaluate("val/", weights="tflite_mobilenet_v1_0.25_224")["top1"]
    mobilenet.evaluate("val.csv", runtime="openvino", precision="int8", calibration="calib/")["fp32"]

Both run the weights the same way:

=====================  =======================================================================
``weights``            a registry name (default ``tf_mobilenet_v1_1.0_224``), any file a reader
                       takes, or a ``MobileNetV1`` already built
``runtime``            ``torch`` (default: ``mobilenet.optimize``: folded, compiled), ``onnxruntime``,
                       ``openvino``, ``litert``, ``executorch`` or ``auto``
                       (``mobilenet.deploy.runtime.make_predictor``)
``precision``          ``fp32`` (default), ``fp16``, ``bf16``, ``int8`` (needs ``calibration``: a
                       folder of real images, never the ones evaluated)
``exported``           a file written by ``mobilenet export``, run in its own runtime at its own
                       precision (``runtime``, ``precision`` and ``calibration`` do not apply);
                       its own metadata gives the preprocessing and labels, and the weights it
                       names are the fp32 reference (``weights``: these instead; a file without
                       metadata, such as TF's own, needs them for everything)
``resize``             ``tf`` or ``pillow``: overrides the weights' own resize
``threads``, ``device``, ``allow_emulation``: as for ``make_predictor``
=====================  =======================================================================

Outputs are over the real classes: TF's background logit is dropped (``accuracy.drop_background``),
so class i is ImageNet class i whoever published the weights.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mobilenet.accuracy import (
    accuracy,
    check_batching,
    check_device,
    drop_background,
    is_main_process,
    modes_kept,
    torch_predictor,
)
from mobilenet.arch import ArchConfig
from mobilenet.datasets import BadFiles, ImageFolderDataset, is_image_file, open_dataset
from mobilenet.errors import InputError, option
from mobilenet.factory import load_model
from mobilenet.model import MobileNetV1
from mobilenet.predictor import Predictor
from mobilenet.preprocess import ImageError, Preprocess, sample_photos
from mobilenet.weights import DEFAULT, REGISTRY, PretrainedCfg, pretrained_cfg_of
from mobilenet.weights.labels import Prediction, decode_predictions, imagenet_classes, label_set_of

PathLike = str | os.PathLike[str]
REFERENCE = "reference"  # how an exported file's PyTorch fp32 reference run is labelled


@dataclass(frozen=True)
class RunSettings:
    """How the weights run (see the module docstring); shared by ``classify`` and ``evaluate``."""

    runtime: str = "torch"
    precision: str = "fp32"
    calibration: PathLike | None = None
    threads: int | None = None
    device: str = "cpu"
    allow_emulation: bool = False
    exported: PathLike | None = None
    resize: str | None = None

    def __post_init__(self) -> None:
        # Checked here, once: torch.set_num_threads(-1) and the runtimes raise their own tracebacks.
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise InputError(f"{option('threads')} must be an integer >= 1, got {self.threads!r}")
        if check_device(self.device).type != "cpu" and self.runtime != "torch" and self.exported is None:
            raise InputError(f"{option('device', self.device)} runs {option('runtime', 'torch')} only; "
                             f"{self.runtime} runs on the CPU: leave {option('device')} out")


def run_settings(
    runtime: str | None = None, precision: str | None = None, calibration: PathLike | None = None,
    threads: int | None = None, device: str = "cpu", allow_emulation: bool = False,
    exported: PathLike | None = None, resize: str | None = None, *, allow_emulated_bf16: bool | None = None,
) -> RunSettings:
    """``RunSettings`` from ``classify``'s and ``evaluate``'s keywords (None: the default). With
    ``exported`` the file runs in its own runtime at its own precision, so a runtime, precision,
    calibration or emulated bf16 asked for as well is refused rather than ignored.
    ``allow_emulated_bf16``: the old name of ``allow_emulation`` (a ``DeprecationWarning``)."""
    if allow_emulated_bf16 is not None:
        warnings.warn("allow_emulated_bf16= is now allow_emulation=, as optimize() and make_predictor() name it",
                      DeprecationWarning, stacklevel=3)
        allow_emulation = allow_emulation or allow_emulated_bf16
    if exported is not None:
        given = [option(name, value) for name, value in (("runtime", runtime), ("precision", precision),
                                                           ("calibration", calibration)) if value is not None]
        given += [option("allow_emulation", True)] if allow_emulation else []
        if given:
            raise InputError(f"{' and '.join(given)} cannot apply to {option('exported', Path(exported).name)}, "
                             "which runs in its own runtime at its own precision; leave them out")
    return RunSettings(runtime or "torch", precision or "fp32", calibration, threads, device, allow_emulation,
                       exported, resize)


def _model(weights: PathLike | MobileNetV1 | None) -> MobileNetV1:
    # A model of the caller's stays in the mode they left it in: every predictor runs a copy
    # (mobilenet.optimize, the exporters) or the model itself in eval mode call by call (the eager
    # reference), and make_predictor's own eval() is undone (predictor_for).
    if isinstance(weights, MobileNetV1):
        return weights
    return load_model(DEFAULT if weights is None else weights)


def _calibration_images(folder: PathLike | None) -> list[Path] | None:
    if folder is None:
        return None
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"calibration folder {folder}: no such directory")
    images = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
    if not images:
        raise InputError(f"calibration folder {folder}: no images found")
    return images


def predictor_for(
    model: MobileNetV1, running: RunSettings, *, preprocess: Preprocess, batch_size: int = 1, reference: bool = False,
) -> Predictor:
    """``model`` (or ``running.exported``, unless ``reference``: then the PyTorch model in fp32)
    run as ``running`` says, with logits over the model's real classes."""
    cfg = pretrained_cfg_of(model)
    classes = len(cfg.class_names)
    if running.exported is not None and not reference:
        return exported_predictor(running.exported, cfg, running.threads)
    if reference:  # the model exactly as it is: eager PyTorch, fp32 (on running.threads, call by call)
        return drop_background(torch_predictor(model, running.device, running.threads), classes)
    runtime, precision = running.runtime, running.precision
    if runtime == "torch":  # mobilenet.optimize: folded, compiled for this batch size, cached
        from mobilenet.deploy.runtimes import check_precision  # noqa: PLC0415
        from mobilenet.deploy.runtimes.pytorch import TorchPredictor  # noqa: PLC0415

        if torch.device(running.device).type == "cpu":  # on a GPU, optimize judges the GPU's precisions
            check_precision("torch", precision, allow_emulation=running.allow_emulation)
        return drop_background(TorchPredictor(model, precision, running.threads, batch_size=batch_size,
                                              device=running.device), classes)
    from mobilenet.deploy.runtime import make_predictor  # noqa: PLC0415

    # make_predictor puts the model in eval mode to export and calibrate it; what it builds holds
    # files or copies, so the caller's model gets its own modes back once it is built.
    with modes_kept(model):
        return drop_background(make_predictor(
            model, runtime=runtime, precision=precision, preprocess=preprocess,
            calibration_images=_calibration_images(running.calibration), threads=running.threads,
            batch_size=batch_size, allow_emulation=running.allow_emulation,
        ), classes)


def exported_predictor(path: PathLike, cfg: PretrainedCfg, threads: int | None = None) -> Predictor:
    """The exported file at ``path`` in the runtime that reads its format, with logits over the real
    classes of ``cfg`` (what the file's metadata or the weights named for it say it holds)."""
    from mobilenet.deploy.runtime import predictor_from_file  # noqa: PLC0415

    path, classes = Path(path), len(cfg.class_names)
    predictor = drop_background(predictor_from_file(path, threads=threads), classes,
                                mismatch=f" from {path}: {cfg.name} has {classes} classes; name the weights it "
                                "was exported from")
    predictor.description = f"{path.name}: {predictor.description}"
    return predictor


def exported_cfg(path: PathLike) -> PretrainedCfg | None:
    """What an exported file says it holds (``deploy.formats.metadata``): its weights' name,
    architecture, preprocessing and labels; None for a file that says nothing (TF's own)."""
    from mobilenet.deploy.formats.metadata import read_export_metadata  # noqa: PLC0415

    path = Path(path)
    meta = read_export_metadata(path)
    if meta is None:
        return None
    try:
        arch, preprocess = ArchConfig.from_dict(meta["arch"]), Preprocess.from_dict(meta["preprocess"])
        label_set, labels = label_set_of(meta["labels"])
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: its metadata lacks a readable {err}; name the weights it was made from "
                         f"({option('weights')})") from None
    return PretrainedCfg(name=str(meta.get("name") or path.stem), arch_cfg=arch, preprocess=preprocess,
                         label_set=label_set, labels=labels, description=f"exported {path.name}")


def _reference_for(cfg: PretrainedCfg) -> tuple[MobileNetV1 | None, str]:
    """The PyTorch model an exported file was made from, when its metadata names published
    weights whose classifier it kept; else None, and why not."""
    entry = REGISTRY.get(cfg.name)
    if entry is None:
        return None, (f"its weights {cfg.name!r} are no registry entry; name them ({option('weights')}) to compare "
                      "with them")
    kept = cfg.num_classes == entry.num_classes or (entry.has_background_class and cfg.num_classes == 1000)
    if not kept:
        return None, (f"its {cfg.num_classes}-class classifier is not {cfg.name}'s; name the weights "
                      f"({option('weights')}) to compare")
    return load_model(cfg.name, resolution=cfg.arch_cfg.resolution, num_classes=cfg.num_classes), ""


def _what_runs(
    running: RunSettings, weights: PathLike | MobileNetV1 | None, *, want_reference: bool,
) -> tuple[PretrainedCfg, MobileNetV1 | None, str]:
    """(config whose preprocessing and labels apply, PyTorch model, why there is none). Without an
    exported file: the weights'. With one: its own metadata (the weights' only for a file without),
    and as the model the weights given or, when ``want_reference``, those the metadata names."""
    if running.exported is None:
        model = _model(weights)
        return pretrained_cfg_of(model), model, ""
    from_file = exported_cfg(running.exported)
    if weights is None:
        if from_file is None:
            raise InputError(f"{running.exported} carries no metadata (preprocessing, labels), as files "
                             "`mobilenet export` did not write: name the weights it was made from "
                             f"({option('weights')})")
        model, why = _reference_for(from_file) if want_reference else (None, "")
        return from_file, model, why
    model = _model(weights)
    if from_file is None:
        return pretrained_cfg_of(model), model, ""
    if pretrained_cfg_of(model).class_names != from_file.class_names:
        raise InputError(f"{option('weights', pretrained_cfg_of(model).name)} do not have the classes of "
                         f"{running.exported} ({from_file.name}, {len(from_file.class_names)} classes)")
    return from_file, model, ""


# -------------------------------------------------------------------------------------------- classify


@dataclass(frozen=True)
class ImageClasses:
    """One image's answer: its ``top`` classes, best first, or the ``error`` that kept it from
    being read."""

    image: Path
    top: tuple[Prediction, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """``{"image", "top": [{"index", "label", "probability"}]}`` or ``{"image", "error"}``;
        probabilities rounded to 6 decimals (what ``mobilenet classify --json`` prints)."""
        if self.error is not None:
            return {"image": str(self.image), "error": self.error}
        return {"image": str(self.image), "top": [
            {"index": p.index, "label": p.label, "probability": round(p.score, 6)} for p in self.top]}


@dataclass(frozen=True)
class Classification:
    """``classify``'s answer: one ``ImageClasses`` per image, in order (iterate, index, len), the
    ``weights`` that gave them and a ``description`` of what ran."""

    weights: str
    description: str
    images: tuple[ImageClasses, ...]

    def __iter__(self) -> Iterator[ImageClasses]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> ImageClasses:
        return self.images[index]

    @property
    def failed(self) -> list[ImageClasses]:
        return [image for image in self.images if not image.ok]

    def to_list(self) -> list[dict[str, Any]]:
        return [image.to_dict() for image in self.images]


def classify(
    images: PathLike | Sequence[PathLike] | None = None,
    *,
    weights: PathLike | MobileNetV1 | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    top_k: int = 5,
    calibration: PathLike | None = None,
    threads: int | None = None,
    device: str = "cpu",
    allow_emulation: bool = False,
    exported: PathLike | None = None,
    resize: str | None = None,
    allow_emulated_bf16: bool | None = None,  # the old name of allow_emulation (deprecated)
) -> Classification:
    """The ``top_k`` classes of each image (None: ``preprocess.sample_photos()``; an empty list is
    an ``InputError``), with the weights' own preprocessing. An image that cannot be read gets its
    ``error`` and the others are still classified; where none of the paths exists, an
    ``InputError`` says so before any weights are loaded (or fetched). Class indices are in
    ImageNet's 1,000-class order for ImageNet weights."""
    if not isinstance(top_k, int) or top_k < 1:
        raise InputError(f"{option('top_k')} must be an int >= 1, got {top_k!r}")
    if images is None:  # only None means the samples: an empty list (a glob that matched nothing) is no request
        paths = sample_photos()
        if not paths:
            raise InputError("no images given and no sample photos found (pip install matplotlib scikit-image)")
    else:
        paths = [Path(images)] if isinstance(images, (str, os.PathLike)) else [Path(p) for p in images]
        if not paths:
            raise InputError(f"no images given ({option('images')} is empty: a pattern that matched nothing?); "
                             f"pass image paths, or leave {option('images')} out to classify the sample photos")
    missing = [path for path in paths if not path.exists()]
    if len(missing) == len(paths):  # (a mistyped path, say: nothing would be classified)
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ImageError(f"{missing[0]}: no such file{more}")
    running = run_settings(runtime, precision, calibration, threads, device, allow_emulation, exported, resize,
                           allow_emulated_bf16=allow_emulated_bf16)
    cfg, model, _ = _what_runs(running, weights, want_reference=False)
    preprocess = cfg.preprocess.with_resize(resize)
    if exported is not None:
        predict = exported_predictor(exported, cfg, threads)
    else:
        assert model is not None
        predict = predictor_for(model, running, preprocess=preprocess)
    transform = preprocess.eval_transform()
    names = None if cfg.is_imagenet else cfg.class_names  # None: ImageNet's own names and WordNet ids
    k = min(top_k, len(cfg.class_names))
    answers = []
    for path in paths:
        try:
            x = transform(preprocess.open_image(path))[None]
        except ImageError as err:
            answers.append(ImageClasses(path, error=str(err)))
            continue
        answers.append(ImageClasses(path, top=tuple(decode_predictions(predict(x), top=k, labels=names)[0])))
    return Classification(weights=cfg.name, description=predict.description, images=tuple(answers))


# -------------------------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class AccuracyRun:
    """One pass over the data: how it ran (``precision`` and ``runtime`` as asked; ``exported``
    and ``reference`` for a file and its PyTorch fp32 reference), what ran, and the accuracy."""

    precision: str
    runtime: str
    description: str
    result: dict[str, Any]


class Evaluation(Mapping[str, Any]):
    """``evaluate``'s answer, read as the accuracy dict ``{"top1", "top5", "images", "skipped"}``
    (percent) of the run asked for, with ``"fp32"``, the same for the PyTorch fp32 reference,
    beside any other run. ``runs`` and ``weights`` say what ran."""

    def __init__(self, weights: str, runs: Sequence[AccuracyRun]) -> None:
        self.weights, self.runs = weights, tuple(runs)
        summary = dict(self.runs[0].result)
        if len(self.runs) > 1:
            summary["fp32"] = self.runs[1].result
        self._summary = summary

    def __getitem__(self, key: str) -> Any:
        return self._summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._summary)

    def __len__(self) -> int:
        return len(self._summary)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._summary)

    def __repr__(self) -> str:
        return f"Evaluation({self.weights!r}, {self._summary!r})"


def _labelled_dataset(
    data: PathLike, cfg: PretrainedCfg, preprocess: Preprocess, bad_files: BadFiles, limit: int | None,
) -> Any:
    """``data`` (an ImageFolder tree or a file,label CSV) labelled in the weights' class order."""
    from torch.utils.data import Subset  # noqa: PLC0415

    names = cfg.class_names
    if cfg.is_imagenet:  # folders named by WordNet id, or CSV labels in the standard order
        classes: list[str] | None = [wnid for wnid, _ in imagenet_classes()]
    else:
        classes = list(cfg.labels) if cfg.labels else None
    data = Path(data)
    dataset = open_dataset(data, preprocess.eval_transform(), classes=classes, bad_files=bad_files,
                           num_classes=len(names), loader=preprocess.open_image)
    if isinstance(dataset, ImageFolderDataset) and classes is None and len(dataset.classes) != len(names):
        raise InputError(f"{data} has {len(dataset.classes)} class folders; the model has {len(names)} classes")
    if limit is not None:
        if limit < 1:
            raise InputError(f"{option('limit')} must be >= 1, got {limit}")
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset


def evaluate(
    data: PathLike,
    *,
    weights: PathLike | MobileNetV1 | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    calibration: PathLike | None = None,
    threads: int | None = None,
    device: str = "cpu",
    allow_emulation: bool = False,
    exported: PathLike | None = None,
    resize: str | None = None,
    batch_size: int = 50,
    workers: int = 0,
    bad_files: BadFiles = "skip",
    limit: int | None = None,
    progress: bool = True,
    allow_emulated_bf16: bool | None = None,  # the old name of allow_emulation (deprecated)
) -> Evaluation:
    """Top-1 and top-5 accuracy (percent) on ``data``: an ImageFolder tree (folders named by
    WordNet id or class index) or a ``file,label`` CSV (labels 0-999), with the weights' own
    preprocessing. Not fp32: the PyTorch fp32 reference runs too, and its accuracy sits beside under
    ``"fp32"``. An ``exported`` file runs with the preprocessing and labels its metadata gives,
    beside the reference where the weights are known (``weights``, or those the metadata names;
    else the file runs alone, and stderr says why). ``bad_files``: ``skip`` (count unreadable images in
    ``skipped``) or ``stop``. ``limit``: only the first N images. Sharded under torchrun
    (``accuracy.accuracy``). ``progress``: say on stderr what runs, and draw a progress bar."""
    check_batching(batch_size, workers, "workers")  # before any weights are read (or fetched)
    running = run_settings(runtime, precision, calibration, threads, device, allow_emulation, exported, resize,
                           allow_emulated_bf16=allow_emulated_bf16)
    cfg, model, no_reference = _what_runs(running, weights, want_reference=True)
    preprocess = cfg.preprocess.with_resize(resize)
    dataset = _labelled_dataset(data, cfg, preprocess, bad_files, limit)
    if exported is not None:  # the file as it runs, beside the PyTorch model it came from (when known)
        plan = [("exported", "", False)] + ([("fp32", REFERENCE, True)] if model is not None else [])
    elif running.precision == "fp32":
        plan = [("fp32", running.runtime, False)]
    else:
        plan = [(running.precision, running.runtime, False), ("fp32", "torch", True)]
    if no_reference and progress and is_main_process():
        print(f"no fp32 reference for {Path(str(exported)).name}: {no_reference}", file=sys.stderr)
    runs = []
    for run_precision, run_runtime, reference in plan:
        if exported is not None and not reference:
            predict = exported_predictor(exported, cfg, threads)
        else:
            assert model is not None  # _what_runs gives a model wherever the plan holds a PyTorch run
            predict = predictor_for(model, running, preprocess=preprocess, batch_size=batch_size, reference=reference)
        if progress and is_main_process():
            print(f"weights {cfg.name}; {predict.description}", file=sys.stderr)
        result = accuracy(predict, dataset, batch_size=batch_size, num_workers=workers, progress=progress,
                          device=device, description=run_precision)
        runs.append(AccuracyRun(run_precision, run_runtime or predict.runtime, predict.description, result))
    return Evaluation(cfg.name, runs)

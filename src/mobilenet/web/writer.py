"""The web export's writer: a folder a web developer can serve as it is, running the model in the
browser.

``model.onnx`` (the ONNX writer's folded fp32 network, dynamic batch, NCHW), ``labels.json`` (one
name per output), ``preprocess.json`` (``Preprocess.to_dict()`` of the weights' recipe),
``model.json`` (what the network is and what reads it), ``index.html`` and ``classify.js`` (the
page: it preprocesses a photo exactly as ``mobilenet.preprocess`` does and runs the file with
onnxruntime-web), and ``ort/``, onnxruntime-web's WASM build bundled with the package (no CDN).

The folder is checked by running its own page in headless Chromium (``mobilenet.web.export``),
not by a Python runtime: ``RUNTIME`` names what runs it, for messages.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy.formats.onnx import INPUT_NAME, OUTPUT_NAME, export_onnx
from mobilenet.errors import InputError
from mobilenet.files import write_text
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess, preprocess_for
from mobilenet.version import __version__
from mobilenet.web import assets
from mobilenet.weights import pretrained_cfg_of

NAME = "web"
SUFFIXES: tuple[str, ...] = ()  # a folder
PRECISIONS = ("fp32",)
RUNTIME = "onnxruntime-web"
MODEL_FILE = "model.onnx"


def write(
    model: MobileNetV1, path: str | os.PathLike[str], *, precision: str = "fp32",
    calibration: torch.Tensor | None = None, preprocess: Preprocess | None = None,
    labels: list[str] | None = None,
) -> list[Path]:
    """Write the folder ``path`` (created; unverified). ``preprocess`` and ``labels`` default to
    the weights' own (``page_preprocess``, ``page_labels``). Returns the files written."""
    if precision not in PRECISIONS:
        raise InputError(f"web export offers {', '.join(PRECISIONS)}, not {precision}")
    preprocess = preprocess or page_preprocess(model)
    if tuple(preprocess.resolution) != tuple(model.arch_cfg.resolution):
        raise InputError(f"preprocessing resolution {preprocess.resolution} does not match the model's "
                         f"{model.arch_cfg.resolution}")
    if preprocess.interpolation == "nearest" and preprocess.resize != "tf":
        raise InputError("the web page resizes with Pillow's bilinear or bicubic filters or TF's bilinear resize; "
                         "nearest-neighbour preprocessing is not offered in the browser")
    labels = labels or page_labels(model)
    if len(labels) != model.arch_cfg.num_classes:
        raise InputError(f"{len(labels)} labels for {model.arch_cfg.num_classes} classes")
    runtime = assets.onnxruntime_web()
    folder = Path(path)
    (folder / "ort").mkdir(parents=True, exist_ok=True)
    written = [export_onnx(model, folder / MODEL_FILE)]
    for name, content in (("labels.json", labels), ("preprocess.json", preprocess.to_dict()),
                          ("model.json", model_description(model))):
        written.append(write_text(folder / name, json.dumps(content, indent=1) + "\n"))
    written.append(Path(shutil.copyfile(assets.EXPORT_PAGE, folder / "index.html")))
    written.append(Path(shutil.copyfile(assets.CLASSIFIER, folder / "classify.js")))
    written += [Path(shutil.copyfile(runtime / name, folder / "ort" / name)) for name in assets.ORT_FILES]
    return written


def page_preprocess(model: MobileNetV1) -> Preprocess:
    """The recipe the page follows: the weights' own (``preprocess_for``)."""
    return preprocess_for(model)


def page_labels(model: MobileNetV1) -> list[str]:
    """One name per output, as the weights name them (TF's "background" first where it has one)."""
    return list(pretrained_cfg_of(model).label_names)


def model_description(model: MobileNetV1) -> dict[str, Any]:
    """model.json: what the network is, its input and output, and what wrote and runs it."""
    cfg = model.arch_cfg
    return {
        "name": pretrained_cfg_of(model).name,
        "arch": cfg.to_dict(),
        "input": {"name": INPUT_NAME, "shape": ["batch", cfg.in_channels, cfg.height, cfg.width], "layout": "NCHW",
                  "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", cfg.num_classes], "meaning": "logits"},
        "onnxruntime_web": assets.onnxruntime_web_version(),
        "mobilenet": __version__,
    }

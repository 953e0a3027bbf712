"""Photos classified on the server, and the ONNX files the browser classifies with.

Weights are named, never given as paths: the page picks a name from the registry, and anything
else is refused, so the server never opens a path that came from a client. An upload is bytes
only; it goes to a private temporary file, which ``mobilenet.preprocess.load_image`` opens with its
own checks (not an image, truncated, a decompression bomb: refused before decoding).

Classification follows ``mobilenet.inference.classify`` (the weights' own preprocessing, the
predictor ``inference.predictor_for`` builds for the runtime, ``decode_predictions``), with the
model and its predictors kept in memory between requests instead of built per call (and called
from several request threads at once, which every predictor allows: ``mobilenet.deploy.runtimes``). The browser's
file is the project's ONNX export of the same model (``mobilenet.deploy.export``, verified against
PyTorch when it is made), kept in the cache folder.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError, option
from mobilenet.version import __version__

MAX_UPLOAD_BYTES = 20 * 2**20  # a phone's photo is 2-12 MB
MODELS_KEPT = 2
TOP_K = 5


class Classifier:
    """Models loaded once per weights name (the last ``MODELS_KEPT``), predictors once per
    runtime, ONNX files once per weights name and project version."""

    def __init__(self, cache: Path | None = None) -> None:
        self._cache = cache
        self._lock = threading.Lock()  # loading and building one at a time: each takes seconds and memory
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._predictors: dict[tuple[str, str], Any] = {}

    # --- what the page may ask for ---------------------------------------------------------

    @staticmethod
    def weights_options() -> list[dict[str, Any]]:
        """Every registry entry: name, publisher family, α, resolution, published top-1, whether
        it is converted in the cache already (others are fetched on first use)."""
        from mobilenet.weights import describe_pretrained  # noqa: PLC0415

        return [{"name": r["name"], "default": r["default"], "family": r["family"], "alpha": r["alpha"],
                 "resolution": r["resolution"], "top1": (r.get("published") or {}).get("top1"), "cached": r["cached"]}
                for r in describe_pretrained()]

    @staticmethod
    def runtimes() -> list[str]:
        """PyTorch first, then the other installed runtimes ``auto`` would pick from at fp32."""
        from mobilenet.deploy.auto import candidates  # noqa: PLC0415

        return ["torch", *(name for name in candidates("fp32") if name != "torch")]

    @staticmethod
    def default_weights() -> str:
        from mobilenet.weights import DEFAULT  # noqa: PLC0415

        return DEFAULT

    @staticmethod
    def check_weights(weights: str) -> str:
        """``weights`` if it names a registry entry; an ``InputError`` for anything else (a path)."""
        from mobilenet.weights import list_pretrained  # noqa: PLC0415

        if weights not in list_pretrained():
            raise InputError(f"unknown weights {weights!r}: choose one of the published models the page lists")
        return weights

    # --- the server's answer ---------------------------------------------------------------

    def classify(self, upload: bytes, weights: str, runtime: str) -> dict[str, Any]:
        """The top classes of an uploaded photo, and the milliseconds the model took."""
        from mobilenet.weights import decode_predictions, get_pretrained_cfg, pretrained_cfg_of  # noqa: PLC0415

        if runtime not in self.runtimes():
            raise InputError(f"{option('runtime')} must be one of {', '.join(self.runtimes())} here, got {runtime!r}")
        recipe = get_pretrained_cfg(self.check_weights(weights)).preprocess  # the publisher's, decoder included
        image = decode_upload(upload, recipe)  # before the model: a bad upload costs no weights loaded
        model = self.model(weights)
        predictor = self._predictor(weights, runtime, model)
        cfg = pretrained_cfg_of(model)
        x = recipe.eval_transform()(image)[None]
        started = time.perf_counter()
        logits = predictor(x)
        ms = (time.perf_counter() - started) * 1e3
        top = decode_predictions(logits, top=TOP_K, labels=None if cfg.is_imagenet else cfg.class_names)[0]
        return {"weights": cfg.name, "runtime": runtime, "description": predictor.description, "ms": ms,
                "image": {"width": image.width, "height": image.height},
                "top": [{"index": p.index, "label": p.label, "probability": p.score} for p in top]}

    def browser_files(self, weights: str) -> dict[str, Any]:
        """What the page needs to classify with ``weights`` itself: the ONNX file (exported and
        verified on first use), the labels and the preprocessing, as the web export writes them."""
        from mobilenet.web.writer import model_description, page_labels, page_preprocess  # noqa: PLC0415

        model = self.model(weights)
        return {"onnx": self._onnx(weights, model), "labels": page_labels(model),
                "preprocess": page_preprocess(model).to_dict(), "model": model_description(model)}

    # --- kept between requests ---------------------------------------------------------------

    def model(self, weights: str) -> Any:
        from mobilenet.factory import mobilenet_v1  # noqa: PLC0415

        self.check_weights(weights)
        with self._lock:
            if weights not in self._models:
                self._models[weights] = mobilenet_v1(weights=weights).eval()
                while len(self._models) > MODELS_KEPT:
                    gone, _ = self._models.popitem(last=False)
                    self._predictors = {k: v for k, v in self._predictors.items() if k[0] != gone}
            self._models.move_to_end(weights)
            return self._models[weights]

    def _predictor(self, weights: str, runtime: str, model: Any) -> Any:
        from mobilenet.inference import RunSettings, predictor_for  # noqa: PLC0415
        from mobilenet.weights import pretrained_cfg_of  # noqa: PLC0415

        with self._lock:
            key = (weights, runtime)
            if key not in self._predictors:
                preprocess = pretrained_cfg_of(model).preprocess
                self._predictors[key] = predictor_for(model, RunSettings(runtime=runtime), preprocess=preprocess)
            return self._predictors[key]

    def _onnx(self, weights: str, model: Any) -> Path:
        from mobilenet.deploy.export import export  # noqa: PLC0415

        path = self._cache_folder() / f"{weights}-{__version__}.onnx"
        with self._lock:
            if not path.is_file():
                export(model, path)
        return path

    def _cache_folder(self) -> Path:
        if self._cache is not None:
            return self._cache
        from mobilenet.weights import cache_dir  # noqa: PLC0415

        return cache_dir() / "web"


def decode_upload(upload: bytes, recipe: Any) -> Any:
    """An uploaded photo as 8-bit RGB, decoded as the weights' publisher decoded (``Preprocess.open_image``,
    which refuses what ``load_image`` refuses), from a private temporary file; its errors name "the
    upload", not the temporary path."""
    with tempfile.TemporaryDirectory(prefix="mobilenet-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(upload)
        try:
            return recipe.open_image(path)
        except InputError as err:
            raise InputError(str(err).replace(str(path), "the upload")) from None

"""Published MobileNet v1 weights: registry, fetching, converters, our safetensors format.

The weights layer reads and checks; it does not patch models. Every reader returns
``LoadedWeights`` (tensors and the pretrained config, which holds the architecture);
``load_weights`` merges the user's settings into it and refuses contradictions
(``loaded.settle``) before any model exists; the model is then built once
(``model_from_weights``; ``mobilenet.factory`` is the public entry point above both). Saving and
hashing take ``LoadedWeights`` too, so converting a file builds no model at all::

    from mobilenet.weights import load_pretrained, load_weights
    model = load_pretrained()                          # TF-slim float 1.0-224, 1,000 classes
    model = load_pretrained("keras_mobilenet_v1_0.5_160")
    model = load_pretrained("tflite_mobilenet_v1_0.25_224", num_classes=1001)  # keep TF's background
    model = load_pretrained("converted.safetensors")   # written by `mobilenet convert`
    model = load_pretrained("runs/x/last.pt")          # a `mobilenet train` checkpoint
    model = load_pretrained(num_classes=10)            # fresh 10-class classifier, for fine-tuning
    model.pretrained_cfg.preprocess, model.pretrained_cfg.label_names
    weights = load_weights("hub-snapshot-dir/", resolution=192)  # LoadedWeights, nothing built

``read_weights(file)`` / ``convert(file)`` read TFLite, TF GraphDef, Keras (.h5, .weights.h5,
.keras), timm and transformers files, and ``convert_file(sources, out)`` is ``mobilenet convert``
(see ``convert``); ``save_safetensors(weights, path)`` / ``load_safetensors`` write and read our
format (see ``io``; ``weights_of(model)`` for a built model); ``describe_pretrained()`` is
``mobilenet pretrained``; publishers' preprocessing lives in ``publishers``;
``decode_predictions`` turns logits into labels and scores (see ``labels``).
"""

from __future__ import annotations

from mobilenet.weights.convert import FORMATS, convert, convert_file, detect_format, read_weights
from mobilenet.weights.fetch import FetchError, cache_dir, fetch_file, sha256_file
from mobilenet.weights.io import load_safetensors, read_safetensors, save_safetensors, tensors_sha256
from mobilenet.weights.labels import decode_predictions, imagenet_names
from mobilenet.weights.load import (
    describe_pretrained,
    fetch_pretrained,
    load_checkpoint,
    load_pretrained,
    load_weights,
    read_checkpoint,
    read_pretrained,
)
from mobilenet.weights.loaded import (
    FREE_SETTINGS,
    LoadedWeights,
    WeightsMismatch,
    check_tensors,
    model_from_weights,
    pretrained_cfg_of,
    settle,
    weights_of,
)
from mobilenet.weights.registry import (
    DEFAULT,
    FAMILIES,
    REGISTRY,
    PretrainedCfg,
    WeightFile,
    find_pretrained,
    get_pretrained_cfg,
    list_pretrained,
)
from mobilenet.weights.source import WeightFormatError

__all__ = [
    "DEFAULT", "FAMILIES", "FORMATS", "FREE_SETTINGS", "REGISTRY", "FetchError", "LoadedWeights", "PretrainedCfg",
    "WeightFile", "WeightFormatError", "WeightsMismatch", "cache_dir", "check_tensors", "convert", "convert_file",
    "decode_predictions", "describe_pretrained", "detect_format", "fetch_file", "fetch_pretrained",
    "find_pretrained", "get_pretrained_cfg", "imagenet_names", "list_pretrained", "load_checkpoint",
    "load_pretrained", "load_safetensors", "load_weights", "model_from_weights", "pretrained_cfg_of",
    "read_checkpoint", "read_pretrained", "read_safetensors", "read_weights", "save_safetensors", "settle",
    "sha256_file", "tensors_sha256", "weights_of",
]

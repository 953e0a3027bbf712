"""Read Keras MobileNet weight files with h5py (no Keras, no TensorFlow).

Two layouts:

* Legacy HDF5 (Keras' published ``mobilenet_{α}_{size}_tf.h5`` and ``model.save("x.h5")``): one
  group per layer, named as in ``keras.applications.MobileNet``: ``conv1``, ``conv1_bn``,
  ``conv_dw_{i}``, ``conv_dw_{i}_bn``, ``conv_pw_{i}``, ``conv_pw_{i}_bn``, ``conv_preds``;
  a whole-model file nests them under ``model_weights`` and records its input size in its
  ``model_config`` attribute. Dataset names end in ``kernel``
  (TF-Keras 2 adds ``:0``), ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``, ``bias``.
* Keras 3 ``.weights.h5``: ``layers/<name>/vars/<k>``. Keras 3 names the groups by layer type and
  creation order (``conv2d``, ``conv2d_1``, ``depthwise_conv2d``, ``batch_normalization_7`` ...),
  which for this network is network order; ``vars`` are kernel [, bias] and gamma, beta,
  moving_mean, moving_variance.

* Keras 3 ``.keras`` archive (``model.save("x.keras")``): a zip holding ``model.weights.h5`` in
  the layout above and ``config.json``, which also gives the input size.

Kernels are HWIO, depthwise [H, W, C, multiplier]. Keras' MobileNet has 1000 classes (no
background), BatchNorm eps 1e-3, a 'SAME' stem, and pads its other strided convs with
ZeroPadding2D(((0, 1), (0, 1))) then 'valid'. That equals TF's 'SAME' only where each of those
convs sees an even input (inputs whose half is a multiple of 16: 224, 192, 160, 128, ...); at
other sizes Keras' maps are one smaller (200: 12x12 after block 5 where 'SAME' gives 13x13). The
converted model therefore uses ``padding="keras"``, which reproduces Keras at every size.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mobilenet.weights.source import ConvParams, SourceWeights, WeightFormatError

BN_PARTS = ("gamma", "beta", "moving_mean", "moving_variance")
KERAS_BN_EPS = 1e-3


def _h5py():
    try:
        import h5py
    except ImportError:
        raise WeightFormatError("reading Keras .h5 files needs h5py: pip install 'mobilenet[convert]'") from None
    return h5py


def _conv_weight(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    if depthwise:  # [H, W, C, mult] -> (C * mult, 1, H, W)
        return kernel.reshape(kernel.shape[0], kernel.shape[1], -1).transpose(2, 0, 1)[:, None]
    return kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW


def _legacy_layer(group, name: str) -> dict[str, np.ndarray]:
    if name not in group:
        present = ", ".join(list(group)[:6])
        raise WeightFormatError(f"Keras .h5: layer {name!r} not found (layers present: {present} ...)")
    out: dict[str, np.ndarray] = {}

    def visit(path: str, obj) -> None:
        if hasattr(obj, "shape"):
            out[re.sub(r":\d+$", "", path.rsplit("/", 1)[-1])] = np.asarray(obj, dtype=np.float32)

    group[name].visititems(visit)
    return out


def _bn(parts: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, ...]:
    missing = [p for p in BN_PARTS if p not in parts]
    if missing:
        raise WeightFormatError(f"Keras .h5: {name} lacks {', '.join(missing)}")
    return tuple(parts[p] for p in BN_PARTS)


def _read_legacy(group) -> tuple[list[ConvParams], np.ndarray, np.ndarray | None]:
    convs = []
    stem = _legacy_layer(group, "conv1")
    convs.append(ConvParams("conv1/kernel", "conv", _conv_weight(stem["kernel"], False),
                            bn=_bn(_legacy_layer(group, "conv1_bn"), "conv1_bn")))
    blocks = sorted(int(m[1]) for name in group if (m := re.fullmatch(r"conv_dw_(\d+)", name)))
    for i in blocks:
        for kind, depthwise in (("dw", True), ("pw", False)):
            name = f"conv_{kind}_{i}"
            parts = _legacy_layer(group, name)
            key = "depthwise_kernel" if depthwise and "depthwise_kernel" in parts else "kernel"
            if key not in parts:
                raise WeightFormatError(f"Keras .h5: {name} has no kernel")
            convs.append(ConvParams(f"{name}/{key}", "depthwise" if depthwise else "conv",
                                    _conv_weight(parts[key], depthwise),
                                    bn=_bn(_legacy_layer(group, f"{name}_bn"), f"{name}_bn")))
    if "conv_preds" not in group:
        raise WeightFormatError("Keras .h5 has no 'conv_preds' layer: a file saved with include_top=False "
                                "has no classifier to convert")
    preds = _legacy_layer(group, "conv_preds")
    return convs, preds["kernel"], preds.get("bias")


def _read_keras3(layers) -> tuple[list[ConvParams], np.ndarray, np.ndarray | None]:
    def numbered(prefix: str) -> list[str]:
        found = [(int(m[1] or 0), name) for name in layers if (m := re.fullmatch(prefix + r"(?:_(\d+))?", name))]
        return [name for _, name in sorted(found)]

    def variables(name: str) -> list[np.ndarray]:
        group = layers[name].get("vars", {})
        return [np.asarray(group[k], dtype=np.float32) for k in sorted(group, key=int)]

    convs_2d, depthwise, norms = numbered("conv2d"), numbered("depthwise_conv2d"), numbered("batch_normalization")
    if not convs_2d or len(norms) != len(convs_2d) - 1 + len(depthwise):
        raise WeightFormatError(
            f"Keras .weights.h5: expected MobileNet's conv2d / depthwise_conv2d / batch_normalization layers, found "
            f"{len(convs_2d)} / {len(depthwise)} / {len(norms)}"
        )
    # Creation order: conv2d (stem), then per block depthwise_conv2d_i, conv2d_{i+1}; each followed by a BN.
    order = [("conv", convs_2d[0])]
    for i, dw in enumerate(depthwise):
        order += [("depthwise", dw), ("conv", convs_2d[i + 1])]
    convs = []
    for (kind, name), bn_name in zip(order, norms):
        kernel = variables(name)[0]
        bn = variables(bn_name)
        if len(bn) != 4:
            raise WeightFormatError(f"Keras .weights.h5: {bn_name} has {len(bn)} variables, expected 4")
        convs.append(ConvParams(f"layers/{name}/vars/0", kind, _conv_weight(kernel, kind == "depthwise"),
                                bn=(bn[0], bn[1], bn[2], bn[3])))
    head = variables(convs_2d[len(depthwise) + 1]) if len(convs_2d) > len(depthwise) + 1 else []
    if not head:
        raise WeightFormatError("Keras .weights.h5 has no classifier conv (saved with include_top=False?)")
    return convs, head[0], head[1] if len(head) > 1 else None


KERAS_ARCHIVE_WEIGHTS = "model.weights.h5"
# What reading a member of a damaged zip raises: a bad CRC (BadZipFile), a bad deflate stream
# (zlib.error), a member cut short (EOFError), a damaged compression method (NotImplementedError).
ZIP_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


def is_keras_archive(path: str | os.PathLike[str]) -> bool:
    """A Keras 3 ``.keras`` file: a zip with ``model.weights.h5`` inside."""
    try:
        with zipfile.ZipFile(path) as z:
            return KERAS_ARCHIVE_WEIGHTS in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _config_resolution(config: object) -> tuple[int, int] | None:
    """The input size a Keras model config records (its InputLayer's batch shape), if it records
    one: the ``config.json`` of a ``.keras`` archive, or the ``model_config`` attribute of a
    whole-model ``.h5`` (``model.save("x.h5")``)."""
    try:
        if isinstance(config, (bytes, str)):
            config = json.loads(config)
        for layer in config["config"]["layers"]:  # type: ignore[index]
            if layer.get("class_name") == "InputLayer":
                shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
                if shape and len(shape) == 4 and all(isinstance(s, int) for s in shape[1:3]):
                    return int(shape[1]), int(shape[2])
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
    return None


def read_keras(path: str | os.PathLike[str]) -> SourceWeights:
    path = Path(path)
    if zipfile.is_zipfile(path):
        if not is_keras_archive(path):
            raise WeightFormatError(f"{path.name}: a zip file without {KERAS_ARCHIVE_WEIGHTS}: not a .keras archive")
        with zipfile.ZipFile(path) as z, tempfile.TemporaryDirectory(prefix="mobilenet-keras-") as tmp:
            try:
                resolution = _config_resolution(z.read("config.json") if "config.json" in z.namelist() else None)
                inner = Path(z.extract(KERAS_ARCHIVE_WEIGHTS, tmp))
            except ZIP_DAMAGE as err:  # the directory read, a member did not: a bad CRC or deflate stream
                raise WeightFormatError(f"{path.name}: a damaged .keras archive ({err}); "
                                        "download or save it again") from None
            src = _read_h5(inner, f"{path.name} ({KERAS_ARCHIVE_WEIGHTS})")
        src.resolution = resolution
        src.format = "keras-archive"
        return src
    return _read_h5(path)


def _read_h5(path: Path, name: str | None = None) -> SourceWeights:
    """``name``: the file as the user knows it (an archive's member is named by its archive)."""
    h5py = _h5py()
    name = name or path.name
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise WeightFormatError(f"{name}: not a readable HDF5 file ({err})") from None
    try:
        with f:
            if "layers" in f and "conv1" not in f:
                convs, kernel, bias = _read_keras3(f["layers"])
                fmt = "keras3"
            else:
                group = f.get("model_weights", f)
                convs, kernel, bias = _read_legacy(group)
                fmt = "keras-h5"
            resolution = _config_resolution(f.attrs.get("model_config"))  # a whole-model file records it
    except (OSError, RuntimeError) as err:
        # h5py opens a file by its superblock alone; damage in a group, heap or chunk surfaces as
        # OSError or RuntimeError on the read that reaches it. (WeightFormatError is neither.)
        raise WeightFormatError(f"{name}: a damaged HDF5 file ({err}); download or save it again") from None
    if kernel.ndim != 4 or kernel.shape[:2] != (1, 1):
        raise WeightFormatError(f"Keras classifier kernel has shape {kernel.shape}, expected (1, 1, features, classes)")
    return SourceWeights(
        format=fmt,
        convs=convs,
        classifier_weight=kernel[0, 0].T,
        classifier_bias=bias,
        classifier_name="conv_preds/kernel",
        folded=False,
        bn_eps=KERAS_BN_EPS,
        resolution=resolution,
        arch_hints={"padding": "keras"},
    )

"""The pretrained weights this project knows, in the manner of timm's pretrained configs.

Each entry says what network the weights need (``arch``: ``ArchConfig`` settings), how to feed it
(``preprocess``), what its outputs mean (``label_set``), where the file comes from (``files``:
name, SHA-256 and sources, see ``fetch``) and what accuracy its publisher measured (ImageNet
validation, 50,000 images).

The default is TF-slim's float MobileNet_v1_1.0_224. Its first source is the PyPI sdist of
``nudity==0.2.3``, which carries TF-slim's frozen ImageNet graph (plus a 2-class transfer head that
the converter ignores): reachable by every machine that can ``pip install``, pinned by checksum.
The TensorFlow release archive is the fallback for machines without a package index.

The TFLite entries are TensorFlow's own files (float and quantization-aware-trained uint8). Their
checksums are those of the copies the team verified; the URLs are where the publishers host them
(not reachable from the build machines, so that path is untested here: a hosted file that differs
from the pinned copy is refused with a checksum error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.preprocess import Preprocess
from mobilenet.weights.labels import IMAGENET_1001, label_names

DEFAULT = "tf_mobilenet_v1_1.0_224"
TF_RELEASE = "https://storage.googleapis.com/download.tensorflow.org/models"
CORAL = "https://github.com/google-coral/test_data/raw/master"
TF_SLIM_TABLE = "TF-slim mobilenet_v1.md (ImageNet val, 50,000 images, single central crop)"
TF_QUANT_TABLE = "TF contrib/quantize README, 8-bit column (top-5 not published)"


@dataclass(frozen=True)
class WeightFile:
    filename: str
    sha256: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PretrainedCfg:
    """What travels with a set of weights: ``model.pretrained_cfg`` on every loaded model."""

    name: str
    arch: dict[str, Any]
    preprocess: Preprocess
    label_set: str
    files: tuple[WeightFile, ...] = ()
    format: str = ""
    published: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    labels: tuple[str, ...] | None = None  # explicit class names (fine-tuned models), else from label_set
    tensors_sha256: str | None = None  # digest of the converted weights (io.tensors_sha256), source-independent

    @property
    def arch_config(self) -> ArchConfig:
        return ArchConfig.from_dict(self.arch)

    @property
    def num_classes(self) -> int:
        return int(self.arch.get("num_classes", ArchConfig().num_classes))

    @property
    def label_names(self) -> list[str]:
        return list(self.labels) if self.labels is not None else label_names(self.label_set, self.num_classes)

    @property
    def has_background_class(self) -> bool:
        """TF's 1001-class models: index 0 is "background", the ImageNet classes follow."""
        return self.label_set == IMAGENET_1001 and self.num_classes == 1001


def _tf_arch(alpha: float, resolution: int) -> dict[str, Any]:
    return ArchConfig(alpha=alpha, resolution=resolution, num_classes=1001, padding="tf", bn_eps=1e-3).to_dict()


def _tflite_entry(stem: str, alpha: float, resolution: int, sha256: str, *, quant: bool, published: dict[str, Any],
                  url: str) -> PretrainedCfg:
    # Quantised TFLite inputs are uint8 with scale 1/128, zero point 128: (x - 128) / 128.
    mean = std = (128 / 255,) * 3 if quant else (0.5,) * 3
    return PretrainedCfg(
        name=f"tflite_{stem}",
        arch=_tf_arch(alpha, resolution),
        preprocess=Preprocess(resolution=resolution, mean=mean, std=std),
        label_set=IMAGENET_1001,
        files=(WeightFile(f"{stem}.tflite", sha256, (url,)),),
        format="tflite",
        published=published,
        description=(
            f"TensorFlow's uint8 quantization-aware-trained TFLite MobileNet v1 {alpha:g}-{resolution}, dequantised"
            if quant else f"TensorFlow's float TFLite MobileNet v1 {alpha:g}-{resolution} (BatchNorm folded)"
        ),
    )


REGISTRY: dict[str, PretrainedCfg] = {
    DEFAULT: PretrainedCfg(
        name=DEFAULT,
        arch=_tf_arch(1.0, 224),
        preprocess=Preprocess(resolution=224),
        label_set=IMAGENET_1001,
        files=(
            WeightFile(
                "mobilenet_v1_1.0_224_retrained_graph.pb",
                "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735",
                (
                    "pypi:nudity==0.2.3#nudity/files/retrained_graph.pb",
                    # TF's archive of the same ImageNet graph, without the transfer head: a different
                    # file, so verified by its converted tensors (tensors_sha256) instead.
                    f"unpinned:{TF_RELEASE}/mobilenet_v1_1.0_224_frozen.tgz#frozen_graph.pb",
                ),
            ),
        ),
        format="tf-graphdef",
        tensors_sha256="3f2cf7e97ba1a284d491fcc754e1377fe892be60c023f261a37c1e59129618b3",
        published={"top1": 70.9, "top5": 89.9, "source": TF_SLIM_TABLE},
        description="TF-slim's float MobileNet_v1_1.0_224 (frozen GraphDef, BatchNorm unfolded, eps 1e-3)",
    ),
}
for _entry in (
    _tflite_entry("mobilenet_v1_0.25_224", 0.25, 224,
                  "446ec673881cd46371a8726075b714194ada39d144762260cb76d15318597df7", quant=False,
                  published={"top1": 49.8, "top5": 74.2, "source": TF_SLIM_TABLE},
                  url=f"{TF_RELEASE}/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_224.tgz#mobilenet_v1_0.25_224.tflite"),
    _tflite_entry("mobilenet_v1_0.25_224_quant", 0.25, 224,
                  "e480eb15572f86d3d5f1be6e83e35b3c7d509ab2bcec353707d1f614e14edca2", quant=True,
                  published={"top1": 48.2, "source": TF_QUANT_TABLE},
                  url=f"{TF_RELEASE}/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_224_quant.tgz"
                      "#mobilenet_v1_0.25_224_quant.tflite"),
    _tflite_entry("mobilenet_v1_0.25_128_quant", 0.25, 128,
                  "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785", quant=True,
                  published={"top1": 39.9, "source": TF_QUANT_TABLE},
                  url=f"{CORAL}/mobilenet_v1_0.25_128_quant.tflite"),
    _tflite_entry("mobilenet_v1_0.5_160_quant", 0.5, 160,
                  "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43", quant=True,
                  published={"top1": 57.7, "source": TF_QUANT_TABLE},
                  url=f"{CORAL}/mobilenet_v1_0.5_160_quant.tflite"),
    _tflite_entry("mobilenet_v1_0.75_192_quant", 0.75, 192,
                  "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a", quant=True,
                  published={"top1": 66.2, "source": TF_QUANT_TABLE},
                  url=f"{CORAL}/mobilenet_v1_0.75_192_quant.tflite"),
):
    REGISTRY[_entry.name] = _entry

# TF's uint8 1.0-224, as Coral publishes it: the conv body (with the average pool) and the 1x1
# logits conv in two files that run one after the other.
REGISTRY["tflite_mobilenet_v1_1.0_224_quant"] = PretrainedCfg(
    name="tflite_mobilenet_v1_1.0_224_quant",
    arch=_tf_arch(1.0, 224),
    preprocess=Preprocess(resolution=224, mean=(128 / 255,) * 3, std=(128 / 255,) * 3),
    label_set=IMAGENET_1001,
    files=(
        WeightFile("mobilenet_v1_1.0_224_quant_body.tflite",
                   "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
                   (f"{CORAL}/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",)),
        WeightFile("mobilenet_v1_1.0_224_quant_head.tflite",
                   "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286",
                   (f"{CORAL}/tools/mobilenet_quant_v1_224_head_layers.tflite",)),
    ),
    format="tflite",
    published={"top1": 69.7, "source": TF_QUANT_TABLE},
    description="TensorFlow's uint8 quantization-aware-trained MobileNet v1 1.0-224 (body + head), dequantised",
)


def list_pretrained() -> list[str]:
    return sorted(REGISTRY)


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown pretrained weights {name!r}; known: {', '.join(list_pretrained())}") from None

"""Every published MobileNet v1, in the manner of timm's pretrained configs.

Each entry says what network the weights need (``arch_cfg``), how to feed it (``preprocess``, from
``publishers``), what its outputs mean (``label_set``), where the files come from (``files``:
name, SHA-256 and sources, see ``fetch``), who published it (``family``, ``publisher``) and what
accuracy its publisher measured (ImageNet validation, 50,000 images).

=============  ====  ===========================================================================
family         n     publisher's source
=============  ====  ===========================================================================
``tf``         16+1  TF-slim float, ``mobilenet_v1_2018_08_02/mobilenet_v1_{α}_{size}.tgz`` (the
                     ``.tflite`` inside, BatchNorm folded); and the default, the float 1.0-224
                     frozen graph (BatchNorm unfolded) first from PyPI, then TF's archive
``tf-quant``   16    TF's quantization-aware-trained uint8 ``..._quant.tgz`` (dequantised)
``keras``      16    Keras applications ``mobilenet_{α}_{size}_tf.h5`` (BASE_WEIGHT_PATH below)
``timm``       2     Hugging Face Hub ``timm/mobilenetv1_{100,125}.ra4_e3600_r224_in1k``
``hf``         2     Hugging Face Hub ``google/mobilenet_v1_{1.0_224,0.75_192}`` (transformers)
=============  ====  ===========================================================================

The default is TF-slim's float MobileNet_v1_1.0_224. Online, its first source is TF's own release
archive; the PyPI sdist of ``nudity==0.2.3``, which carries the same frozen ImageNet graph (plus a
2-class transfer head the converter ignores), is the fallback every machine that can
``pip install`` reaches. Both are verified by the SHA-256 of the converted tensors
(``tensors_sha256``), taken from the PyPI copy.

Checksums: seven TF files (the TFLite models in ``shared/assets/tflite``) and the PyPI graph are
pinned by the SHA-256 the team took of real copies. No publisher lists checksums for the others and
none of their hosts is reachable from the build machines, so those entries say so
(``sha256=None``, ``verified`` False): what is downloaded is accepted by its converted tensors'
shapes (against ``mobilenet.arch``) and statistics (``loaded.check_tensors``), not by checksum.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError
from mobilenet.preprocess import Preprocess
from mobilenet.weights.labels import CUSTOM, IMAGENET_1000, IMAGENET_1001, label_names
from mobilenet.weights.publishers import tf_preprocess, timm_preprocess, transformers_preprocess

DEFAULT = "tf_mobilenet_v1_1.0_224"
TF_RELEASE = "https://storage.googleapis.com/download.tensorflow.org/models"
TF_RELEASE_DIR = f"{TF_RELEASE}/mobilenet_v1_2018_08_02"
KERAS_BASE_WEIGHT_PATH = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/"
CORAL = "https://github.com/google-coral/test_data/raw/master"
TF_SLIM_TABLE = "TF-slim mobilenet_v1.md, 2018_08_02 release (ImageNet val, 50,000 images, central crop)"
TIMM_TABLE = "timm README, MobileNet-V1 baseline challenge (ImageNet val at 224, timm's eval transform)"
KERAS_NOTE = "Keras converted TF-slim's checkpoints; figures are TF-slim's (mobilenet_v1.md)"
HF_NOTE = "transformers converted TF-slim's checkpoints; figures are TF-slim's (mobilenet_v1.md)"
ALPHAS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
RESOLUTIONS: tuple[int, ...] = (128, 160, 192, 224)
FAMILIES: tuple[str, ...] = ("tf", "tf-quant", "keras", "timm", "hf")
UNVERIFIED = "no checksum published or verifiable from here: checked by tensor shapes and statistics on load"

# TF-slim's mobilenet_v1.md, 2018_08_02 release: (α, size) -> (float top-1, top-5, quant top-1, top-5).
TF_ACCURACY: dict[tuple[float, int], tuple[float, float, float, float]] = {
    (1.0, 224): (70.9, 89.9, 70.1, 88.9), (1.0, 192): (70.0, 89.2, 69.2, 88.3),
    (1.0, 160): (68.0, 87.7, 67.2, 86.7), (1.0, 128): (65.2, 85.8, 63.4, 84.2),
    (0.75, 224): (68.4, 88.2, 66.8, 87.0), (0.75, 192): (67.2, 87.3, 66.1, 86.4),
    (0.75, 160): (65.3, 86.0, 62.3, 83.8), (0.75, 128): (62.1, 83.9, 55.8, 78.8),
    (0.5, 224): (63.3, 84.9, 60.7, 83.2), (0.5, 192): (61.7, 83.6, 60.0, 82.2),
    (0.5, 160): (59.1, 81.9, 57.7, 80.4), (0.5, 128): (56.3, 79.4, 54.5, 77.7),
    (0.25, 224): (49.8, 74.2, 48.0, 72.8), (0.25, 192): (47.7, 72.3, 46.0, 71.2),
    (0.25, 160): (45.5, 70.3, 43.4, 68.5), (0.25, 128): (41.5, 66.3, 39.5, 64.4),
}
# SHA-256 of the real copies in shared/assets/tflite (the same files as TF's archives hold, or Coral's).
TFLITE_SHA256: dict[str, str] = {
    "mobilenet_v1_0.25_224": "446ec673881cd46371a8726075b714194ada39d144762260cb76d15318597df7",
    "mobilenet_v1_0.25_224_quant": "e480eb15572f86d3d5f1be6e83e35b3c7d509ab2bcec353707d1f614e14edca2",
    "mobilenet_v1_0.25_128_quant": "cb273c23ee76374b05b9583177e28aa19744858a7679c56a250e83d0333da785",
    "mobilenet_v1_0.5_160_quant": "3cc6d2ca460abd2e0f699a6d0d2550c6b61c6e3b0e27a3616e384ea74cb86f43",
    "mobilenet_v1_0.75_192_quant": "41daeb22fdcf947e0e5ec32373aa9df7c31f3ef45dbd0ef7b5940fbce3c20f6a",
}
CORAL_COPIES = ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant")


@dataclass(frozen=True)
class WeightFile:
    """One file of an entry. ``sha256`` None: no checksum could be verified (see the module
    docstring); the file is then accepted by what its tensors look like."""

    filename: str
    sha256: str | None
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PretrainedCfg:
    """What travels with a set of weights: ``model.pretrained_cfg`` on every loaded model.
    ``arch_cfg`` is the network these weights are loaded into (for a registry entry: as the
    publisher's file holds it, TF's 1001 classes included)."""

    name: str
    arch_cfg: ArchConfig
    preprocess: Preprocess
    label_set: str
    files: tuple[WeightFile, ...] = ()
    format: str = ""
    published: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    labels: tuple[str, ...] | None = None  # explicit class names (fine-tuned models), else from label_set
    tensors_sha256: str | None = None  # digest of the converted weights (io.tensors_sha256), source-independent
    family: str = ""  # one of FAMILIES for registry entries: who published the weights
    publisher: str = ""  # the publisher's own source: a release URL or a hub repo id
    convert_settings: dict[str, Any] = field(default_factory=dict)  # what the converter needs told

    def with_fresh_classifier(self, arch: ArchConfig) -> PretrainedCfg:
        """What travels with these weights once their classifier is replaced by a fresh one of
        ``arch.num_classes`` (fine-tuning: ``mobilenet_v1(weights=..., num_classes=N)`` and
        ``MobileNetV1.reset_classifier``): the name and preprocessing stay, the classes do not (a
        custom label set, no names), and neither does the accuracy published for the old classifier."""
        return replace(self, arch_cfg=arch, label_set=CUSTOM, labels=None, published={})

    @property
    def verified(self) -> bool:
        """Whether every file (or the converted tensors) is pinned by a checksum."""
        return self.tensors_sha256 is not None or (bool(self.files) and all(f.sha256 for f in self.files))

    @property
    def num_classes(self) -> int:
        return self.arch_cfg.num_classes

    @property
    def label_names(self) -> list[str]:
        """One name per output, TF's "background" included."""
        return list(self.labels) if self.labels is not None else label_names(self.label_set, self.num_classes)

    @property
    def has_background_class(self) -> bool:
        """TF's 1001-class models: index 0 is "background", the ImageNet classes follow."""
        return self.label_set == IMAGENET_1001 and self.num_classes == 1001

    @property
    def class_names(self) -> list[str]:
        """The real classes, in the order of the logits once TF's background logit is dropped."""
        names = self.label_names
        return names[1:] if self.has_background_class else names

    @property
    def is_imagenet(self) -> bool:
        """The 1,000 ImageNet classes in the standard order (after dropping TF's background)."""
        return self.label_set in (IMAGENET_1000, IMAGENET_1001) and len(self.class_names) == 1000


def _tf_arch(alpha: float, resolution: int) -> ArchConfig:
    return ArchConfig(alpha=alpha, resolution=resolution, num_classes=1001, padding="tf", bn_eps=1e-3)


def _stem(alpha: float, resolution: int) -> str:
    return f"mobilenet_v1_{float(alpha)!r}_{resolution}"


def _tf_entry(alpha: float, resolution: int, *, quant: bool) -> PretrainedCfg:
    stem = _stem(alpha, resolution) + ("_quant" if quant else "")
    top1, top5, qtop1, qtop5 = TF_ACCURACY[(alpha, resolution)]
    archive = f"{TF_RELEASE_DIR}/{stem}.tgz"
    sources = [f"{archive}#{stem}.tflite"]
    if stem in CORAL_COPIES:
        sources.append(f"{CORAL}/{stem}.tflite")
    sha = TFLITE_SHA256.get(stem)
    return PretrainedCfg(
        name=f"tflite_{stem}",
        arch_cfg=_tf_arch(alpha, resolution),
        # Quantised TFLite inputs are uint8 with scale 1/128, zero point 128: (x - 128) / 128.
        preprocess=tf_preprocess(resolution, (1 / 128, 128) if quant else None),
        label_set=IMAGENET_1001,
        files=(WeightFile(f"{stem}.tflite", sha, tuple(sources)),),
        format="tflite",
        published={"top1": qtop1, "top5": qtop5, "source": TF_SLIM_TABLE} if quant
        else {"top1": top1, "top5": top5, "source": TF_SLIM_TABLE},
        description=(
            f"TensorFlow's uint8 quantization-aware-trained MobileNet v1 {alpha:g}-{resolution} (TFLite), dequantised"
            if quant else f"TF-slim's float MobileNet v1 {alpha:g}-{resolution} (TFLite, BatchNorm folded)"
        ) + ("" if sha else f"; {UNVERIFIED}"),
        family="tf-quant" if quant else "tf",
        publisher=archive,
    )


def _keras_entry(alpha: float, resolution: int) -> PretrainedCfg:
    alpha_text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    filename = f"mobilenet_{alpha_text}_{resolution}_tf.h5"
    top1, top5, _, _ = TF_ACCURACY[(alpha, resolution)]
    return PretrainedCfg(
        name=f"keras_{_stem(alpha, resolution)}",
        arch_cfg=ArchConfig(alpha=alpha, resolution=resolution, num_classes=1000, padding="keras", bn_eps=1e-3),
        preprocess=tf_preprocess(resolution),  # Keras' weights are TF-slim's
        label_set=IMAGENET_1000,
        files=(WeightFile(filename, None, (KERAS_BASE_WEIGHT_PATH + filename,)),),
        format="keras",
        published={"top1": top1, "top5": top5, "source": KERAS_NOTE},
        description=f"Keras applications MobileNet(alpha={alpha:g}) {resolution}x{resolution} ImageNet weights (.h5, "
        f"Keras' own zero padding); {UNVERIFIED}",
        family="keras",
        publisher=KERAS_BASE_WEIGHT_PATH + filename,
        convert_settings={"resolution": resolution},
    )


def _timm_entry(width: int, alpha: float, top1: float, top5: float) -> PretrainedCfg:
    repo = f"timm/mobilenetv1_{width}.ra4_e3600_r224_in1k"
    return PretrainedCfg(
        name=f"timm_mobilenetv1_{width}",
        arch_cfg=ArchConfig(alpha=alpha, resolution=224, num_classes=1000, padding="symmetric", rounding="timm",
                            bn_eps=1e-5),
        preprocess=timm_preprocess(224, alpha),
        label_set=IMAGENET_1000,
        files=(WeightFile(f"timm-mobilenetv1_{width}.ra4_e3600_r224_in1k.safetensors", None,
                          (f"hf:{repo}#model.safetensors",)),),
        format="timm",
        published={"top1": top1, "top5": top5, "source": TIMM_TABLE},
        description=f"timm mobilenetv1_{width} (ra4 recipe, 2024), symmetric padding, BatchNorm eps 1e-5; {UNVERIFIED}",
        family="timm",
        publisher=f"hf:{repo}",
        convert_settings={"resolution": 224},
    )


def _hf_entry(alpha: float, resolution: int) -> PretrainedCfg:
    repo = f"google/{_stem(alpha, resolution)}"
    top1, top5, _, _ = TF_ACCURACY[(alpha, resolution)]
    return PretrainedCfg(
        name=f"hf_{_stem(alpha, resolution)}",
        arch_cfg=_tf_arch(alpha, resolution),
        preprocess=transformers_preprocess(resolution),
        label_set=IMAGENET_1001,
        files=(WeightFile(f"hf-{repo.replace('/', '--')}.weights", None,
                          (f"hf:{repo}#model.safetensors", f"hf:{repo}#pytorch_model.bin")),),
        format="transformers",
        published={"top1": top1, "top5": top5, "source": HF_NOTE},
        description=f"transformers MobileNetV1ForImageClassification {repo} (tf_padding, 1001 classes); {UNVERIFIED}",
        family="hf",
        publisher=f"hf:{repo}",
        convert_settings={"resolution": resolution, "padding": "tf"},
    )


REGISTRY: dict[str, PretrainedCfg] = {
    DEFAULT: PretrainedCfg(
        name=DEFAULT,
        arch_cfg=_tf_arch(1.0, 224),
        preprocess=tf_preprocess(224),
        label_set=IMAGENET_1001,
        files=(
            WeightFile(
                "mobilenet_v1_1.0_224_retrained_graph.pb",
                "3b90af536f810f5f75e9f6d431bc2e8a3c4fc2ff4f693aa0dd4ae429816f8735",
                (
                    # TF's archive of the ImageNet graph, without the transfer head: a different file
                    # from the PyPI copy, so verified by its converted tensors (tensors_sha256).
                    f"unpinned:{TF_RELEASE}/mobilenet_v1_1.0_224_frozen.tgz#frozen_graph.pb",
                    "pypi:nudity==0.2.3#nudity/files/retrained_graph.pb",
                ),
            ),
        ),
        format="tf-graphdef",
        tensors_sha256="3f2cf7e97ba1a284d491fcc754e1377fe892be60c023f261a37c1e59129618b3",
        published={"top1": 70.9, "top5": 89.9, "source": TF_SLIM_TABLE},
        description="TF-slim's float MobileNet_v1_1.0_224 (frozen GraphDef, BatchNorm unfolded, eps 1e-3)",
        family="tf",
        publisher=f"{TF_RELEASE}/mobilenet_v1_1.0_224_frozen.tgz",
    ),
}
for _alpha in ALPHAS:
    for _size in RESOLUTIONS:
        for _entry in (_tf_entry(_alpha, _size, quant=False), _tf_entry(_alpha, _size, quant=True),
                       _keras_entry(_alpha, _size)):
            REGISTRY[_entry.name] = _entry

# TF's uint8 1.0-224 as Coral republishes it: the conv body (with the average pool) and the 1x1
# logits conv in two files that run one after the other, pinned by checksum. (TF's archive holds
# the same model as one .tflite, which `mobilenet convert` reads too.)
_body = REGISTRY["tflite_mobilenet_v1_1.0_224_quant"]
REGISTRY[_body.name] = PretrainedCfg(
    **{**_body.__dict__, "files": (
        WeightFile("mobilenet_v1_1.0_224_quant_body.tflite",
                   "f409ef4f73fcbb9667841965623c5c8524aac33d41b9bf5f3667161fb4a76319",
                   (f"{CORAL}/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",)),
        WeightFile("mobilenet_v1_1.0_224_quant_head.tflite",
                   "65a88984b258c6f3c99d7573acac8cf85bd747293d83d51fafc1c2fb6d632286",
                   (f"{CORAL}/tools/mobilenet_quant_v1_224_head_layers.tflite",)),
    ), "description": "TensorFlow's uint8 quantization-aware-trained MobileNet v1 1.0-224 (TFLite, as Coral "
       "publishes it: conv body + logits head), dequantised"},
)
for _entry in (_timm_entry(100, 1.0, 75.382, 92.312), _timm_entry(125, 1.25, 76.924, 93.234),
               _hf_entry(1.0, 224), _hf_entry(0.75, 192)):
    REGISTRY[_entry.name] = _entry


def list_pretrained(family: str | None = None) -> list[str]:
    return sorted(name for name, entry in REGISTRY.items() if family is None or entry.family == family)


def find_pretrained(alpha: float | None = None, resolution: int | None = None, source: str | None = None,
                    ) -> PretrainedCfg:
    """The published model for (α, resolution) from one publisher (``source``: one of FAMILIES;
    default ``tf``, TF-slim's float models). A resolution nobody published at takes the α's
    224 model (the weights work at any size; the model is then built at the size asked for), as
    Keras does."""
    family = source or "tf"
    if family not in FAMILIES:
        raise InputError(f"source must be one of {', '.join(FAMILIES)}, got {source!r}")
    alpha = 1.0 if alpha is None else float(alpha)
    size = 224 if resolution is None else resolution
    candidates = [e for e in REGISTRY.values() if e.family == family and e.arch_cfg.alpha == alpha]
    if not candidates:
        have = sorted({e.arch_cfg.alpha for e in REGISTRY.values() if e.family == family})
        raise InputError(f"no {family} weights published for alpha={alpha:g}; {family} has alpha "
                         f"{', '.join(f'{a:g}' for a in have)}")
    if family == "tf" and alpha == 1.0 and size == 224:
        return REGISTRY[DEFAULT]
    exact = [e for e in candidates if e.arch_cfg.resolution == (size, size)]
    if exact:
        return exact[0]
    fallback = [e for e in candidates if e.arch_cfg.resolution == (224, 224)] or candidates
    return REGISTRY[DEFAULT] if family == "tf" and alpha == 1.0 else sorted(fallback, key=lambda e: e.name)[0]


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown pretrained weights {name!r}; known: {', '.join(list_pretrained())}") from None

"""torch.hub entry points: ``torch.hub.load("path/to/checkout", "mobilenet_v1", source="local", pretrained=True)``.

The weights come from this project's registry (``mobilenet.weights``), fetched and converted into
``$MOBILENET_CACHE`` on first use, not from torch.hub's own cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

dependencies = ["torch", "numpy", "PIL", "safetensors"]

# A checkout that has not been pip-installed: make its src/ importable.
_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from mobilenet.model import MobileNetV1  # noqa: E402


def mobilenet_v1(pretrained: bool = False, weights: str | None = None, **kwargs) -> MobileNetV1:
    """MobileNet v1 (``mobilenet.factory.mobilenet_v1``). ``pretrained=True``: the published
    ImageNet model for ``alpha`` / ``resolution`` (TF-slim's float 1.0-224 by default; ``source=``
    "tf", "tf-quant", "keras", "timm" or "hf"), 1,000 classes (``num_classes=1001`` keeps TF's
    background). ``weights``: any name of ``mobilenet.weights.list_pretrained()`` or a weights
    file. Other keyword arguments are ``ArchConfig`` fields (alpha, resolution, num_classes, ...)."""
    from mobilenet.factory import mobilenet_v1 as build

    return build(pretrained=pretrained, weights=weights, **kwargs)


def mobilenet_v1_025_224_tflite(**kwargs) -> MobileNetV1:
    """TensorFlow's float TFLite MobileNet v1 0.25-224, converted (BatchNorm folded)."""
    return mobilenet_v1(weights="tflite_mobilenet_v1_0.25_224", **kwargs)

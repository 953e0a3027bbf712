"""MobileNet v1 and depthwise separable convolutions: exact costs, the PyTorch model, the published
weights, training and deployment. ``mobilenet.arch`` and ``mobilenet.cost`` import without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mobilenet.arch import ArchConfig
from mobilenet.lazy import submodule
from mobilenet.version import __version__

__all__ = [
    "ArchConfig", "MobileNetV1", "__version__", "classify", "decode_predictions", "evaluate", "mobilenet_v1",
    "optimize",
]

if TYPE_CHECKING:
    from mobilenet.factory import mobilenet_v1
    from mobilenet.inference import classify, evaluate
    from mobilenet.model import MobileNetV1
    from mobilenet.optimized import optimize
    from mobilenet.weights.labels import decode_predictions


def __getattr__(name: str) -> Any:
    # The model needs torch; import it only when asked so `import mobilenet.cost` stays torch-free.
    if name == "MobileNetV1":
        from mobilenet.model import MobileNetV1

        return MobileNetV1
    if name == "mobilenet_v1":
        from mobilenet.factory import mobilenet_v1

        return mobilenet_v1
    if name in ("classify", "evaluate"):
        import mobilenet.inference

        return getattr(mobilenet.inference, name)
    if name == "optimize":
        from mobilenet.optimized import optimize

        return optimize
    if name == "decode_predictions":
        from mobilenet.weights.labels import decode_predictions

        return decode_predictions
    return submodule(__name__, name)  # mobilenet.latency, mobilenet.deploy...: imported when first named

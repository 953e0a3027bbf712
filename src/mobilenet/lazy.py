"""Submodules imported when first named, so that ``import mobilenet`` and then
``mobilenet.latency.predict(...)`` or ``mobilenet.deploy.export.export(...)`` work as the README
writes them, while ``import mobilenet`` itself stays quick and free of torch. A package's
``__getattr__`` (PEP 562) hands an unknown name to ``submodule``."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


def submodule(package: str, name: str) -> ModuleType:
    """``package.name``, imported now, where ``package`` has such a module; else the
    ``AttributeError`` any missing attribute raises."""
    if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
        return importlib.import_module(f"{package}.{name}")
    raise AttributeError(f"module {package!r} has no attribute {name!r}")

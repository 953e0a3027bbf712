"""Arguments shared by the subcommands: the model flags, and the one place they meet ``--weights``.

Every model flag defaults to None ("not given"), so that ``model_from_args`` can tell a flag the
user typed from a default: with ``--weights`` a given flag must agree with the weights (or be one
no weight depends on: the resolution), and a contradiction is a one-line error, never silently
dropped. Without ``--weights`` the flags build a fresh model (``arch_config_from_args``).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from functools import cached_property
from typing import Any, overload

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError

# The ArchConfig fields that the model flags set (each flag's dest is the field's name).
MODEL_SETTINGS = ("alpha", "resolution", "variant", "num_classes", "depth_multiplier", "activation", "padding",
                  "rounding")


class Choices(Sequence[str]):
    """A flag's choices, owned by a module that imports torch: looked up when first used (a value
    given is checked, help is printed), so building the parser stays quick and torch-free. Give
    the argument a ``metavar``, and name the choices in its help with ``%(choices)s``."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    @cached_property
    def values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self.values[index]

    def __len__(self) -> int:
        return len(self.values)


def add_model_arguments(parser: argparse.ArgumentParser, *, classes_default: int = 1000) -> None:
    """--alpha, --resolution | --height/--width, --variant, --classes, --depth-multiplier,
    --activation, --padding, --rounding. Values are checked by ``ArchConfig`` (one-line errors).
    Every default is None ("not given"); ``classes_default`` is only what the help text shows."""
    g = parser.add_argument_group("model")
    g.add_argument("--alpha", type=float, default=None, help="width multiplier α > 0 (default 1.0)")
    g.add_argument("--resolution", type=int, default=None, help="square input size ≥ 32 (default 224)")
    g.add_argument("--height", type=int, default=None, help="input height (with --width, for non-square input)")
    g.add_argument("--width", type=int, default=None, help="input width")
    g.add_argument("--variant", choices=arch.VARIANTS, default=None,
                   help="separable (Table 1, default), conv (every block a full 3×3 conv, Table 4), shallow (Table 5)")
    g.add_argument("--classes", type=int, default=None, dest="num_classes",
                   help=f"number of classes (default {classes_default or 'from the data'})")
    g.add_argument("--depth-multiplier", type=int, default=None,
                   help="depthwise outputs per input channel (default 1)")
    g.add_argument("--activation", choices=arch.ACTIVATIONS, default=None, help="default relu6")
    g.add_argument("--padding", choices=arch.PADDINGS, default=None,
                   help="tf: TensorFlow SAME (default; needed by TF weights); symmetric: PyTorch padding=1; "
                   "keras: Keras' zero padding before strided convs")
    g.add_argument("--rounding", choices=arch.ROUNDINGS, default=None,
                   help="channel rounding under α: tf max(int(c·α), 8) (default), or timm's multiple of 8")


def resolution_from_args(args: argparse.Namespace, default: int | None = 224) -> tuple[int, int] | None:
    """(height, width) from --resolution or --height/--width; ``default`` when neither is given."""
    resolution, height, width = (getattr(args, k, None) for k in ("resolution", "height", "width"))
    if resolution is not None and (height is not None or width is not None):
        raise InputError("give either --resolution or --height/--width, not both")
    if (height is None) != (width is None):
        raise InputError("--height and --width go together")
    if height is not None:
        return (height, width)
    size = resolution if resolution is not None else default
    return None if size is None else (size, size)


def given_model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ArchConfig`` settings the user actually typed (flags left at None are absent;
    ``--alpha 0`` is given, and ``ArchConfig`` refuses it)."""
    settings = {key: getattr(args, key, None) for key in MODEL_SETTINGS if key != "resolution"}
    settings["resolution"] = resolution_from_args(args, default=None)
    return {k: v for k, v in settings.items() if v is not None}


def arch_config_from_args(args: argparse.Namespace, **overrides: Any) -> ArchConfig:
    """A fresh model's architecture: the flags given, ``ArchConfig``'s defaults for the rest."""
    settings = given_model_settings(args)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return ArchConfig(**settings)


def model_from_args(args: argparse.Namespace, **overrides: Any) -> tuple[Any, Any]:
    """(model, preprocess) for a command: ``mobilenet.factory.load_model`` with ``--weights`` (if
    any) and the model flags given, and the weights' preprocessing (``preprocess_for``).

    With ``--weights``, every flag given must agree with the weights, except ``--resolution``
    (and ``--height``/``--width``) and ``--classes`` (a new classifier; 1001 keeps TF's background
    class): ``--weights W --alpha 0.5`` on 0.25-wide weights is an ``InputError`` naming the flag.
    ``overrides`` are ``ArchConfig`` settings the command adds itself (e.g. the dataset's class
    count); they follow the same rule. The model is in eval mode.
    """
    from mobilenet.factory import load_model
    from mobilenet.preprocess import preprocess_for

    settings = given_model_settings(args) | overrides
    model = load_model(getattr(args, "weights", None) or None, **settings)
    return model, preprocess_for(model)

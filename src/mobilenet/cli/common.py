"""Arguments shared by the subcommands: the model flags of ``mobilenet cost`` and friends."""

from __future__ import annotations

import argparse
from typing import Any

from mobilenet import arch
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError


def add_model_arguments(parser: argparse.ArgumentParser, *, classes_default: int = 1000) -> None:
    """--alpha, --resolution | --height/--width, --variant, --classes, --depth-multiplier,
    --activation, --padding, --rounding. Values are checked by ``ArchConfig`` (one-line errors)."""
    g = parser.add_argument_group("model")
    g.add_argument("--alpha", type=float, default=1.0, help="width multiplier α > 0 (default 1.0)")
    g.add_argument("--resolution", type=int, default=None, help="square input size ≥ 32 (default 224)")
    g.add_argument("--height", type=int, default=None, help="input height (with --width, for non-square input)")
    g.add_argument("--width", type=int, default=None, help="input width")
    g.add_argument("--variant", choices=arch.VARIANTS, default="separable",
                   help="separable (Table 1), conv (every block a full 3×3 conv, Table 4), shallow (Table 5)")
    g.add_argument("--classes", type=int, default=classes_default, dest="num_classes",
                   help=f"number of classes (default {classes_default})")
    g.add_argument("--depth-multiplier", type=int, default=1, help="depthwise outputs per input channel (default 1)")
    g.add_argument("--activation", choices=arch.ACTIVATIONS, default="relu6")
    g.add_argument("--padding", choices=arch.PADDINGS, default="tf",
                   help="tf: TensorFlow SAME (needed by TF weights); symmetric: PyTorch padding=1")
    g.add_argument("--rounding", choices=arch.ROUNDINGS, default="tf",
                   help="channel rounding under α: tf max(int(c·α), 8), or timm's multiple of 8")


def resolution_from_args(args: argparse.Namespace, default: int = 224) -> tuple[int, int]:
    if args.resolution is not None and (args.height is not None or args.width is not None):
        raise InputError("give either --resolution or --height/--width, not both")
    if (args.height is None) != (args.width is None):
        raise InputError("--height and --width go together")
    if args.height is not None:
        return (args.height, args.width)
    size = args.resolution if args.resolution is not None else default
    return (size, size)


def arch_config_from_args(args: argparse.Namespace, **overrides: Any) -> ArchConfig:
    settings: dict[str, Any] = {
        "alpha": args.alpha,
        "resolution": resolution_from_args(args),
        "variant": args.variant,
        "num_classes": args.num_classes,
        "depth_multiplier": args.depth_multiplier,
        "activation": args.activation,
        "padding": args.padding,
        "rounding": args.rounding,
    }
    settings.update(overrides)
    return ArchConfig(**settings)

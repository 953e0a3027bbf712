"""Subcommands of this group (filled in by its own issue)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """No subcommands yet."""

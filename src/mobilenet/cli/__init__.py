"""The ``mobilenet`` command: thin argument parsing over the library.

Each submodule of this package owns a group of subcommands and exposes ``register(subparsers)``;
a subcommand's parser sets ``func`` (args -> exit status). Submodules import torch and other heavy
dependencies inside their handlers, so ``mobilenet cost`` stays quick and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence

from mobilenet.errors import MobileNetError, command_line_spelling
from mobilenet.version import __version__

# Subcommand groups, in the order `mobilenet --help` lists them.
COMMAND_MODULES = ("costs", "weights", "train", "deploy", "explore", "latency")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``mobilenet cost: error: ...``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="mobilenet",
        description="MobileNet v1: exact costs, the PyTorch model, published weights, training, deployment.",
    )
    parser.add_argument("--version", action="version", version=f"mobilenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"mobilenet.cli.{name}")
        module.register(sub)
    return parser


def flags_of(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """``command``'s flags by the parameter each sets (its ``dest``): ``{"num_classes": "--classes"}``,
    and by their own names (train's ``--workers`` sets ``num_workers``, and is found as ``workers``
    too). A ``--no-peers`` switch is also ``peers``'s flag, so that ``option("peers", False)`` finds it."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    flags: dict[str, str] = {}
    for action in sub._actions:
        long = [s for s in action.option_strings if s.startswith("--")]
        if not long:
            continue
        flag = next((s for s in long if not s.startswith("--no-")), long[0])
        flags[action.dest] = flag
        if flag.startswith("--no-") and action.dest.startswith("no_"):
            flags.setdefault(action.dest.removeprefix("no_"), "--" + flag.removeprefix("--no-"))
    for action in sub._actions:  # (after every dest: a flag's own name never hides another's parameter)
        for flag in action.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-"):
                flags.setdefault(flag.removeprefix("--").replace("-", "_"), flag)
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    # Parsing is inside the handlers too: building the parser imports every command's module, and
    # checking some flags' values imports torch (cli.common.Choices), seconds in which a Ctrl-C is
    # as likely as in the command itself. Until parsing ends the command is not known: "mobilenet".
    name = "mobilenet"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command:
            name = f"mobilenet {args.command}"
        # The words as given, for handlers that must tell a flag the user wrote from a default
        # (`train --resume RUN --lr 0.1` refuses the --lr instead of ignoring it).
        args.argv = list(sys.argv[1:] if argv is None else argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        with command_line_spelling(flags_of(parser, args.command)):  # the library's messages name --flags
            status = int(args.func(args) or 0)
        if status == 130:  # a run stopped by Ctrl-C and saved: no second Ctrl-C traceback on the way out
            _ignore_interrupts_from_now_on(argv)
        return status
    except MobileNetError as err:
        # The project's own errors: bad input (status 2: an alpha of -1, a missing file, a corrupt
        # weight file) or a failure it detected (status 1: a download that cannot be fetched, an
        # export whose outputs do not match PyTorch's, a full disk). One line; anything else is a
        # bug and keeps its traceback. MOBILENET_DEBUG=1 shows the traceback here too.
        if os.environ.get("MOBILENET_DEBUG"):
            raise
        print(f"{name}: error: {err}", file=sys.stderr)
        return err.exit_status
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:
        # A file the user named that cannot be read or written (a permission, a full disk).
        if os.environ.get("MOBILENET_DEBUG") or err.filename is None:
            raise
        print(f"{name}: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _ignore_interrupts_from_now_on(argv)
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


def _ignore_interrupts_from_now_on(argv: Sequence[str] | None) -> None:
    """The user asked to stop and we are stopping: a further Ctrl-C while the interpreter shuts
    down (torch._dynamo's and other libraries' exit hooks run then) would only print a
    KeyboardInterrupt traceback from inside them. Only when this is the program (``argv`` from the
    command line): a caller of ``main([...])`` keeps its own Ctrl-C."""
    if argv is None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())

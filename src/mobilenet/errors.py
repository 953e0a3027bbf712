"""The project's own errors: one base class, so callers (and the command line) can tell a fault the
user can fix — a bad argument, a corrupt file, a model that does not fit in memory — from a bug.

``mobilenet`` prints a ``MobileNetError`` as one line and exits with its ``exit_status``:

* ``InputError`` (2): the input is wrong — an argument, a path, a file's contents. Also a
  ``ValueError``, so code that validated with ``ValueError`` keeps working.
* ``MobileNetError`` itself and its other subclasses (1): the project could not do what was asked
  — a download failed, an export does not reproduce PyTorch, the disk is full.

Anything else that escapes is a bug and keeps its traceback. A message that names a parameter
spells it with ``option`` (``threads=0`` from Python, ``--threads 0`` on the command line), and one
that says what to run names it with ``to_run`` (a command, or the library call). Pure Python, no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


class MobileNetError(Exception):
    """Base of every error the project raises on purpose. One line, exit status 1."""

    exit_status: int = 1


class InputError(MobileNetError, ValueError):
    """Bad input from the user: an argument, a path, a file that is not what it claims. Exit status 2."""

    exit_status = 2


class ResourceError(MobileNetError):
    """The request cannot fit the machine (memory) or the disk refused a write. Exit status 1."""


# ------------------------------------------------------------------------------ naming parameters

@dataclass(frozen=True)
class Spelling:
    """How the caller names the parameters a message mentions: ``names`` maps a parameter to the
    caller's own name for it (one it lacks keeps its keyword name: a setting read from a file, say,
    is no flag); ``flags``: ``names`` are command-line flags (``--clip-grad 1``), not keywords."""

    names: Mapping[str, str] = field(default_factory=dict)
    flags: bool = False


KEYWORDS = Spelling()  # a Python caller's: the library's own keyword names
_UNSET = object()
# Whoever called sets it: the command line for the time a command runs (its parser's flags), the
# explorer for each request (its query's names). A context variable, so that the explorer's
# requests and an in-process ``main()`` keep their own; a thread started bare speaks Python.
_spelling: ContextVar[Spelling] = ContextVar("mobilenet_spelling", default=KEYWORDS)


def option(name: str, value: object = _UNSET) -> str:
    """Parameter ``name`` (with ``value``, if given) as the caller spells it: ``clip_grad=1`` from
    Python, ``--clip-grad 1`` from the command line. A boolean there is the flag or its ``--no-``
    form: ``option("compile", False)`` is ``compile=False`` or ``--no-compile``."""
    spelling = _spelling.get()
    flag = spelling.names.get(name)
    if not spelling.flags or flag is None:  # (no flag of the command's sets it: named as in Python)
        said = flag or name
        return said if value is _UNSET else f"{said}={value!r}"
    if isinstance(value, bool):  # a switch: the flag that sets it to True, or its --no- form
        positive = "--" + flag.removeprefix("--").removeprefix("no-")
        return positive if value else "--no-" + positive.removeprefix("--")
    return flag if value is _UNSET else f"{flag} {value}"


def to_run(command: str, call: str) -> str:
    """What to run, as the caller runs things: ``command`` (a ``mobilenet`` command line) on the
    command line, ``call`` (the library's call that does the same) from Python."""
    return f"`{command}`" if _spelling.get().flags else f"`{call}`"


def spelling_in_use() -> Spelling:
    """The spelling ``option`` uses here, for a process of the library's own to speak as its caller does."""
    return _spelling.get()


@contextmanager
def spelled(spelling: Spelling) -> Iterator[None]:
    """Within, ``option`` spells parameters as ``spelling`` says."""
    token = _spelling.set(spelling)
    try:
        yield
    finally:
        _spelling.reset(token)


def command_line_spelling(flags: Mapping[str, str]) -> AbstractContextManager[None]:
    """Within, ``option`` names a parameter by its flag: ``flags`` maps the parameter to it
    (``{"num_classes": "--classes"}``); a parameter it lacks keeps its keyword name."""
    return spelled(Spelling(dict(flags), flags=True))

"""The project's own errors: one base class, so callers (and the command line) can tell a fault the
user can fix — a bad argument, a corrupt file, a model that does not fit in memory — from a bug.

``mobilenet`` prints a ``MobileNetError`` as one line and exits with its ``exit_status``:

* ``InputError`` (2): the input is wrong — an argument, a path, a file's contents. Also a
  ``ValueError``, so code that validated with ``ValueError`` keeps working.
* ``MobileNetError`` itself and its other subclasses (1): the project could not do what was asked
  — a download failed, an export does not reproduce PyTorch, the disk is full.

Anything else that escapes is a bug and keeps its traceback. Pure Python, no torch.
"""

from __future__ import annotations


class MobileNetError(Exception):
    """Base of every error the project raises on purpose. One line, exit status 1."""

    exit_status: int = 1


class InputError(MobileNetError, ValueError):
    """Bad input from the user: an argument, a path, a file that is not what it claims. Exit status 2."""

    exit_status = 2


class ResourceError(MobileNetError):
    """The request cannot fit the machine (memory) or the disk refused a write. Exit status 1."""

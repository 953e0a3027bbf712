"""The process's one ``openvino.Core``.

Why one: OpenVINO's CPU plugin installs an alternate signal stack (``sigaltstack``) on the calling
thread when a ``Core`` creates the plugin, and restores the previous one when that ``Core`` is
destroyed. Two Cores released oldest-first leave the thread pointing at the freed stack of the
first; CPython installs its signal handlers with ``SA_ONSTACK``, so the next Ctrl-C (or the SIGCHLD
that torch's DataLoader handles) then runs on freed memory: SIGSEGV. A single Core that lives as
long as the process can never be released out of order. Every use of OpenVINO in the project goes
through ``openvino_core()``; NNCF's own short-lived Cores are created and released after ours, in
order, which is safe.
"""

from __future__ import annotations

import functools
from typing import Any

from mobilenet.deploy.optional import require


@functools.cache
def openvino_core() -> Any:
    """The shared ``openvino.Core`` (created on first use, kept until the process ends)."""
    return require("openvino").Core()

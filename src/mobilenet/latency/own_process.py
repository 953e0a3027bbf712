"""Latency work in a process of its own, for a runtime whose sessions would slow each other in the
caller's (``Backend.pools_of_their_own``: ONNX Runtime above one thread, where each session has a
thread pool of its own): the calibration, which times dozens of probes, and ``choose``'s timing of
the best candidates. The child puts every session on one pool (``Backend.share_one_pool``), which
the caller's process cannot do for good without refusing its other sessions, runs the one
function asked for, and hands its result back; its progress lines reach the caller's ``log`` as
they come, and its errors are raised in the caller.

The child is ``python -m mobilenet.latency.own_process_main``, a fresh interpreter that imports
only the project: a user's script is never run again in it (as ``multiprocessing``'s spawn would)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError, MobileNetError, spelling_in_use

MARK = "\x1f"  # opens each of the child's progress lines on its stderr; other lines pass through
# In the child's environment: what it runs runs there, never in yet another process. (An
# environment variable, not a module flag: the child's module runs as ``__main__``, and a flag
# set there would not be the one the library reads.)
CHILD_ENV = "MOBILENET_ONE_POOL_PROCESS"
CHILD = "mobilenet.latency.own_process_main"  # the child's module, run with ``python -m``


def in_own_process() -> bool:
    """Whether this is such a process of its own (then nothing is sent to another)."""
    return os.environ.get(CHILD_ENV) == "1"


def needed(runtime: str, threads: int | None) -> bool:
    """Whether latency work on ``runtime`` at ``threads`` goes to a process of its own: where its
    sessions would slow each other here (``Backend.pools_of_their_own``), unless this is that
    process, or this process has already put every session on one pool of ``threads``
    (``Backend.on_one_pool``: ``benchmarks/bench_latency_model.py`` does, to time a grid), which
    is all that process would do."""
    from mobilenet.latency.backends import BACKENDS  # noqa: PLC0415 - the backends import torch

    backend = BACKENDS[runtime]
    return backend.pools_of_their_own(threads) and not in_own_process() and not backend.on_one_pool(threads)


def call_apart(
    function: str, kwargs: dict[str, Any], *, runtime: str, threads: int | None, doing: str,
    log: Callable[[str], None],
) -> tuple[Any, bool]:
    """``function(**kwargs, log=...)`` (one the child's ``FUNCTIONS`` names: "calibrate" or
    "choose") in a process of its own whose ``runtime`` sessions share one pool of ``threads``:
    (its result, whether the pool could be shared), or its error raised here (an ``InputError``
    or ``MobileNetError`` as such, anything else as a ``MobileNetError`` that starts with
    ``doing``, e.g. "calibrating onnxruntime"). ``kwargs`` that do not pickle: an ``InputError``."""
    with tempfile.TemporaryDirectory(prefix="mobilenet-own-process-") as tmp:
        result = Path(tmp) / "result.pickle"
        try:
            request = pickle.dumps({"function": function, "kwargs": kwargs, "runtime": runtime, "threads": threads,
                                    "result": str(result), "spelling": spelling_in_use()})
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            raise InputError(f"{doing} runs in a process of its own ({runtime} above one thread), and what it was "
                             f"given cannot be sent there ({err}); give plain data, or threads=1") from None
        child = subprocess.Popen([sys.executable, "-m", CHILD],
                                 stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {CHILD_ENV: "1"})
        try:
            assert child.stdin is not None and child.stderr is not None
            try:
                child.stdin.write(request)
                child.stdin.close()
            except BrokenPipeError:  # it ended before reading: said below, by its status
                pass
            for raw in child.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith(MARK):
                    log(line[len(MARK):])
                else:
                    print(line, file=sys.stderr, flush=True)
            status = child.wait()
        finally:  # (an interrupt here: the child, in the same process group, has had it too)
            if child.poll() is None:
                child.kill()
                child.wait()
        if not result.exists():
            raise MobileNetError(f"{doing}: its own process ended (status {status}) without a result")
        outcome = pickle.loads(result.read_bytes())
    if outcome["error"] is None:
        return outcome["result"], outcome["shared"]
    kind, message = outcome["error"]
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt
    if kind == "InputError":
        raise InputError(message)
    raise MobileNetError(message if kind == "MobileNetError" else f"{doing}: {message}")

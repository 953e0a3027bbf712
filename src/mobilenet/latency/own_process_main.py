"""A process of its own for latency work (``mobilenet.latency.own_process``): a pickled request
on stdin, progress lines on stderr, the outcome pickled into the request's file. Started by
``own_process.call_apart``, never by hand."""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError, MobileNetError, spelled
from mobilenet.latency import choose
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import calibrate
from mobilenet.latency.own_process import MARK, in_own_process

# What a caller may ask this process to run (``own_process.call_apart``'s ``function``): each takes
# ``log=`` and returns something that pickles.
FUNCTIONS: dict[str, Callable[..., Any]] = {"calibrate": calibrate, "choose": choose}


def main() -> None:
    """The child: a pickled request on stdin, progress on stderr, the outcome in the request's file."""
    request = pickle.loads(sys.stdin.buffer.read())
    # The caller's stdout may carry its own output (``mobilenet choose --json``): whatever this
    # process or a library in it prints there goes to stderr instead, which the caller passes on.
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    outcome: dict[str, Any] = {"result": None, "shared": False, "error": None}
    try:
        if not in_own_process():
            raise MobileNetError("this is the latency work's own process, started by own_process.call_apart()")
        def log(line: str) -> None:
            print(MARK + line, file=sys.stderr, flush=True)

        if request["function"] not in FUNCTIONS:
            raise MobileNetError(f"no {request['function']!r} to run here; one of {', '.join(FUNCTIONS)}")
        runtime, threads = request["runtime"], request["threads"]
        outcome["shared"] = BACKENDS[runtime].share_one_pool(threads)
        if not outcome["shared"]:
            log(f"latency: {runtime} offers no thread pool to share here: each session keeps its own")
        with spelled(request["spelling"]):  # its messages name parameters as the caller's user spells them
            outcome["result"] = FUNCTIONS[request["function"]](**request["kwargs"], log=log)
    except BaseException as err:  # noqa: BLE001 (every outcome goes back to the caller, which raises it)
        kind = ("KeyboardInterrupt" if isinstance(err, KeyboardInterrupt) else "InputError"
                if isinstance(err, InputError) else "MobileNetError" if isinstance(err, MobileNetError) else "other")
        outcome["error"] = (kind, str(err) if kind != "other" else f"{type(err).__name__}: {err}")
    Path(request["result"]).write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    main()

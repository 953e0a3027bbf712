"""The latency calibration's own process (``mobilenet.latency.own_process``): a pickled request
on stdin, progress lines on stderr, the outcome pickled into the request's file. Started by
``calibrate``, never by hand."""

from __future__ import annotations

import pickle
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError, MobileNetError
from mobilenet.latency.backends import BACKENDS
from mobilenet.latency.calibrate import calibrate
from mobilenet.latency.own_process import MARK, in_own_process


def main() -> None:
    """The child: a pickled request on stdin, progress on stderr, the outcome in the request's file."""
    request = pickle.loads(sys.stdin.buffer.read())
    outcome: dict[str, Any] = {"calibration": None, "error": None}
    try:
        if not in_own_process():
            raise MobileNetError("this is the latency calibration's own process, started by calibrate()")
        def log(line: str) -> None:
            print(MARK + line, file=sys.stderr, flush=True)

        shared = BACKENDS[request["runtime"]].share_one_pool(request["options"].get("threads"))
        if not shared:
            log(f"latency: {request['runtime']} offers no thread pool to share here: each probe keeps its own")
        calibration = calibrate(request["runtime"], request["precision"], **request["options"], log=log)
        process = "its own, one thread pool" if shared else "its own, a pool per probe"
        outcome["calibration"] = replace(calibration, fit={**calibration.fit, "process": process})
    except BaseException as err:  # noqa: BLE001 (every outcome goes back to the caller, which raises it)
        kind = ("KeyboardInterrupt" if isinstance(err, KeyboardInterrupt) else "InputError"
                if isinstance(err, InputError) else "MobileNetError" if isinstance(err, MobileNetError) else "other")
        outcome["error"] = (kind, str(err) if kind != "other" else f"{type(err).__name__}: {err}")
    Path(request["result"]).write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    main()

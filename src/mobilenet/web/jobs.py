"""Slow work (a measurement, a calibration) in a background thread, with progress the page polls.

One job runs at a time: two measurements at once would time each other. While it runs, the server's
other requests are answered as usual (the runtimes release the GIL while they compute), so the cost
view stays responsive. Finished jobs are kept for a while, a few at most, for the page to read.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mobilenet.errors import InputError, MobileNetError

KEEP_FINISHED = 8
Work = Callable[[Callable[[float, str], None]], dict[str, Any]]


class BusyError(InputError):
    """A job is already running."""


@dataclass
class Job:
    id: str
    what: str
    state: str = "running"  # running | done | failed
    progress: float = 0.0
    message: str = "starting"
    result: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "what": self.what, "state": self.state, "progress": self.progress,
                "message": self.message, "result": self.result, "error": self.error,
                "seconds": round(time.monotonic() - self.started, 1)}


class Jobs:
    """The server's background jobs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)

    def start(self, what: str, work: Work) -> Job:
        """Run ``work(progress)`` in a thread; ``BusyError`` while another job runs."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.state == "running"]
            if running:
                raise BusyError(f"{running[0].what} is already running; wait for it to finish")
            job = Job(id=str(next(self._ids)), what=what)
            self._jobs[job.id] = job
            self._forget_old()
        try:
            threading.Thread(target=self._run, args=(job, work), name=f"mobilenet-job-{job.id}", daemon=True).start()
        except BaseException:  # no thread (RuntimeError: can't start new thread): never let it hold the slot
            job.error, job.state = f"{job.what} could not start; try again", "failed"
            raise
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, work: Work) -> None:
        def progress(fraction: float, message: str) -> None:
            job.progress, job.message = max(0.0, min(1.0, fraction)), message

        # (The result or error is set before the state: a poller that sees the job ended finds it.)
        try:
            job.result = work(progress)
            job.progress, job.message = 1.0, "done"
            job.state = "done"
        except MobileNetError as err:  # the user's to fix (a runtime not installed): said on the page
            job.error, job.state = str(err), "failed"
        except Exception as err:  # a bug, but the server must keep serving: said on the page too
            job.error, job.state = f"{type(err).__name__}: {err}", "failed"
        finally:
            # Whatever else ended it (SystemExit or KeyboardInterrupt raised inside the work, which
            # this thread does not survive): a job left "running" would hold the one slot, and every
            # later measurement would be refused as busy until the server restarted.
            if job.state == "running":
                job.error = f"{job.what} ended without a result ({_stopped_by()}); start it again"
                job.state = "failed"

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state != "running"]
        for job_id in finished[:-KEEP_FINISHED]:
            del self._jobs[job_id]


def _stopped_by() -> str:
    """The exception unwinding the job's thread, as a few words (called from its ``finally``)."""
    err = sys.exc_info()[1]
    if err is None:
        return "no exception"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__

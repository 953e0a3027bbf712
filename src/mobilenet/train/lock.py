"""One writer per run directory: an advisory lock that ends with the process holding it.

``RunLock(run_dir)`` takes ``RUN_DIR/.lock`` with ``fcntl.flock`` (exclusive, without waiting)
and writes who holds it there: the PID, the host, the time and the command. A second writer —
a second ``train --resume`` of the same run, or the workers of a torchrun killed with ``kill -9``
that are still training into it — is refused with an ``InputError`` that names that PID. Two
writers would otherwise interleave: ``best.pt`` from one run, ``metrics.jsonl`` from the other.

The kernel releases a flock when the last descriptor of the file closes, so a killed writer
never leaves a lock behind, only its note; the next writer takes over and says whose note it
was (``previous``). A lock that is held while the process it names is gone is held by a process
that one started (a data-loader worker inherits the descriptor) or by another machine sharing
the folder: the refusal says so rather than naming a dead PID as the writer.

The lock file is written in place, not through ``mobilenet.files.atomic_write``: a lock lives
on the file's inode, which a rename would replace. It is never deleted, which keeps two writers
from ever locking two different files of the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mobilenet.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no flock; one writer per directory is then the user's to keep
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_HELD: set[int] = set()  # the descriptors of the locks this process holds


def close_inherited_locks() -> None:
    """In a forked child, close the lock descriptors it inherited: the writer's lock is the
    writer's. Otherwise a writer killed with ``kill -9`` left its data-loader workers (the
    training loader's and validation's alike) holding the lock until they noticed, and the resume
    right after it was refused. Run in every child that ``os.fork`` makes (registered below);
    children that exec another program never inherit the descriptors (``O_CLOEXEC``)."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=close_inherited_locks)


class RunLock:
    """The lock of one run directory (created if absent), held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.previous: dict[str, Any] | None = None  # the note of a writer that ended without releasing
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise ``InputError`` naming the process that holds it."""
        if fcntl is None or self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise InputError(f"cannot write into {self.run_dir}: {err.strerror}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_note(fd)
            os.close(fd)
            raise InputError(_refusal(self.run_dir, holder)) from None
        self.previous = _read_note(fd)
        note = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": _command()})
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode() + b"\n", 0)
        self._fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        """Clear the note and let go (a clean end: the next writer finds no note)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # also for any forked child still holding the descriptor
        os.close(self._fd)
        _HELD.discard(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe_previous(note: dict[str, Any]) -> str:
    """A line about the writer that left ``note``: it ended without releasing the lock (killed)."""
    return (f"process {note.get('pid', '?')} (since {note.get('since', '?')}) ended without releasing "
            "this run's lock: it was killed")


def _command() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


def _read_note(fd: int) -> dict[str, Any] | None:
    try:
        note = json.loads(os.pread(fd, os.fstat(fd).st_size, 0) or b"null")
    except (OSError, ValueError):
        return None  # being written this very moment, or not ours
    return note if isinstance(note, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _refusal(run_dir: Path, holder: dict[str, Any] | None) -> str:
    if holder is None or not isinstance(holder.get("pid"), int):
        return f"{run_dir} is in use by another process (its lock {run_dir / LOCK_NAME} is held); wait for it to end"
    pid, host = holder["pid"], holder.get("host")
    what = f"`{holder.get('command', '?')}` since {holder.get('since', '?')}"
    if host not in (None, socket.gethostname()):
        return f"{run_dir} is in use by process {pid} on {host} ({what}); wait for it to end, or stop it there"
    if not _alive(pid):
        return (f"{run_dir} is locked by a process that process {pid} ({what}, now gone) started; "
                f"find it with `fuser {run_dir / LOCK_NAME}` and stop it")
    return (f"{run_dir} is in use by process {pid} ({what}); wait for it to end, or stop it with `kill {pid}` "
            "if it is left over (workers of a torchrun killed with -9 go on training)")

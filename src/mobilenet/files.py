"""Writing files so that nothing is ever half-written or overwritten by mistake.

Every file the project writes — checkpoints, converted weights, exports, reports, plots — goes
through ``atomic_write``: the content goes to a uniquely named temporary file in the target's own
folder (so the final step is a rename on one file system), is flushed and fsynced, gets the mode
``open()`` would have given it (0o666 less the umask; ``mkstemp`` alone gives 0o600), and then
replaces the target in one ``os.replace``. A crash leaves the old file or the new one, never part
of one; a failure removes the temporary. Temporaries are named ``.{name}.{random}.tmp`` so that
``remove_stale_temporaries`` can clean up after a process that was killed mid-write.

Atomic replacement is for regular files only; what stands at the path decides:

* nothing, or a regular file: replaced atomically, as above;
* a symlink: followed to the file it names (to the end of a chain), which is replaced atomically
  in its own folder — the link stays a link, pointing at the new content;
* a character device or a FIFO (``/dev/stdout``, ``/dev/null``, a named pipe a reader waits on):
  written through, in one stream once the content is complete (the temporary lives in the system's
  temporary folder); a device or a FIFO is never replaced by a regular file, and a FIFO's writer
  waits until a reader opens it, as with any writer;
* anything else (a directory, a block device, a socket): refused with an ``InputError``.

A directory written whole (a Core ML ``.mlpackage``) takes the place of the old one through
``replace_directory``, with the same promise: the old directory or the new one, never neither (a
symlink to it is followed there too).

``refuse_overwrite`` stops a command from writing over its own input (``convert X X``).
Pure Python, no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from mobilenet.errors import InputError, MobileNetError, ResourceError

TEMP_SUFFIX = ".tmp"


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def refuse_overwrite(target: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """Raise ``InputError`` if ``target`` is (or links to) one of ``inputs``."""
    target = Path(target)
    for source in inputs:
        source = Path(source)
        same = target.exists() and source.exists() and os.path.samefile(target, source)
        if same or target.resolve() == source.resolve():
            raise InputError(f"{target} is also an input of this command; write the output to another file")


def _temporary_name(path: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    return Path(name)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    # The rename itself is durable only once the folder's entry is on disk; not every file system
    # lets a folder be opened for that, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_error(err: OSError, path: str | os.PathLike[str]) -> MobileNetError:
    """The one-line project error for ``err`` raised while writing ``path``: an ``InputError``
    where the user can fix it (permissions, a read-only file system), else a ``ResourceError``
    (a full disk)."""
    code = _errno_of(err)
    fallback = err.strerror or (os.strerror(code) if code else str(err))
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
              errno.EPERM: "permission denied"}.get(code or 0, fallback)
    cls = InputError if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR) else ResourceError
    return cls(f"cannot write {path}: {reason}")


def _errno_of(err: OSError) -> int | None:
    """``err.errno``, or for a ``shutil.Error`` (``copytree`` gathers its failures into one, each as
    (source, target, "[Errno 28] No space left on device: ...")) the first failure's."""
    if err.errno is not None:
        return err.errno
    failures = err.args[0] if isinstance(err, shutil.Error) and err.args else None
    for failure in failures if isinstance(failures, list) else []:
        found = re.match(r"\[Errno (\d+)\]", str(failure[-1]))
        if found:
            return int(found.group(1))
    return None


def destination(path: str | os.PathLike[str]) -> Path:
    """Where writing ``path`` lands: the file a symlink names (followed to the end of a chain, even
    where that file does not exist yet), else ``path`` itself."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _is_stream(path: Path) -> bool:
    """True if ``path`` is (or links to) a character device or a FIFO, which are written through;
    raises ``InputError`` for what can be neither written through nor replaced."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks: /dev/stdout is one
    except FileNotFoundError:
        return False  # nothing there yet (or a link to nothing: the file it names is created)
    except OSError:
        return False  # a link loop and the like: the write itself reports it
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    if stat.S_ISDIR(mode):
        raise InputError(f"{path} is a directory: name a file to write")
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} is neither a regular file, a character device nor a FIFO: refusing to write it")
    return False


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Yield a temporary path; on a clean exit its content becomes ``path``: atomically for a
    regular file (a symlink's target, for a symlink), written through for a character device or
    a FIFO (see the module docstring).

    Write to the yielded path by name (``torch.save(obj, tmp)``, ``save_file(..., tmp)``,
    ``tmp.write_bytes(...)``). ``inputs``: files this command reads, which ``path`` must not be.
    OS errors (full disk, read-only folder) become one-line ``MobileNetError``s.
    """
    path = Path(path)
    refuse_overwrite(path, inputs)
    if _is_stream(path):
        with _written_through(path) as tmp:
            yield tmp
        return
    path = destination(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temporary_name(path)
    except OSError as err:
        raise write_error(err, path) from err
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _written_through(path: Path) -> Iterator[Path]:
    """A temporary in the system's temporary folder, copied into the device or FIFO ``path`` once
    complete (a failed write sends nothing), then removed."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)
    except OSError as err:
        raise write_error(err, path) from err
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(
    paths: Sequence[str | os.PathLike[str]], *, inputs: Sequence[str | os.PathLike[str]] = ()
) -> Iterator[list[Path]]:
    """``atomic_write`` for files that belong together (OpenVINO's .xml and .bin): all are written
    first, then renamed in the order given — put the file that names the others last."""
    with contextlib.ExitStack() as stack:
        # ExitStack leaves the contexts last-entered first: enter them in reverse so that the renames
        # happen in the order given.
        temporaries = [stack.enter_context(atomic_write(p, inputs=inputs)) for p in reversed(paths)]
        yield temporaries[::-1]


def write_bytes(path: str | os.PathLike[str], data: bytes, **kwargs: object) -> Path:
    with atomic_write(path, **kwargs) as tmp:  # type: ignore[arg-type]
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, **kwargs: object) -> Path:
    return write_bytes(path, text.encode("utf-8"), **kwargs)


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove temporaries ``atomic_write`` left in ``folder`` when a process was killed mid-write
    (all of them, or only those of target ``name``). Returns what was removed. Call it only where
    no other writer is at work (a run directory at the start of its run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = f".{name}.*{TEMP_SUFFIX}" if name else f".*{TEMP_SUFFIX}"
    removed = []
    for stale in folder.glob(pattern):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def refuse_replacing_other_than(target: str | os.PathLike[str], accept: Callable[[Path], bool], what: str) -> None:
    """Raise ``InputError`` if ``target`` exists but is not a directory ``accept`` says is ``what``
    (what ``replace_directory`` would refuse: callers check first, before the work of writing)."""
    target = Path(target)
    if target.exists() and not (target.is_dir() and accept(target)):
        raise InputError(f"{target} exists and is not a {what}: move it away or write to another name")


def replace_directory(
    source: str | os.PathLike[str], target: str | os.PathLike[str], *, accept: Callable[[Path], bool], what: str,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Move the directory ``source`` (in ``target``'s folder) to ``target`` in one step: readers see
    the old directory or the new one, never neither.

    An existing ``target`` is replaced only if ``accept(target)`` says it is ``what`` (say, a Core
    ML package): anything else there (a file, an unrelated folder) is refused with an
    ``InputError``, never deleted. Where the system swaps two names atomically (Linux
    ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``) the two directories trade
    places and the old one is removed; elsewhere the old one is first renamed aside to
    ``.{name}.old``, and whatever a crash left aside there is removed by the next replacement.
    A symlink at ``target`` is followed: the directory it names is replaced, the link stays.
    """
    source, target = Path(source), Path(target)
    refuse_overwrite(target, inputs)
    target = destination(target)
    refuse_replacing_other_than(target, accept, what)
    aside = target.with_name(f".{target.name}.old")
    try:
        if aside.is_dir() and accept(aside):  # left aside by a replacement that was interrupted
            shutil.rmtree(aside)
        if not target.exists():
            os.rename(source, target)
        elif _swap(source, target):
            shutil.rmtree(source, ignore_errors=True)  # the old directory, now under the new one's name
        else:
            os.rename(target, aside)
            os.rename(source, target)
            shutil.rmtree(aside, ignore_errors=True)
    except OSError as err:
        raise write_error(err, target) from err
    _fsync_dir(target.parent)
    return target


# Flags of the atomic swap: Linux renameat2's RENAME_EXCHANGE, macOS renamex_np's RENAME_SWAP.
_RENAME_EXCHANGE, _RENAME_SWAP, _AT_FDCWD = 2, 2, -100


def _swap(a: Path, b: Path) -> bool:
    """Exchange two existing paths atomically; False where this system or file system cannot."""
    swap = None
    if sys.platform.startswith("linux"):
        swap = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
        args: tuple[object, ...] = (_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin":
        swap = getattr(ctypes.CDLL(None, use_errno=True), "renamex_np", None)
        args = (os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    if swap is None:
        return False
    if swap(*args) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # no swap here (an old kernel, a file system without it): rename aside instead
    raise OSError(code, os.strerror(code), str(b))

"""Checksums of exported files, so that a damaged file is refused instead of run.

A runtime loads a file with one flipped bit in its weights without complaint and computes something
else (an .onnx export went from 63.5% to 5.5% top-1, exit 0). So every export writes ``NAME.sha256``
beside its main file, in ``sha256sum``'s own format (``sha256sum -c NAME.sha256`` checks it from
that folder): one line per file the export wrote, with its name relative to the folder (OpenVINO:
the .xml and its .bin; Core ML: every file inside the package). The sidecar, not the file's own
metadata, holds it: it covers every format the same way and changes nothing that is hashed.

The predictors' ``from_file`` call ``verify_checksums`` before their runtime reads a file: a
mismatch, or a listed file that is missing, is a ``DamagedFileError`` (one line, exit status 2). A
file without a sidecar (TF's own .tflite, a file renamed without it) runs unchecked, and
``verify_checksums`` says which. A file a runtime cannot parse at all is the same error, raised by ``unreadable``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from mobilenet.errors import InputError

SUFFIX = ".sha256"
_CHUNK = 1 << 20


class DamagedFileError(InputError):
    """An exported file does not match its checksum, or cannot be read as its format at all."""


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The checksum file of the export whose main file is ``path``: ``NAME.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_lines(files: Iterable[tuple[Path, str]]) -> str:
    """``sha256sum`` lines for (content, name) pairs: the hash of the file at ``content``, listed
    under ``name`` (the name it will have beside the sidecar). A folder lists every file in it."""
    lines = []
    for content, name in files:
        if content.is_dir():
            for inner in sorted(p for p in content.rglob("*") if p.is_file()):
                lines.append(f"{sha256(inner)}  {name}/{inner.relative_to(content).as_posix()}")
        else:
            lines.append(f"{sha256(content)}  {name}")
    return "\n".join(lines) + "\n"


def verify_checksums(path: str | os.PathLike[str]) -> bool:
    """Check the files listed in ``path``'s sidecar; raise ``DamagedFileError`` on a mismatch or a
    listed file that is missing. Returns False (nothing to check) where there is no sidecar."""
    path = Path(path)
    listing = sidecar(path)
    try:
        text = listing.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except (OSError, UnicodeDecodeError) as err:
        raise DamagedFileError(f"{listing}: cannot read the checksum file ({err})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        if len(expected) != 64 or not name:
            raise DamagedFileError(f"{listing}, line {number}: not a sha256sum line; export {path.name} again")
        listed = listing.parent / name
        try:
            actual = sha256(listed)
        except FileNotFoundError:
            raise DamagedFileError(f"{listed} is missing (listed in {listing.name}); "
                                   f"export {path.name} again") from None
        if actual != expected.lower():
            raise DamagedFileError(f"{listed} is damaged: its SHA-256 does not match {listing.name}; "
                                   f"export {path.name} again")
    return True


def unreadable(path: str | os.PathLike[str], what: str, err: BaseException) -> DamagedFileError:
    """The one-line error for a file ``what`` (a runtime's name for its format) cannot parse."""
    # The runtimes' messages can run to several lines, OpenVINO's behind "Exception from <source>" lines.
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and not line.startswith("Exception from")]
    reason = lines[0] if lines else type(err).__name__
    return DamagedFileError(f"{Path(path).name} cannot be read as {what} (damaged, or not such a file): "
                            f"{reason[:200]}")

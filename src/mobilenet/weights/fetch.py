"""The cache directory and checksum-verified fetching of weight files.

Cache: ``$MOBILENET_CACHE``, else ``~/.cache/mobilenet``. Downloaded originals live in
``files/``, converted models in ``converted/``. Every file is written to a temporary name in the
same directory and moved into place with ``os.replace``, so an interrupted fetch never leaves a
half-written file under the real name.

Sources (tried in the order a registry entry lists them):

* ``pypi:PACKAGE==VERSION#MEMBER`` runs ``pip download --no-deps --no-binary :all:`` (the sdist,
  nothing installed), then takes MEMBER out of the archive;
* ``https://...`` downloads the file; ``https://...tgz#MEMBER`` takes MEMBER out of the archive.

Before any source, the directories in ``$MOBILENET_WEIGHTS_PATH`` (``os.pathsep``-separated) are
searched for a file of that name: the way to use copies that are already on disk. Whatever the
source, the SHA-256 must match the registry's, or the file is rejected.

One exception: a source written ``unpinned:https://...`` is a different file holding the same
weights (TF's own archive of the graph the default entry takes from PyPI), whose checksum nobody
here could take. It is only used when the caller passes ``allow_unpinned=True`` and checks the
converted tensors itself (``fetch_pretrained`` compares ``tensors_sha256``); it is kept as
``files/unverified-<name>`` until then.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from mobilenet.errors import MobileNetError

CACHE_ENV = "MOBILENET_CACHE"
SEARCH_ENV = "MOBILENET_WEIGHTS_PATH"
PIP_TIMEOUT_S = 600


class FetchError(MobileNetError, RuntimeError):
    """No source could provide a file with the expected checksum."""


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "mobilenet"


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def publish(tmp: str | os.PathLike[str], dest: Path) -> None:
    """Move a finished temporary file into place, readable as a normal file would be
    (``mkstemp`` creates 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dest)


def atomic_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out)
        publish(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch_file(
    filename: str, sha256: str, sources: tuple[str, ...], *, quiet: bool = False, allow_unpinned: bool = False
) -> Path:
    """The verified local path of a weight file, fetching it into the cache if needed."""
    target = cache_dir() / "files" / filename
    if target.is_file() and sha256_file(target) == sha256:
        return target
    for folder in filter(None, os.environ.get(SEARCH_ENV, "").split(os.pathsep)):
        candidate = Path(folder) / filename
        if candidate.is_file() and sha256_file(candidate) == sha256:
            return candidate
    failures = []
    for source in sources:
        unpinned = source.startswith("unpinned:")
        if unpinned and not allow_unpinned:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="mobilenet-fetch-") as tmp:
                got = _fetch_source(source.removeprefix("unpinned:"), Path(tmp), quiet=quiet)
                if unpinned:
                    unverified = target.with_name(f"unverified-{filename}")
                    atomic_copy(got, unverified)
                    return unverified
                digest = sha256_file(got)
                if digest != sha256:
                    raise FetchError(f"checksum mismatch: expected sha256 {sha256}, got {digest}")
                atomic_copy(got, target)
            return target
        except (OSError, FetchError, subprocess.SubprocessError, tarfile.TarError, zipfile.BadZipFile) as err:
            failures.append(f"{source}: {err}")
    raise FetchError(f"could not fetch {filename}:\n  " + "\n  ".join(failures or ["no sources"]))


def _fetch_source(source: str, workdir: Path, *, quiet: bool) -> Path:
    location, _, member = source.partition("#")
    if location.startswith("pypi:"):
        archive = _pip_download_sdist(location.removeprefix("pypi:"), workdir, quiet=quiet)
    elif location.startswith(("https://", "http://")):
        archive = workdir / Path(location.split("?")[0]).name
        if not quiet:
            print(f"downloading {location}", file=sys.stderr)
        with urllib.request.urlopen(location, timeout=60) as response, open(archive, "wb") as out:
            shutil.copyfileobj(response, out)
    else:
        raise FetchError(f"unknown source kind {source!r}")
    return _extract_member(archive, member, workdir) if member else archive


def _pip_download_sdist(requirement: str, workdir: Path, *, quiet: bool) -> Path:
    if not quiet:
        print(f"fetching {requirement} (source archive, not installed) from the package index with pip",
              file=sys.stderr)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", str(workdir), requirement]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    archives = [p for p in workdir.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tgz"))]
    if done.returncode != 0 or not archives:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive downloaded"]
        raise FetchError(f"pip download failed: {tail[0]}")
    return archives[0]


def _extract_member(archive: Path, member: str, workdir: Path) -> Path:
    """Take one file out of a .tar.gz/.tgz/.zip; ``member`` may omit the archive's top folder."""
    out = workdir / Path(member).name
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            name = _match_member(z.namelist(), member, archive)
            with z.open(name) as f, open(out, "wb") as dest:
                shutil.copyfileobj(f, dest)
        return out
    with tarfile.open(archive) as tar:
        name = _match_member(tar.getnames(), member, archive)
        extracted = tar.extractfile(name)
        if extracted is None:
            raise FetchError(f"{archive.name}: {name} is not a regular file")
        with extracted, open(out, "wb") as dest:
            shutil.copyfileobj(extracted, dest)
    return out


def _match_member(names: list[str], member: str, archive: Path) -> str:
    for name in names:
        if name == member or name.endswith("/" + member):
            return name
    raise FetchError(f"{archive.name} has no member {member}")

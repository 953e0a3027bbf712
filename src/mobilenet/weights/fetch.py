"""The cache directory and verified fetching of weight files.

Cache: ``$MOBILENET_CACHE``, else ``~/.cache/mobilenet``. Downloaded originals live in
``files/``, converted models in ``converted/``. Every file is written through
``mobilenet.files.atomic_write``, so an interrupted fetch never leaves a half-written file under
the real name.

Sources (tried in the order a registry entry lists them):

* ``https://...`` (or ``http://``) downloads the file; ``https://...tgz#MEMBER`` takes MEMBER out
  of the archive (.tar.gz, .tgz or .zip);
* ``hf:OWNER/REPO[@REVISION]#FILE`` takes FILE from the Hugging Face Hub with ``huggingface_hub``
  (its own cache and settings apply: ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` serve a local
  snapshot without the network);
* ``pypi:PACKAGE==VERSION#MEMBER`` runs ``pip download --no-deps --no-binary :all:`` (the sdist,
  nothing installed), then takes MEMBER out of the archive;
* ``file:PATH[#MEMBER]`` or a plain path: a file (or archive) already on disk.

Before any source, the directories in ``$MOBILENET_WEIGHTS_PATH`` (``os.pathsep``-separated) are
searched for a file of that name: the way to use copies that are already on disk. Where the
registry pins a SHA-256 it must match, whatever the source, or the file is rejected; where it
pins none (no publisher lists one), the file is accepted here and checked by its tensors on load.

A source written ``unpinned:...`` is a different file holding the same weights (TF's own archive
of the graph the default entry also takes from PyPI). It is used only when the caller passes
``verify``, a check of the converted tensors; a candidate that fails it (or cannot be read at all)
is discarded and the next source tried. A file that passed is kept as ``files/unpinned/FILENAME``,
never under the pinned file's own name: the pin keeps its meaning (``files/FILENAME`` is used
only when its SHA-256 matches), and the unpinned copy is used again only after ``verify`` passes
again. A source that fails for any reason (unreachable, checksum mismatch, a damaged or truncated
archive) is skipped for the next one; the error lists every source's failure.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from mobilenet.errors import MobileNetError
from mobilenet.files import atomic_write

CACHE_ENV = "MOBILENET_CACHE"
SEARCH_ENV = "MOBILENET_WEIGHTS_PATH"
PIP_TIMEOUT_S = 600
UNPINNED = "unpinned"  # the folder of files/ that keeps what unpinned: sources gave, verified
# What reading a damaged or truncated archive raises besides OSError (gzip.BadGzipFile, bz2): an
# interrupted download is cut short (EOFError), a damaged stream fails to inflate (zlib.error,
# lzma.LZMAError), a damaged zip member fails its CRC or names no known compression.
ARCHIVE_DAMAGE = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError)


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


def atomic_copy(src: Path, dest: Path) -> None:
    with atomic_write(dest) as tmp, open(src, "rb") as f, open(tmp, "wb") as out:
        shutil.copyfileobj(f, out)


def fetch_file(
    filename: str, sha256: str | None, sources: tuple[str, ...], *, quiet: bool = False,
    verify: Callable[[Path], bool] | None = None,
) -> Path:
    """The verified local path of a weight file, fetching it into the cache if needed.

    ``sha256`` None: the file has no known checksum and is accepted as found (the caller checks
    its tensors). ``verify``: a check of ``unpinned:`` candidates (see the module docstring)."""
    target = cache_dir() / "files" / filename
    if target.is_file() and (sha256 is None or sha256_file(target) == sha256):
        return target
    for folder in filter(None, os.environ.get(SEARCH_ENV, "").split(os.pathsep)):
        candidate = Path(folder) / filename
        if candidate.is_file() and (sha256 is None or sha256_file(candidate) == sha256):
            return candidate
    unpinned_sources = any(source.startswith("unpinned:") for source in sources)
    kept = cache_dir() / "files" / UNPINNED / filename  # what an unpinned: source gave last time
    if verify is not None and unpinned_sources and kept.is_file():
        if _passes(verify, kept):
            return kept
        kept.unlink(missing_ok=True)  # damaged since, or no longer the pinned tensors: fetch again
    failures = []
    for source in sources:
        unpinned = source.startswith("unpinned:")
        if unpinned and verify is None:
            continue
        try:
            with tempfile.TemporaryDirectory(prefix="mobilenet-fetch-") as tmp:
                got = _fetch_source(source.removeprefix("unpinned:"), Path(tmp), quiet=quiet)
                if unpinned:
                    assert verify is not None
                    if not verify(got):
                        raise FetchError("the converted tensors differ from the pinned ones")
                elif sha256 is not None and (digest := sha256_file(got)) != sha256:
                    raise FetchError(f"checksum mismatch: expected sha256 {sha256}, got {digest}")
                dest = kept if unpinned else target  # a pinned name holds only its pinned bytes
                atomic_copy(got, dest)
            return dest
        # MobileNetError: FetchError, or verify's WeightFormatError for a candidate it cannot read.
        except (OSError, MobileNetError, subprocess.SubprocessError, urllib.error.URLError) as err:
            failures.append(f"{source}: {err}")
        except Exception as err:  # huggingface_hub raises its own errors (offline, not found, ...)
            if type(err).__module__.split(".")[0] != "huggingface_hub":
                raise
            failures.append(f"{source}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise FetchError(f"could not fetch {filename}:\n  " + "\n  ".join(failures or ["no sources"]))


def _passes(verify: Callable[[Path], bool], path: Path) -> bool:
    """``verify(path)``, a file it cannot read (damaged on disk) failing it like different tensors."""
    try:
        return verify(path)
    except MobileNetError:
        return False


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
    elif location.startswith("hf:"):
        return _hub_download(location.removeprefix("hf:"), member, workdir, quiet=quiet)
    else:
        archive = Path(location.removeprefix("file:")).expanduser()
        if not archive.is_file():
            raise FetchError(f"{archive}: no such file")
    return _extract_member(archive, member, workdir) if member else archive


def _hub_download(repo: str, filename: str, workdir: Path, *, quiet: bool) -> Path:
    """FILE of a Hugging Face Hub repository (``owner/name[@revision]``), through huggingface_hub."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise FetchError("hub sources need huggingface_hub: pip install huggingface_hub") from None
    repo_id, _, revision = repo.partition("@")
    if not filename:
        raise FetchError(f"hf:{repo}: name the file to take (hf:{repo}#FILE)")
    if not quiet:
        print(f"fetching {filename} from the Hugging Face Hub repository {repo_id}", file=sys.stderr)
    return Path(hf_hub_download(repo_id, filename, revision=revision or None))


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
    """Take one file out of a .tar.gz/.tgz/.zip; ``member`` may omit the archive's top folder.
    A damaged or truncated archive (an interrupted download) is a ``FetchError``."""
    try:
        return _copy_member(archive, member, workdir / Path(member).name)
    except ARCHIVE_DAMAGE as err:  # on one line: the fetch error gives each source one line
        reason = " ".join(f"{type(err).__name__}: {err}".split())
        raise FetchError(f"{archive.name} is damaged or truncated ({reason})") from None


def _copy_member(archive: Path, member: str, out: Path) -> Path:
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

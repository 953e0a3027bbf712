"""What ``mobilenet.files`` does with what already stands at an output path: a regular file is
replaced atomically, a symlink is followed (the link stays a link), a FIFO is written through (never
replaced by a regular file), and a directory is refused. Devices are never used here: a regression
would replace one."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from mobilenet.errors import InputError
from mobilenet.files import TEMP_SUFFIX, atomic_files, replace_directory, write_text


def _leftovers(folder: Path) -> list[Path]:
    return list(folder.glob(f".*{TEMP_SUFFIX}"))


def test_a_regular_file_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    write_text(target, "new")
    assert target.read_text() == "new" and not _leftovers(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_written_through_and_stays_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_text(fifo, '{"ok": true}\n')
    reader.join(timeout=10)
    assert received == [b'{"ok": true}\n']
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not _leftovers(tmp_path)


def test_a_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "store"
    elsewhere.mkdir()
    real = elsewhere / "model.json"
    real.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert not _leftovers(tmp_path) and not _leftovers(elsewhere)


def test_a_chain_of_links_and_a_dangling_link_land_on_the_file_named(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    first = tmp_path / "first"
    first.symlink_to(real)  # dangling until written
    second = tmp_path / "second"
    second.symlink_to(first)
    write_text(second, "content")
    assert real.read_text() == "content"
    assert first.is_symlink() and second.is_symlink()


def test_files_written_together_follow_their_links(tmp_path: Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "model.bin"
    link.symlink_to(real)
    with atomic_files([link, tmp_path / "model.xml"]) as (bin_tmp, xml_tmp):
        bin_tmp.write_bytes(b"weights")
        xml_tmp.write_bytes(b"<net/>")
    assert link.is_symlink() and real.read_bytes() == b"weights"
    assert (tmp_path / "model.xml").read_bytes() == b"<net/>"


def test_a_directory_at_the_path_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out.json"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_text(folder, "x")
    assert folder.is_dir()


def test_a_link_to_a_package_directory_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "store" / "m.mlpackage"
    real.mkdir(parents=True)
    (real / "old").write_text("old")
    link = tmp_path / "m.mlpackage"
    link.symlink_to(real)
    new = tmp_path / "store" / ".staged"
    new.mkdir()
    (new / "new").write_text("new")
    replace_directory(new, link, accept=lambda p: True, what="package")
    assert link.is_symlink() and (real / "new").read_text() == "new" and not (real / "old").exists()


def test_a_copy_that_fills_the_disk_says_so_in_one_line() -> None:
    # shutil.copytree (coremltools saves a package with it) gathers its failures into one shutil.Error.
    import shutil

    from mobilenet.errors import ResourceError
    from mobilenet.files import write_error

    failure = shutil.Error([("/tmp/a/weight.bin", "/out/m.mlpackage/weight.bin",
                             "[Errno 28] No space left on device: '/tmp/a/weight.bin'")])
    error = write_error(failure, "/out/m.mlpackage")
    assert isinstance(error, ResourceError) and str(error) == "cannot write /out/m.mlpackage: the disk is full"

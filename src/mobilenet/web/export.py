"""``export DIR --format web``: the web folder written, run in a real browser, verified, moved into place.

As every export (``mobilenet.deploy.export``): the writer (``deploy.formats.web``) fills a staging
folder beside the target; the folder's own page runs in headless Chromium (``web.browser``) on
real photos, which the page decodes and preprocesses itself; its logits are compared with the
PyTorch model's (``deploy.verify.compare``, fp32 tolerance: 1e-4 of the logits' spread); only a
folder that passes replaces the target (``files.replace_directory``). A mismatch raises
``ExportMismatchError`` and leaves the target as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy.export import ExportResult
from mobilenet.deploy.formats import web as writer
from mobilenet.deploy.verify import ExportMismatchError, compare, photo_batch
from mobilenet.errors import InputError
from mobilenet.files import refuse_replacing_other_than, replace_directory
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess, sample_photos
from mobilenet.web import assets, browser

WHAT = "web export"
# Seconds the page may take to load the model and classify every photo (a 17 MB model compiles
# in about 10 s on a busy 2-core machine).
PAGE_TIMEOUT_S = 180


def is_web_export(folder: Path) -> bool:
    """A folder this export wrote (and so may replace): its page, model and recipe are there."""
    return all((folder / name).is_file() for name in ("index.html", writer.MODEL_FILE, "preprocess.json"))


def check_web_export(path: str | os.PathLike[str], *, precision: str = "fp32") -> None:
    """Refuse, before any work, what ``export_web`` could not do: a precision the page does not
    run, a target that exists and is not a web export, no headless Chromium or no bundled
    onnxruntime-web here. Raises ``InputError``."""
    if precision not in writer.PRECISIONS:
        raise InputError(f"web export offers {', '.join(writer.PRECISIONS)}, not {precision}")
    refuse_replacing_other_than(path, is_web_export, WHAT)
    reason = browser.unavailable_reason()
    if reason is not None:
        raise browser.BrowserUnavailableError(f"a web export is verified in headless Chromium: {reason}")
    assets.onnxruntime_web()


def export_web(
    model: MobileNetV1,
    path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    preprocess: Preprocess | None = None,
    verify_images: Sequence[Path] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    **options: Any,
) -> ExportResult:
    """Write the folder ``path`` for ``model`` (see ``deploy.formats.web``), verify its page in
    headless Chromium against PyTorch on real photos (default ``sample_photos()``), and move it
    into place. ``options``: the writer's (``labels``). Returns what was written with its
    verification. Raises ``ExportMismatchError`` (and leaves ``path`` as it was) when the page's
    logits differ; ``BrowserUnavailableError`` when no headless Chromium can run here."""
    path = Path(path)
    check_web_export(path, precision=precision)
    preprocess = preprocess or writer.page_preprocess(model)
    photos = list(verify_images) if verify_images is not None else sample_photos()
    expected = photo_batch(model, photos, preprocess)
    with torch.no_grad():
        expected = model.eval()(expected)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror}") from err
    with staging as tmp:
        staged = Path(tmp) / "web"
        writer.write(model, staged, precision=precision, preprocess=preprocess, **options)
        logits = classify_in_page(staged, photos)
        check = compare(expected, [logits], runtime=writer.RUNTIME, precision=precision, batch_sizes=(1,))
        size = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())
        replace_directory(staged, path, accept=is_web_export, what=WHAT, inputs=inputs)
    cfg = model.arch_cfg
    return ExportResult(files=(path,), format=writer.NAME, precision=precision, model=cfg.name,
                        input=f"dynamic batch, input NCHW {cfg.in_channels}x{cfg.height}x{cfg.width}",
                        size_bytes=size, verification=check)


def classify_in_page(folder: Path, photos: Sequence[Path]) -> torch.Tensor:
    """Open ``folder``'s own page in headless Chromium and have it classify each photo file (it
    decodes and preprocesses them itself); returns the logits, one row per photo."""
    handed = {f"__photos__/{i}": Path(p).read_bytes() for i, p in enumerate(photos)}
    rows = browser.in_own_thread(lambda: _run_page(folder, handed))
    return torch.tensor(rows, dtype=torch.float32)


def _run_page(folder: Path, handed: dict[str, bytes]) -> list[list[float]]:
    errors: list[str] = []
    with browser.headless_chromium() as context:
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(browser.serve_folder(context, folder, handed))
        try:
            rows = page.evaluate(
                """async (count) => {
                    await window.mobilenetPage.ready;
                    const rows = [];
                    for (let i = 0; i < count; i++) {
                        const blob = await (await fetch(`__photos__/${i}`)).blob();
                        rows.push((await window.mobilenetPage.classify(blob)).logits);
                    }
                    return rows;
                }""",
                len(handed),
            )
        except Exception as err:  # Playwright reports the page's own exception as its Error
            detail = "; ".join(errors) or str(err).splitlines()[0]
            raise ExportMismatchError(f"the exported page failed in headless Chromium: {detail}") from None
    return rows

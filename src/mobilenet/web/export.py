"""``export DIR --format web``: the web folder written, run in a real browser, verified, moved into place.

As every export (``mobilenet.deploy.export``): the writer (``web.writer``) fills a staging
folder beside the target; the folder's own page runs in headless Chromium (``web.browser``) on
real photos; only a folder that passes replaces the target (``files.replace_directory``). A
mismatch raises ``ExportMismatchError`` and leaves the target as it was.

The page is checked twice on each photo. From the photo's pixels, decoded here as the weights'
publisher decoded them, the page preprocesses and runs the model, and its logits must equal the
PyTorch model's to the fp32 tolerance (``deploy.verify.compare``: 1e-4 of the logits' spread).
From the photo's file, which the browser decodes itself, the page must give PyTorch's class
wherever PyTorch decides clearly (``check_browser_decoding``: a browser's JPEG decoder is not TF's).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mobilenet.deploy.export import ExportResult
from mobilenet.deploy.verify import ExportMismatchError, compare, logit_spread
from mobilenet.errors import InputError
from mobilenet.files import refuse_replacing_other_than, replace_directory
from mobilenet.model import MobileNetV1
from mobilenet.preprocess import Preprocess, sample_photos
from mobilenet.web import assets, browser, writer

WHAT = "web export"
# Seconds the page may take to load the model and classify every photo (a 17 MB model compiles
# in about 10 s on a busy 2-core machine).
PAGE_TIMEOUT_S = 180
# Of the logits' spread: where PyTorch's best class leads by more than this, the page's answer from
# a file the browser decoded itself must be the same class (see check_browser_decoding).
DECODING_MARGIN = 0.1


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
    """Write the folder ``path`` for ``model`` (see ``web.writer``), verify its page in
    headless Chromium against PyTorch on real photos (default ``sample_photos()``), and move it
    into place. ``options``: the writer's (``labels``). Returns what was written with its
    verification. Raises ``ExportMismatchError`` (and leaves ``path`` as it was) when the page's
    logits differ; ``BrowserUnavailableError`` when no headless Chromium can run here."""
    path = Path(path)
    check_web_export(path, precision=precision)
    preprocess = preprocess or writer.page_preprocess(model)
    photos = list(verify_images) if verify_images is not None else sample_photos()
    if not photos:
        raise InputError("no real images to verify the web export with; pass some image files")
    images = [preprocess.open_image(p) for p in photos]  # decoded as the weights' publisher decoded them
    with torch.no_grad():
        expected = model.eval()(torch.stack([preprocess.eval_transform()(image) for image in images]))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.")
    except OSError as err:
        raise InputError(f"cannot write {path}: {err.strerror}") from err
    with staging as tmp:
        staged = Path(tmp) / "web"
        writer.write(model, staged, precision=precision, preprocess=preprocess, **options)
        from_pixels, from_files = classify_in_page(staged, photos, images)
        check = compare(expected, [from_pixels], runtime=writer.RUNTIME, precision=precision, batch_sizes=(1,))
        check_browser_decoding(expected, from_files, photos)
        size = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())
        replace_directory(staged, path, accept=is_web_export, what=WHAT, inputs=inputs)
    cfg = model.arch_cfg
    return ExportResult(files=(path,), format=writer.NAME, precision=precision, model=cfg.name,
                        input=f"dynamic batch, input NCHW {cfg.in_channels}x{cfg.height}x{cfg.width}",
                        size_bytes=size, verification=check)


def check_browser_decoding(expected: torch.Tensor, from_files: torch.Tensor, photos: Sequence[Path]) -> None:
    """The page's answers from the photo files, which the browser decodes itself, must keep
    PyTorch's class wherever PyTorch decides clearly (its best logit leads the next by more than
    ``DECODING_MARGIN`` of the spread). Browsers decode JPEGs with libjpeg-turbo's accurate IDCT;
    TF decoded its evaluation images with the fast one (``Preprocess.decoder``), a level or two
    apart on many pixels, so these logits are held to the class, not to the fp32 tolerance."""
    spread = logit_spread(expected)
    top2 = expected.topk(2, dim=1).values
    for i, photo in enumerate(photos):
        decisive = top2[i, 0] - top2[i, 1] > DECODING_MARGIN * spread
        if decisive and int(from_files[i].argmax()) != int(expected[i].argmax()):
            raise ExportMismatchError(
                f"the exported page, decoding {Path(photo).name} itself, gives class {int(from_files[i].argmax())} "
                f"where PyTorch gives {int(expected[i].argmax())}"
            )


def classify_in_page(folder: Path, photos: Sequence[Path], images: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    """Open ``folder``'s own page in headless Chromium and have it classify each photo twice: from
    ``images`` (RGB, decoded here), then from the file, which the page decodes itself. Returns
    the two sets of logits, one row per photo."""
    handed = {f"__photos__/{i}": Path(p).read_bytes() for i, p in enumerate(photos)}
    handed |= {f"__pixels__/{i}": image.convert("RGBA").tobytes() for i, image in enumerate(images)}
    sizes = [[image.width, image.height] for image in images]
    pixels, files = browser.in_own_thread(lambda: _run_page(folder, handed, sizes))
    return torch.tensor(pixels, dtype=torch.float32), torch.tensor(files, dtype=torch.float32)


def _run_page(folder: Path, handed: dict[str, bytes], sizes: list[list[int]]) -> tuple[list[Any], list[Any]]:
    errors: list[str] = []
    with browser.headless_chromium() as context:
        page = context.new_page()
        page.set_default_timeout(PAGE_TIMEOUT_S * 1000)
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(browser.serve_folder(context, folder, handed))
        try:
            return page.evaluate(
                """async (sizes) => {
                    await window.mobilenetPage.ready;
                    const pixels = [], files = [];
                    for (const [i, [width, height]] of sizes.entries()) {
                        const rgba = new Uint8Array(await (await fetch(`__pixels__/${i}`)).arrayBuffer());
                        pixels.push((await window.mobilenetPage.classifyPixels(rgba, width, height)).logits);
                        const file = await (await fetch(`__photos__/${i}`)).blob();
                        files.push((await window.mobilenetPage.classify(file)).logits);
                    }
                    return [pixels, files];
                }""",
                sizes,
            )
        except Exception as err:  # Playwright reports the page's own exception as its Error
            detail = "; ".join(errors) or str(err).splitlines()[0]
            raise ExportMismatchError(f"the exported page failed in headless Chromium: {detail}") from None

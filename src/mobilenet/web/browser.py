"""Headless Chromium, for verifying ``export --format web`` and for the explorer's tests.

Debian's ``chromium`` (``apt-get install chromium``) driven by Playwright for Python; never a browser
that Playwright downloads (``playwright install`` is not needed and not used). Every launch gets a
fresh user-data folder and flags that keep the browser off the network (no background requests,
component updates or sync), so a verification is the same on a machine with no network at all.

Files are handed to the page through Playwright's request routing (``serve_folder``): the page
believes it is on ``http://mobilenet.invalid/``, nothing listens on a port, and only files inside the
folder can be answered.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mobilenet.errors import InputError

CHROMIUM_ENV = "MOBILENET_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
FLAGS: tuple[str, ...] = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)
# An origin that can never resolve (RFC 2606): every request to it is answered by serve_folder.
ORIGIN = "http://mobilenet.invalid"
CONTENT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
                 ".json": "application/json", ".onnx": "application/octet-stream", ".html": "text/html"}


T = TypeVar("T")


class BrowserUnavailableError(InputError):
    """No headless Chromium here (or no Playwright to drive it); the message says what to install."""


def chromium_path() -> Path:
    """The Chromium executable: ``$MOBILENET_CHROMIUM``, else Debian's ``/usr/bin/chromium``."""
    return Path(os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM)


def unavailable_reason() -> str | None:
    """Why a headless browser cannot run here, or None when it can."""
    if not chromium_path().is_file():
        return (f"no Chromium at {chromium_path()} (apt-get install chromium, or set ${CHROMIUM_ENV} "
                "to a Chromium executable)")
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright; no `playwright install` needed)"
    return None


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A Playwright ``BrowserContext`` of a freshly started headless Chromium with its own empty
    user-data folder; the browser and the folder are gone when the block ends."""
    reason = unavailable_reason()
    if reason is not None:
        raise BrowserUnavailableError(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    profile = tempfile.mkdtemp(prefix="mobilenet-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=str(chromium_path()), headless=True, args=list(FLAGS),
            )
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def serve_folder(context: Any, folder: str | os.PathLike[str], extra: dict[str, bytes] | None = None) -> str:
    """Answer the page's requests to ``ORIGIN`` with the files of ``folder`` (and ``extra``: path ->
    bytes, for inputs a check hands the page); returns the URL of ``index.html``. Anything outside
    the folder, or absent, is a 404. Cross-origin isolation headers let onnxruntime-web use threads."""
    root = Path(folder).resolve()
    extra = extra or {}

    def answer(route: Any) -> None:
        path = route.request.url[len(ORIGIN) + 1:].split("?", 1)[0]
        headers = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
        if path in extra:
            route.fulfill(status=200, body=extra[path], content_type="application/octet-stream", headers=headers)
            return
        target = (root / path).resolve()
        if not target.is_file() or not target.is_relative_to(root):
            route.fulfill(status=404, body=b"not found")
            return
        kind = CONTENT_TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        route.fulfill(status=200, body=target.read_bytes(), content_type=kind, headers=headers)

    context.route(f"{ORIGIN}/**", answer)
    return f"{ORIGIN}/index.html"


def in_own_thread(work: Callable[[], T]) -> T:
    """``work()`` run in a thread of its own, its result or exception handed back. Playwright's
    sync API refuses to start where an asyncio loop runs (a notebook, a server, another Playwright
    session in this thread); a fresh thread has none."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as err:  # handed to the caller, whatever it is
            outcome["error"] = err

    thread = threading.Thread(target=run, name="mobilenet-chromium")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]

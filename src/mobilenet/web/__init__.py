"""The explorer: a local web app that shows what the library computes (``mobilenet explore``).

=================  ============================================================================
``assets``         where the browser files are (the page, ``classify.js``, onnxruntime-web from
                   npm); the only module here that ``deploy`` reads (the web export writer)
``cost_view``      the cost view's JSON: ``mobilenet.cost`` for the page's settings
``time_view``      predicted time (``mobilenet.latency``), measured time, the choice of a model
``classifier``     photos classified on the server, and the ONNX files the browser runs
``jobs``           measurements and calibrations in a background thread, progress polled
``app``            the Starlette application: routes, upload limits, errors as JSON
``serve``          uvicorn on 127.0.0.1 (by default), the address printed, Ctrl-C stops it
``browser``        headless Chromium (Debian's, driven by Playwright) for checks and tests
``export``         ``export DIR --format web``: the page verified in that browser, then kept
=================  ============================================================================

The page computes nothing itself: every number it shows comes from the server, which asks the
library (``mobilenet.cost`` for costs, ``mobilenet.latency`` for time). The server needs the
``[web]`` extra (Starlette and uvicorn); ``require_server`` says so in one line when it is missing.
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from mobilenet.errors import InputError
from mobilenet.lazy import submodule

SERVER_PACKAGES: tuple[str, ...] = ("starlette", "uvicorn")


class MissingWebExtraError(InputError, ImportError):
    """Starlette or uvicorn is not installed: the message names the extra that installs them."""


def require_server() -> None:
    """Raise ``MissingWebExtraError`` unless the server's packages can be imported."""
    missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingWebExtraError(
            f"the explorer needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            "pip install 'mobilenet[web]'"
        )


def __getattr__(name: str) -> ModuleType:
    return submodule(__name__, name)  # mobilenet.web.serve, .app...: imported when first named

"""Where the browser files live: the explorer's page and the runtime bundled from npm.

``static/`` holds the page (``index.html``, its scripts and ``explorer.css``), the in-browser
classifier both the explorer and ``export --format web`` use (``classify.js``), the exported page's
template (``export.html``) and, under ``vendor/onnxruntime-web/``, onnxruntime-web's WASM build,
copied from the npm registry's package when the project is installed (``make``: ``npm ci`` and
``npm run build`` in ``web/``). Nothing is fetched at run time.

This module only locates files and imports nothing of the project but its errors: it is what the
web export writer (``mobilenet.web.writer``) reads, below the server modules of this package.
"""

from __future__ import annotations

import json
from pathlib import Path

from mobilenet.errors import InputError

STATIC = Path(__file__).resolve().parent / "static"
ORT_DIR = STATIC / "vendor" / "onnxruntime-web"
# The WASM-only build: the loader, the Emscripten module it imports, and the SIMD+threads binary.
ORT_FILES: tuple[str, ...] = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CLASSIFIER = STATIC / "classify.js"
EXPORT_PAGE = STATIC / "export.html"
# What the explorer's page itself loads (without the model): the size the docs quote.
PAGE_FILES: tuple[str, ...] = ("index.html", "explorer.css", "page.js", "charts.js", "cost-view.js", "time-view.js",
                               "classify-view.js", "explorer.js", "classify.js")


class AssetsMissingError(InputError):
    """onnxruntime-web was not bundled into this installation."""


def onnxruntime_web() -> Path:
    """The folder of the bundled onnxruntime-web files; ``AssetsMissingError`` if any is absent."""
    missing = [name for name in ORT_FILES if not (ORT_DIR / name).is_file()]
    if missing:
        raise AssetsMissingError(
            f"onnxruntime-web is not bundled in this installation (missing {', '.join(missing)}): run `make` in the "
            "project, or `npm ci && npm run build` in its web/ folder, which copy it from the npm registry's package"
        )
    return ORT_DIR


def onnxruntime_web_version() -> str:
    """The bundled onnxruntime-web's version, from its own package.json ("" when not bundled)."""
    try:
        return str(json.loads((ORT_DIR / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return ""


def page_bytes() -> dict[str, int]:
    """Bytes of what the explorer's page downloads before any model: its own files and the runtime."""
    sizes = {name: (STATIC / name).stat().st_size for name in PAGE_FILES if (STATIC / name).is_file()}
    sizes |= {f"vendor/onnxruntime-web/{name}": (ORT_DIR / name).stat().st_size
              for name in ORT_FILES if (ORT_DIR / name).is_file()}
    return sizes

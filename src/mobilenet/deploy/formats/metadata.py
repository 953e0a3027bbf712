"""What an exported file says about the model inside it, whatever its format: the JSON description
a writer stores (``mobile.model_description``: name, architecture, precision, layout,
preprocessing, one label per output), so that the file can be evaluated and classified alone.

===============  ================================================================================
file             where the description lives
===============  ================================================================================
``.tflite``      the ``mobilenet`` entry of ``Model.metadata`` (``tflite_flatbuffer``)
``.pte``         the ``mobilenet_metadata`` constant method (``executorch``)
``.mlpackage``   user-defined ``mobilenet.*`` entries (``coreml``)
``.onnx``        ``metadata_props`` key ``mobilenet``, a JSON string
``.xml``         ``rt_info`` key ``mobilenet``, a JSON string (OpenVINO)
===============  ================================================================================

``read_export_metadata`` returns None for a file without one (TF's own ``.tflite`` files, and
exports from before the format carried it). A file is checked against the checksums its export
wrote beside it first (``integrity``): a damaged one is a ``DamagedFileError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mobilenet.deploy.formats import format_for_path
from mobilenet.deploy.integrity import verify_checksums
from mobilenet.deploy.optional import require
from mobilenet.errors import InputError

# The key of the description in .onnx metadata_props and OpenVINO rt_info: defined here, by the
# reader, and imported by the writers (onnx, openvino), so that the two sides cannot drift apart.
METADATA_KEY = "mobilenet"


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The description ``path`` carries (see the module docstring), or None. A file its format's
    reader cannot parse is an ``InputError`` naming it; a missing runtime one naming its extra."""
    path = Path(path)
    fmt = format_for_path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    verify_checksums(path)  # a damaged export is refused before any of it is believed
    try:
        meta = _read(path, fmt)
    except InputError:
        raise
    except Exception as err:  # each format's library raises its own errors for a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{path}: not a readable {fmt} file ({reason}); is it damaged?") from None
    if meta is not None and not isinstance(meta, dict):
        raise InputError(f"{path}: its {METADATA_KEY} metadata is not a JSON object")
    return meta


def _read(path: Path, fmt: str) -> Any:
    if fmt == "tflite":
        from mobilenet.deploy.formats.tflite_flatbuffer import read_metadata  # noqa: PLC0415

        return read_metadata(path)
    if fmt == "executorch":
        from mobilenet.deploy.formats.executorch import read_metadata  # noqa: PLC0415

        return read_metadata(path)
    if fmt == "coreml":
        from mobilenet.deploy.formats.coreml import read_metadata  # noqa: PLC0415

        return read_metadata(path) or None
    if fmt == "onnx":
        props = require("onnx").load(str(path), load_external_data=False).metadata_props
        raw = next((p.value for p in props if p.key == METADATA_KEY), None)
    else:  # openvino
        info = require("openvino").Core().read_model(str(path)).get_rt_info()
        raw = info[METADATA_KEY].astype(str) if METADATA_KEY in info else None
    return json.loads(raw) if raw else None

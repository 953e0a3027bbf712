"""The cost view's numbers: ``mobilenet.cost`` for the settings the page sends, as JSON.

Nothing here counts anything. Query values arrive as text; ``settings_from_query`` turns what reads
as a number into one and hands everything else on unchanged, so that ``ArchConfig`` (and
``network_cost`` for the bytes per element) judge every value with their own messages, exactly as
the command line's values are judged. The totals are ``NetworkCost.to_dict()``'s, the very
dictionary ``mobilenet cost --json`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mobilenet import cost
from mobilenet.arch import ArchConfig
from mobilenet.errors import InputError, Spelling

# Query parameter -> ArchConfig field (the command line's names, as the page's controls use them).
QUERY_FIELDS: dict[str, str] = {
    "alpha": "alpha", "variant": "variant", "depth_multiplier": "depth_multiplier", "classes": "num_classes",
    "activation": "activation", "padding": "padding", "rounding": "rounding",
}
# How a message names a parameter to the page: by its query name.
QUERY_SPELLING = Spelling({field: key for key, field in QUERY_FIELDS.items() if key != field})
DEFAULT_BYTES_PER_ELEMENT = 4


def number_or_text(text: str) -> int | float | str:
    """``"224"`` -> 224, ``"0.75"`` -> 0.75, anything else unchanged (for the validator to refuse)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def settings_from_query(query: Mapping[str, str]) -> tuple[dict[str, Any], Any]:
    """(``ArchConfig`` settings, bytes per element) from the page's query. The resolution is
    ``resolution`` (square) or ``height`` and ``width``; a value left empty is "not given"."""
    given = {key: value.strip() for key, value in query.items() if value.strip() != ""}
    settings = {field: number_or_text(given[key]) for key, field in QUERY_FIELDS.items() if key in given}
    if "height" in given or "width" in given:
        if "resolution" in given:
            raise InputError("give either resolution or height and width, not both")
        if not ("height" in given and "width" in given):
            raise InputError("height and width go together")
        settings["resolution"] = (number_or_text(given["height"]), number_or_text(given["width"]))
    elif "resolution" in given:
        settings["resolution"] = number_or_text(given["resolution"])
    bytes_per_element = number_or_text(given.get("bytes_per_element", str(DEFAULT_BYTES_PER_ELEMENT)))
    return settings, bytes_per_element


def config_from_query(query: Mapping[str, str]) -> tuple[ArchConfig, Any]:
    """The ``ArchConfig`` the query describes (its own validation) and the bytes per element."""
    settings, bytes_per_element = settings_from_query(query)
    return ArchConfig(**settings), bytes_per_element


def cost_view(query: Mapping[str, str]) -> dict[str, Any]:
    """Everything the cost view shows: ``network`` (every layer, the totals and Table 2's shares,
    as ``mobilenet cost --json``) and ``comparison`` (every separable block against the full
    convolution it replaces, as ``mobilenet compare --json``; None for Table 4's network, which
    has no separable block)."""
    cfg, bytes_per_element = config_from_query(query)
    network = cost.network_cost(cfg, bytes_per_element=bytes_per_element)
    comparison = cost.compare(cfg, bytes_per_element=bytes_per_element) if cfg.variant != "conv" else None
    return {
        "network": network.to_dict(),
        "comparison": comparison.to_dict() if comparison is not None else None,
        "units": {"mult_adds": "multiply-accumulates", "memory": f"bytes at {bytes_per_element} B/element"},
    }

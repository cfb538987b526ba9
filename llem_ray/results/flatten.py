"""Nested mappings as one level with dotted keys (`energy.sample_hz`): one helper for every flat view.

Used for a result's CSV row (results/persistence.py) and for the fields a sweep varies
(display.varying_fields).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def flatten_dotted(data: Mapping[str, Any], *, lists_as_json: bool = False) -> dict[str, Any]:
    """`data` with every nested mapping spread into dotted keys, in `data`'s order.

    With `lists_as_json` (a CSV row) lists and tuples become JSON text and an empty mapping adds no
    key. Without it (comparing values) lists stay as they are and an empty mapping is the value of
    its own key, so a section that is present but empty differs from one that is absent. Raises
    TypeError (from json) for a list holding a value JSON cannot encode.
    """
    flat: dict[str, Any] = {}
    _into(data, "", flat, lists_as_json)
    return flat


def _into(data: Mapping[str, Any], prefix: str, flat: dict[str, Any], lists_as_json: bool) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and (value or lists_as_json):
            _into(value, f"{name}.", flat, lists_as_json)
        elif lists_as_json and isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value

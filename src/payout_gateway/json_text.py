"""JSON text encoded in C (orjson), and the standard library's encoding for what orjson refuses."""

from __future__ import annotations

import json

import orjson


def json_text(value: object) -> str:
    """Compact JSON text of ``value``. orjson refuses an integer beyond 64 bits and a dict key
    that is not a str; the standard library writes both, so those values fall back to it
    rather than failing."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"))

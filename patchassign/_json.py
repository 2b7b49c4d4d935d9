"""JSON value helpers shared by the core: equality with JSON types, copying, naming."""

from __future__ import annotations

import re
from typing import Any

_NUMBER = (int, float)

# A ``\\uD800``-``\\uDFFF`` escape that is not half of a pair (after an even number of
# backslashes, so that ``\\\\ud800`` — a backslash, then text — is not one).
_LONE_SURROGATE = re.compile(
    r"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|(?<![0-9a-fA-F]{2}\\u[dD][89abAB])\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)


def why_not_json(data: str | bytes | bytearray | memoryview, error: Exception) -> str:
    """Why ``data`` is not JSON, from msgspec's ``DecodeError``, said plainly where its
    words mislead: an empty text is "truncated" to it, and so is a lone surrogate
    escape (``"\\ud800"``: half of a character, which JSON text cannot hold) at the end
    of the text."""
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    if not text.strip():
        return "the text is empty"
    said = str(error)
    if "truncated" in said or "escape" in said:
        lone = _LONE_SURROGATE.search(text)
        if lone is not None:
            return (
                f"{lone.group(1)} at character {lone.start(1)} is half of a surrogate pair "
                "alone: not a character (JSON text is Unicode)"
            )
    if said == "Input data was truncated":
        return "the text ends before its JSON value does (truncated)"
    return said


def json_equal(a: Any, b: Any) -> bool:
    """Compare two JSON values as JSON does.

    ``1 == 1.0``, but ``true != 1`` and ``false != 0`` (Python's ``True == 1`` would say
    otherwise); objects compare regardless of key order, arrays in order.
    """
    if a is b:
        return True
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is dict:
            if len(a) != len(b):
                return False
            for k, v in a.items():
                # A missing key can't be told from a None value with .get: check.
                if k not in b:
                    return False
                w = b[k]
                if v is not w and not json_equal(v, w):
                    return False
            return True
        if ta is list:
            if len(a) != len(b):
                return False
            for v, w in zip(a, b, strict=True):  # noqa: SIM110 - a loop beats all() on this hot path
                if v is not w and not json_equal(v, w):
                    return False
            return True
        return bool(a == b)
    if ta is bool or tb is bool:
        return False
    if ta in _NUMBER and tb in _NUMBER:
        return bool(a == b)
    # Tuples and other sequences/mappings are not JSON; compare them as their
    # JSON encodings would only if they are the JSON types' subclasses.
    if isinstance(a, dict) and isinstance(b, dict):
        return json_equal(dict(a), dict(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return json_equal(list(a), list(b))
    return False


def deep_copy(value: Any) -> Any:
    """Copy a JSON value so that no container is shared with the original."""
    t = type(value)
    if t is dict:
        return {k: deep_copy(v) if type(v) in _CONTAINERS else v for k, v in value.items()}
    if t is list:
        return [deep_copy(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = frozenset({dict, list})


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def a_type_name(value: Any) -> str:
    """``type_name`` with its article, for messages: "a string", "an object", "null"."""
    name = type_name(value)
    if name == "null":
        return name
    return ("an " if name[0] in "aeiou" else "a ") + name

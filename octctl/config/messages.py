"""Plain-words wording for config problems, shared by the pydantic mapping and the semantic checks.

The audience is someone editing oct.toml, so types are named as TOML names them (integer, string,
array, table) and values are shown as they would be written in the file.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PORT_RANGE = (1, 65535)


def describe(value: object) -> str:
    """``value`` as it would appear in TOML (``"250"``, ``true``) or, for containers, its kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{value!s}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def quoted_list(names: Sequence[str]) -> str:
    return ", ".join(f"'{name}'" for name in names) if names else "none"


def positive_message(value: object) -> str:
    return f"expected an integer greater than 0, got {describe(value)}"


def port_message(value: object) -> str:
    low, high = PORT_RANGE
    return f"expected a port number between {low} and {high}, got {describe(value)}"


def unknown_key_message(key: str, fields: Sequence[str]) -> str:
    hint = did_you_mean(key, fields)
    if not hint and fields:
        hint = f"; expected one of {quoted_list(fields)}"
    return f"unknown key '{key}'{hint}"


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def pydantic_message(error: Mapping[str, Any], fields: Sequence[str]) -> str:
    """Translate one pydantic error; ``fields`` are the keys allowed where the error occurred."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    loc: tuple[str | int, ...] = tuple(error.get("loc") or ())
    is_port = bool(loc) and str(loc[-1]).endswith("_port")
    if kind == "missing":
        return "field required"
    if kind == "extra_forbidden":
        return unknown_key_message(str(loc[-1]) if loc else "?", fields)
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if is_port and kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return port_message(value)
    # A bound written as a float (seconds) is a field that takes fractions: say "a number".
    number = "a number" if any(isinstance(v, float) for v in ctx.values()) else "an integer"
    if kind == "greater_than":
        return f"expected {number} greater than {ctx['gt']}, got {describe(value)}"
    if kind == "greater_than_equal":
        return f"expected {number} of at least {ctx['ge']}, got {describe(value)}"
    if kind == "less_than_equal":
        return f"expected {number} of at most {ctx['le']}, got {describe(value)}"
    if kind == "literal_error":
        return f"expected {ctx['expected']}, got {describe(value)}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return str(error["msg"])

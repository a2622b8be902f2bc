"""How big anything a client sends may be: the bounds every request body is held to.

A request is hostile until checked. These bounds keep each one's memory and time in proportion
to what a TAMS client legitimately sends, and keep every value inside what the databases can
store and index:

- the body itself (``max_body_bytes``, a setting; checked as it streams in, ``api/limits.py``);
- its JSON: nesting depth, members of one object or array, bytes of one string;
- numbers: a number without a fractional part is an integer (JSON Schema 2020-12 counts 105.0 as
  one), is stored as one, and must fit a signed 64-bit integer;
- strings that the databases index (labels, tag names and values, URLs, Object ids): a
  PostgreSQL B-tree entry holds at most ~2,700 bytes, so these are bounded well below it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tamstore.domain.errors import BadRequest, TooLarge
from tamstore.domain.timerange import INT64_MAX, INT64_MIN

__all__ = [
    "INT32_MAX",
    "INT64_MAX",
    "INT64_MIN",
    "JsonLimits",
    "MAX_ID_BYTES",
    "MAX_LABEL_BYTES",
    "MAX_TAG_NAME_BYTES",
    "MAX_TAG_VALUE_BYTES",
    "MAX_URL_BYTES",
    "check_int",
    "check_json",
    "check_text",
]

INT32_MAX = 2**31 - 1

# Strings kept in indexed columns (UTF-8 bytes). A tag's name, value and owner id share one index
# entry: 256 + 2,048 + 36 stays under PostgreSQL's limit whatever the characters.
MAX_LABEL_BYTES = 1024
MAX_TAG_NAME_BYTES = 256
MAX_TAG_VALUE_BYTES = 2048
MAX_URL_BYTES = 2048
MAX_ID_BYTES = 1024


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """Bounds on the shape of a JSON body (not its size in bytes: that is checked as it arrives)."""

    max_depth: int = 32
    max_items: int = 10_000  # members of one object or elements of one array
    max_string_bytes: int = 65_536


def _utf8_len(text: str) -> int:
    # A character is at most 4 bytes: most strings are cleared without encoding them.
    n = len(text)
    return n if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def check_text(text: str, limit: int, what: str) -> str:
    """``text`` when it is at most ``limit`` UTF-8 bytes, else a 400 naming ``what``."""
    if len(text) > limit or (len(text) * 4 > limit and _utf8_len(text) > limit):
        raise TooLarge(f"{what} is longer than {limit} bytes")
    return text


def check_int(value: int, what: str, maximum: int = INT64_MAX, minimum: int = INT64_MIN) -> int:
    if not minimum <= value <= maximum:
        raise BadRequest(f"{what} {value} is out of range ({minimum} to {maximum})")
    return value


def check_json(value: Any, limits: JsonLimits) -> Any:
    """``value`` (as parsed from JSON) held to ``limits``, with integral floats made integers.
    Raises BadRequest naming the first thing out of bounds."""
    return _walk(value, limits, 0, "$")


def _walk(value: Any, limits: JsonLimits, depth: int, where: str) -> Any:
    kind = type(value)
    if kind is dict or kind is list:
        if depth >= limits.max_depth:
            raise TooLarge(f"the request body is nested more than {limits.max_depth} levels deep")
        if len(value) > limits.max_items:
            raise TooLarge(f"{where} has more than {limits.max_items} members")
        # A short string member is cleared here, without a call or its path: a 1,000-segment
        # batch has thousands of them (its check 1.2 -> 0.6 ms).
        short = limits.max_string_bytes // 4
        if kind is list:
            for i, item in enumerate(value):
                if type(item) is str and len(item) <= short:
                    continue
                checked = _walk(item, limits, depth + 1, where)
                if checked is not item:
                    value[i] = checked
            return value
        for key, item in value.items():
            if len(key) > short:
                check_text(key, limits.max_string_bytes, f"a member name in {where}")
            if type(item) is str and len(item) <= short:
                continue
            checked = _walk(item, limits, depth + 1, f"{where}.{key[:64]}")
            if checked is not item:
                value[key] = checked
        return value
    if kind is str:
        if len(value) * 4 > limits.max_string_bytes:
            check_text(value, limits.max_string_bytes, f"the string at {where}")
        return value
    if kind is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadRequest(f"the number at {where} does not fit a signed 64-bit integer")
        return value
    if kind is float:
        if value.is_integer():
            if not INT64_MIN <= value <= INT64_MAX:
                raise BadRequest(f"the number at {where} does not fit a signed 64-bit integer")
            return int(value)
        return value
    return value  # None, True, False

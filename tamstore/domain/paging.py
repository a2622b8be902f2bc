"""Pages of a listing and their opaque keyset cursors.

A cursor is the sort key of the last item of a page, so the next page is an indexed range scan
that starts where the last one stopped: its cost does not depend on how deep the client is in the
listing. Clients see it as an opaque url-safe string.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tamstore.domain.errors import BadRequest
from tamstore.domain.timerange import INT64_MAX, INT64_MIN

__all__ = ["Page", "PageRequest", "decode_cursor", "encode_cursor"]

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class PageRequest:
    limit: int
    after: tuple[Any, ...] | None = None
    reverse: bool = False


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    limit: int
    next_key: tuple[Any, ...] | None = None
    reverse: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def map(self, render: Callable[[T], U]) -> Page[U]:
        """The same page with each item rendered (rows to documents)."""
        return Page([render(i) for i in self.items], self.limit, self.next_key, self.reverse, self.extra)

    @property
    def next_cursor(self) -> str | None:
        return None if self.next_key is None else encode_cursor(self.next_key)


def encode_cursor(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, types: tuple[type, ...]) -> tuple[Any, ...]:
    """Decode a ``page`` value whose key has one part of each of ``types`` (``int`` parts are
    64-bit integers, ``str`` parts bounded strings): anything we did not produce is a 400 before
    it reaches SQL, never a 500."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"'page' value {text[:100]!r} is not a valid paging key") from exc
    if not isinstance(key, list) or len(key) != len(types):
        raise BadRequest(f"'page' value {text[:100]!r} is not a valid paging key for this listing")
    for part, kind in zip(key, types, strict=True):
        if type(part) is not kind or (isinstance(part, int) and not INT64_MIN <= part <= INT64_MAX):
            raise BadRequest(f"'page' value {text[:100]!r} is not a valid paging key for this listing")
    return tuple(key)


MAX_CURSOR_CHARS = 8192  # a key holds at most a label, a URL or an Object id, each bounded

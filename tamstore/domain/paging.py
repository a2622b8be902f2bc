"""Pages of a listing and their opaque keyset cursors.

A cursor is the sort key of the last item of a page, so the next page is an indexed range scan
that starts where the last one stopped: its cost does not depend on how deep the client is in the
listing. Clients see it as an opaque url-safe string.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tamstore.domain.errors import BadRequest

__all__ = ["Page", "PageRequest", "decode_cursor", "encode_cursor"]

T = TypeVar("T")


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

    @property
    def next_cursor(self) -> str | None:
        return None if self.next_key is None else encode_cursor(self.next_key)


def encode_cursor(key: tuple[Any, ...]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, arity: int) -> tuple[Any, ...]:
    """Decode a ``page`` value; anything we did not produce is a 400, not a 500."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"'page' value {text!r} is not a valid paging key") from exc
    if not isinstance(key, list) or len(key) != arity:
        raise BadRequest(f"'page' value {text!r} is not a valid paging key for this listing")
    for part in key:
        if not isinstance(part, (str, int)) or isinstance(part, bool):
            raise BadRequest(f"'page' value {text!r} is not a valid paging key")
    return tuple(key)

"""Tag values and tag queries (ADR 0040, AppNote 0003)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tamstore.domain.errors import BadRequest
from tamstore.domain.limits import MAX_TAG_NAME_BYTES, MAX_TAG_VALUE_BYTES, check_text

__all__ = ["TagFilter", "check_tag_name", "check_tag_value", "check_tags", "tags_match"]


@dataclass(frozen=True, slots=True)
class TagFilter:
    """``tag.{name}=v1,v2`` (``values`` set) or ``tag_exists.{name}=true|false``."""

    name: str
    values: tuple[str, ...] | None = None
    exists: bool | None = None


MAX_TAG_VALUES = 1000  # strings in one array-valued tag


def check_tag_name(name: str) -> str:
    """A tag name is non-empty and short enough to index."""
    if not name:
        raise BadRequest("a tag name must not be empty")
    return check_text(name, MAX_TAG_NAME_BYTES, f"tag name {name[:64]!r}")


def check_tag_value(value: Any) -> str | list[str]:
    """A tag value is a string or an array of strings, each short enough to index."""
    if isinstance(value, str):
        return check_text(value, MAX_TAG_VALUE_BYTES, "a tag value")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        if len(value) > MAX_TAG_VALUES:
            raise BadRequest(f"a tag holds at most {MAX_TAG_VALUES} values")
        for v in value:
            check_text(v, MAX_TAG_VALUE_BYTES, "a tag value")
        return value
    raise BadRequest("a tag value must be a JSON string or an array of strings")


def check_tags(tags: Any) -> dict[str, Any]:
    """A ``tags`` object: names and values as above (the schemas check the types too)."""
    if not isinstance(tags, dict):
        raise BadRequest("tags must be a JSON object")
    for name, value in tags.items():
        check_tag_name(name)
        check_tag_value(value)
    return tags


def tags_match(
    tags: dict[str, Any],
    values: dict[str, tuple[str, ...]],
    exists: dict[str, bool],
) -> bool:
    """In-memory form of ``tag.{name}=a,b`` / ``tag_exists.{name}=bool``, used where the tagged
    things are few and not in the database (Storage Backends)."""
    if not values and not exists:
        return True
    for name, wanted in values.items():
        have = tags.get(name)
        have_list = have if isinstance(have, list) else ([] if have is None else [have])
        if not set(have_list) & set(wanted):
            return False
    return all((name in tags) == flag for name, flag in exists.items())

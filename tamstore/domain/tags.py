"""Tag values and tag queries (ADR 0040, AppNote 0003)."""

from __future__ import annotations

from typing import Any

from tamstore.domain.errors import BadRequest

__all__ = ["check_tag_value", "tags_match"]


def check_tag_value(value: Any) -> str | list[str]:
    """A tag value is a string or an array of strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest("a tag value must be a JSON string or an array of strings")


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

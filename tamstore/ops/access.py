"""The auth classes of the request being served, as the operations enforce them.

The authentication middleware sets :data:`CURRENT` to the caller's :class:`Access` for each
request; outside requests (background workers, command-line tools) it is ``EVERYTHING``: they
act as the service. Listings pass ``current()`` to the store, which filters in SQL; lookups by
id check the row they fetched with :func:`require`, which answers a resource the caller may
not read exactly as a missing one (404, same words), so that ids cannot be probed, and one it
may read but not change with 403.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import orjson

from tamstore.domain.access import AUTH_CLASSES_TAG, EVERYTHING, READ, Access, check_classes_value, classes_of
from tamstore.domain.errors import Forbidden, NotFound

__all__ = [
    "CURRENT",
    "current",
    "check_reclassing",
    "doc_classes",
    "require",
    "require_flow",
    "require_source",
    "tags_classes",
]

CURRENT: ContextVar[Access] = ContextVar("tamstore_access", default=EVERYTHING)


def current() -> Access:
    return CURRENT.get()


def tags_classes(tags: Any) -> frozenset[str]:
    return classes_of(tags if isinstance(tags, dict) else None)


def doc_classes(doc_json: str | bytes) -> frozenset[str]:
    """The classes in a stored JSON document's ``tags``."""
    return tags_classes(orjson.loads(doc_json).get("tags"))


def require(what: str, classes: frozenset[str], action: str = READ, *, missing: str | None = None) -> None:
    """Refuse the current caller ``action`` on a resource with ``classes``: 404 (``missing``,
    the words a missing resource gets) when it may not even read it, else 403."""
    access = current()
    if access.allows(action, classes):
        return
    if action == READ or not access.allows(READ, classes):
        raise NotFound(missing or f"{what} does not exist")
    raise Forbidden(f"your groups' auth classes do not allow {action} on {what}")


def require_flow(row: Any, action: str = READ) -> None:
    if current().everything:
        return
    require(f"Flow {row.id}", doc_classes(row.doc), action)


def require_source(row: Any, action: str = READ) -> None:
    if current().everything:
        return
    require(f"Source {row.id}", tags_classes(orjson.loads(row.tags)), action)


def check_reclassing(old_tags: Any, new_tags: Any) -> frozenset[str] | None:
    """Refuse (403) a change of ``auth_classes`` the caller may not make (domain/access.py);
    also refuse (400) a value that cannot be one. The new classes when they change, else None."""
    new_value = new_tags.get(AUTH_CLASSES_TAG) if isinstance(new_tags, dict) else None
    if new_value is not None:
        check_classes_value(new_value)
    old, new = tags_classes(old_tags), tags_classes(new_tags)
    if old == new:
        return None
    current().check_change(old, new)
    return new

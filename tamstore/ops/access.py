"""The auth classes of the request being served, as the operations enforce them.

The authentication middleware sets :data:`CURRENT` to the caller's :class:`Access` for each
request; outside requests (background workers, command-line tools) it is ``EVERYTHING``: they
act as the service. Listings pass ``current()`` to the store, which filters in SQL; lookups by
id check the row they fetched (its ``auth_key``) with :func:`require`, which answers a resource
the caller may not read exactly as a missing one (404, same words), so that ids cannot be
probed, and one it may read but not change with 403.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from tamstore.domain.access import (
    AUTH_CLASSES_TAG,
    EVERYTHING,
    READ,
    Access,
    check_classes_value,
    classes_of,
    key_classes,
)
from tamstore.domain.errors import Forbidden, NotFound

__all__ = ["CURRENT", "allows", "check_reclassing", "current", "reclassed_tags", "require"]

CURRENT: ContextVar[Access] = ContextVar("tamstore_access", default=EVERYTHING)


def current() -> Access:
    return CURRENT.get()


def allows(row: Any, action: str = READ) -> bool:
    """Whether the caller may ``action`` a stored Source, Flow or webhook (its ``auth_key``)."""
    seen = current()
    return seen.everything or seen.allows(action, key_classes(row.auth_key))


def require(what: str, row: Any, action: str = READ) -> None:
    """Refuse the caller ``action`` on a stored resource (``what``: "Flow {id}", …): 404 in the
    words a missing one gets when it may not even read it, else 403."""
    if allows(row, action):
        return
    if action == READ or not allows(row, READ):
        raise NotFound(f"{what} does not exist")
    raise Forbidden(f"your groups' auth classes do not allow {action} on {what}")


def check_reclassing(old_tags: Any, new_tags: Any) -> frozenset[str] | None:
    """Refuse (403) a change of ``auth_classes`` the caller may not make (domain/access.py);
    also refuse (400) a value that cannot be one. The new classes when they change, else None."""
    new_value = new_tags.get(AUTH_CLASSES_TAG) if isinstance(new_tags, dict) else None
    if new_value is not None:
        check_classes_value(new_value)
    old, new = classes_of(old_tags), classes_of(new_tags)
    current().check_change(old, new)
    return None if old == new else new


def reclassed_tags(row: Any, tags: dict[str, Any], value: Any) -> dict[str, Any] | None:
    """For propagation (AppNote 0016): ``tags`` with ``auth_classes`` set to ``value`` (None:
    removed), if that changes the classes of ``row`` and the caller may make the change; else
    None, and propagation stops there."""
    new = {k: v for k, v in tags.items() if k != AUTH_CLASSES_TAG}
    if value is not None:
        new[AUTH_CLASSES_TAG] = value
    try:
        if not allows(row, "write") or check_reclassing(tags, new) is None:
            return None
    except Forbidden:
        return None
    return new

"""What every operation needs: the metadata store, the media backends, settings, the clock."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tamstore.config import Settings
from tamstore.domain.access import Access, Policy
from tamstore.domain.errors import BadRequest
from tamstore.domain.targets import TargetPolicy
from tamstore.store.media.base import MediaStore
from tamstore.store.media.filesystem import FilesystemMediaStore
from tamstore.store.metadata.sql import MetadataStore

__all__ = ["Caller", "Context", "now_us", "rfc3339"]


def now_us() -> int:
    return time.time_ns() // 1000


def rfc3339(us: int | None) -> str | None:
    """Wall-clock microseconds as an RFC 3339 UTC date-time (``2026-11-25T12:00:00.000001Z``)."""
    if us is None:
        return None
    secs, micros = divmod(us, 1_000_000)
    return f"{_utc_second(secs)}.{micros:06d}Z"


@functools.lru_cache(maxsize=8192)
def _utc_second(secs: int) -> str:
    """The date and time of a whole second (kept: a page of 100 Flows renders 200 timestamps,
    and Flows made or changed in the same second share it)."""
    return "%04d-%02d-%02dT%02d:%02d:%02d" % time.gmtime(secs)[:6]  # noqa: UP031 (faster)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: the authenticated principal's name (None with authentication off)
    and whether it holds the admin scope."""

    name: str | None = None
    admin: bool = False
    groups: frozenset[str] = frozenset()

    def may_manage(self, owner: str | None) -> bool:
        """May this caller change or delete something ``owner`` registered? With authentication
        off everyone may; with it on, the owner and admins (a thing registered without
        authentication has no owner: admins only)."""
        return self.name is None or self.admin or (owner is not None and owner == self.name)


@dataclass
class Context:
    """The composition of stores one running tamstore uses (built by ``startup.open_context``)."""

    settings: Settings
    store: MetadataStore
    backends: dict[str, MediaStore]
    # The embedded backend, when there is one: its signed URLs are served by tamstore itself.
    filesystem: FilesystemMediaStore | None = None
    # Set to have this process's background workers look now rather than at their next poll.
    wake_deleter: asyncio.Event = field(default_factory=asyncio.Event)
    wake_webhooks: asyncio.Event = field(default_factory=asyncio.Event)
    # The auth_classes policy and the auth file's groups of its principals, for deciding what
    # a webhook's owner may hear about (the request-time Access is in ops/access.py).
    policy: Policy = field(default_factory=Policy.none)
    principal_groups: dict[str, frozenset[str]] = field(default_factory=dict)

    def owner_access(self, name: str | None, groups: frozenset[str], admin: bool) -> Access:
        """What a webhook's owner may read now: its recorded groups and those the auth file
        gives it today, under today's policy (a webhook registered with authentication off
        has no owner and hears everything)."""
        if name is None:
            return self.policy.access_for((), admin=True)
        return self.policy.access_for(groups | self.principal_groups.get(name, frozenset()), admin)

    @functools.cached_property
    def target_policy(self) -> TargetPolicy:
        """Where webhook deliveries may connect (domain/targets.py)."""
        s = self.settings
        return TargetPolicy.from_settings(s.webhook_targets, s.webhook_allow_networks, s.host)

    @property
    def default_backend(self) -> MediaStore | None:
        for backend in self.backends.values():
            if backend.info.default_storage:
                return backend
        return None

    def backend(self, storage_id: str | None) -> MediaStore:
        if storage_id is None:
            found = self.default_backend
            if found is None:
                raise BadRequest("no storage_id given and this service has no default backend")
            return found
        try:
            return self.backends[storage_id]
        except KeyError:
            raise BadRequest(f"unknown storage_id {storage_id!r}") from None

    def holding(self, instances: Sequence[Any]) -> list[MediaStore]:
        """This service's backends that hold an Object, from its instances (uncontrolled ones
        are on no backend)."""
        return [self.backends[i.storage_id] for i in instances if i.storage_id in self.backends]

    def backend_labels(self) -> set[str]:
        return {b.info.label for b in self.backends.values()}

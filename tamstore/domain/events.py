"""Webhook events and filters (CHECKLIST §12; ADR 0026, 0037, 0040). No I/O here.

An event carries, besides its payload, the facts its filters need as they were when it
happened: the Flow's Source, what collects the Flow, what collects the Source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["EVENT_TYPES", "EventFacts", "WebhookFilter", "check_transition"]

from tamstore.domain.errors import BadRequest

EVENT_TYPES = (
    "flows/created",
    "flows/updated",
    "flows/deleted",
    "flows/segments_added",
    "flows/segments_deleted",
    "sources/created",
    "sources/updated",
    "sources/deleted",
)


@dataclass(frozen=True)
class EventFacts:
    event_type: str
    flow_id: str | None = None
    source_id: str | None = None
    flow_collected_by: tuple[str, ...] = ()
    source_collected_by: tuple[str, ...] = ()
    # The auth classes of the event's subject (the Flow, or the Source) when it happened: who
    # may hear of it (domain/access.py).
    classes: frozenset[str] = frozenset()

    @property
    def about_flow(self) -> bool:
        return self.event_type.startswith("flows/")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "flow_collected_by": list(self.flow_collected_by),
            "source_collected_by": list(self.source_collected_by),
        }
        if self.classes:
            out["classes"] = sorted(self.classes)
        return out


@dataclass(frozen=True)
class WebhookFilter:
    """The filters of one webhook; an absent filter (None) lets everything through."""

    events: frozenset[str]
    flow_ids: frozenset[str] | None = None
    source_ids: frozenset[str] | None = None
    flow_collected_by_ids: frozenset[str] | None = None
    source_collected_by_ids: frozenset[str] | None = None
    transforms: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> WebhookFilter:
        def ids(name: str) -> frozenset[str] | None:
            return None if doc.get(name) is None else frozenset(doc[name])

        transforms: dict[str, Any] = {
            k: doc[k]
            for k in (
                "accept_get_urls",
                "accept_storage_ids",
                "presigned",
                "verbose_storage",
                "include_object_timerange",
            )
            if k in doc
        }
        return cls(
            events=frozenset(doc["events"]),
            flow_ids=ids("flow_ids"),
            source_ids=ids("source_ids"),
            flow_collected_by_ids=ids("flow_collected_by_ids"),
            source_collected_by_ids=ids("source_collected_by_ids"),
            transforms=transforms,
        )

    def matches(self, facts: EventFacts) -> bool:
        if facts.event_type not in self.events:
            return False
        if facts.about_flow:
            if self.flow_ids is not None and facts.flow_id not in self.flow_ids:
                return False
            if self.flow_collected_by_ids is not None and not _collected(
                facts.flow_collected_by, self.flow_collected_by_ids
            ):
                return False
        if self.source_ids is not None and facts.source_id not in self.source_ids:
            return False
        return self.source_collected_by_ids is None or _collected(
            facts.source_collected_by, self.source_collected_by_ids
        )


def _collected(collected_by: tuple[str, ...], wanted: frozenset[str]) -> bool:
    """An empty filter list means "only things nothing collects" (ADR 0049)."""
    if not wanted:
        return not collected_by
    return bool(wanted.intersection(collected_by))


def check_transition(old: str, new: str) -> None:
    """Clients may set ``created`` (to (re-)enable) or ``disabled``; an errored webhook must be
    re-enabled, not disabled (CHECKLIST §12.3)."""
    if old == "error" and new == "disabled":
        raise BadRequest("a webhook in error can be re-enabled (status 'created'), not disabled")

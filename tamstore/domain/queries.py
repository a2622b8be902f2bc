"""What a listing asks for, as plain values: built by the HTTP layer from the query string,
passed through the operations to the store unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field

from tamstore.domain.tags import TagFilter

__all__ = ["SourceQuery"]


@dataclass(frozen=True, slots=True)
class SourceQuery:
    """``GET /sources``: ANDed filters and the order (ADR 0052)."""

    sort_by: str = "created"
    label: str | None = None
    format: str | None = None
    tags: list[TagFilter] = field(default_factory=list)
    collected_by_ids: list[str] | None = None

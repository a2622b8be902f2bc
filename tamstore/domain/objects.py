"""Object URLs: which ``get_urls`` a reader asked for (CHECKLIST §7.2, ADR 0023, 0054)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UrlFilter"]


@dataclass(frozen=True, slots=True)
class UrlFilter:
    """The get_urls filters of segment, object and webhook reads; all given filters must hold.

    ``accept_get_urls``: None = no filter, () = no URLs at all, else labels to keep.
    ``accept_storage_ids``: None or () = no filter, else storage ids to keep.
    ``presigned``: None = both kinds, True/False = only that kind.
    """

    accept_get_urls: tuple[str, ...] | None = None
    accept_storage_ids: tuple[str, ...] | None = None
    presigned: bool | None = None
    backend_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    backend_tags_exist: dict[str, bool] = field(default_factory=dict)
    verbose: bool = False

    def wants_label(self, label: str | None) -> bool:
        if self.accept_get_urls is None:
            return True
        return label is not None and label in self.accept_get_urls

    def wants_storage(self, storage_id: str | None) -> bool:
        if not self.accept_storage_ids:
            return True
        return storage_id is not None and storage_id in self.accept_storage_ids

    def wants_presigned(self, presigned: bool) -> bool:
        return self.presigned is None or self.presigned == presigned

    @property
    def nothing(self) -> bool:
        return self.accept_get_urls == ()

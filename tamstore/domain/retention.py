"""Retention (AppNote 0019): the two tags that say when a Flow's content may go, and when.

- ``segment_retention_offset``: a segment goes once the end of its timerange plus the offset
  has passed. Timeranges are TAI, so "passed" is against the current TAI time (the system's
  UTC clock plus the leap seconds so far). A Flow whose timeline is not wall-clock (an edit
  that starts at 0) is treated the same way, as the AppNote says: its segments end decades
  ago, so with any offset short of that they all go. Use the tag on such Flows knowingly.
- ``flow_retention_offset``: the whole Flow goes once the later of ``metadata_updated`` and
  ``segments_updated`` (wall-clock UTC) plus the offset has passed.

Values are TAMS timestamps (``seconds:nanoseconds``), not negative. A bad value is refused
when the tag is set (400 naming the tag); one stored before this rule is ignored by the
workers, never fatal to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tamstore.domain.errors import BadRequest
from tamstore.domain.timerange import InvalidTimeRange, parse_timestamp

__all__ = [
    "FLOW_RETENTION_TAG",
    "RETENTION_TAGS",
    "SEGMENT_RETENTION_TAG",
    "Retention",
    "check_retention_tags",
    "retention_offset",
]

SEGMENT_RETENTION_TAG = "segment_retention_offset"
FLOW_RETENTION_TAG = "flow_retention_offset"
RETENTION_TAGS = (SEGMENT_RETENTION_TAG, FLOW_RETENTION_TAG)
# Ten thousand years: far beyond any use, and far inside a 64-bit nanosecond count.
MAX_OFFSET_NS = 10_000 * 366 * 86_400 * 1_000_000_000


def retention_offset(name: str, value: Any) -> int:
    """The tag's offset in nanoseconds; BadRequest naming the tag when it is not a valid one."""
    if not isinstance(value, str):
        raise BadRequest(f"tag {name}: must be a single TAMS timestamp (seconds:nanoseconds), not a list")
    try:
        offset = parse_timestamp(value)
    except InvalidTimeRange:
        raise BadRequest(f"tag {name}: {value[:64]!r} is not a TAMS timestamp (seconds:nanoseconds)") from None
    if offset < 0:
        raise BadRequest(f"tag {name}: the offset must not be negative")
    if offset > MAX_OFFSET_NS:
        raise BadRequest(f"tag {name}: the offset is longer than 10,000 years")
    return offset


def check_retention_tags(tags: dict[str, Any]) -> None:
    """Refuse a Flow's tags whose retention values would mean nothing."""
    for name in RETENTION_TAGS:
        if name in tags:
            retention_offset(name, tags[name])


@dataclass(frozen=True, slots=True)
class Retention:
    """A Flow's retention as its tags say (None: that kind is not set, or its value is invalid)."""

    segment_offset: int | None
    flow_offset: int | None

    @classmethod
    def of(cls, tags: dict[str, Any]) -> Retention:
        def offset(name: str) -> int | None:
            if name not in tags:
                return None
            try:
                return retention_offset(name, tags[name])
            except BadRequest:
                return None

        return cls(offset(SEGMENT_RETENTION_TAG), offset(FLOW_RETENTION_TAG))

    def segment_cutoff(self, now_tai_ns: int) -> int | None:
        """Segments ending at or before this TAI time have expired (None: no segment retention).
        ``now_tai_ns``: the current time on the TAI timeline (``tai.utc_to_tai`` of the clock)."""
        if self.segment_offset is None:
            return None
        return now_tai_ns - self.segment_offset

    def flow_expired(self, metadata_updated_us: int, segments_updated_us: int | None, now_utc_ns: int) -> bool:
        """Whether the whole Flow has expired (``*_updated`` are wall-clock microseconds)."""
        if self.flow_offset is None:
            return False
        last = max(metadata_updated_us, segments_updated_us or 0) * 1000
        return last + self.flow_offset <= now_utc_ns

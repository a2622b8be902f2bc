"""Flow Segment rules (CHECKLIST §7.3): parsing a posted segment and the no-overlap rule."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tamstore.domain.errors import BadRequest
from tamstore.domain.limits import (
    INT32_MAX,
    INT64_MAX,
    MAX_ID_BYTES,
    MAX_LABEL_BYTES,
    MAX_URL_BYTES,
    check_int,
    check_text,
)
from tamstore.domain.timerange import InvalidTimeRange, TimeRange, parse_timestamp, segment_timerange

__all__ = ["SegmentPost", "overlaps_any", "parse_segment"]


@dataclass(slots=True)
class SegmentPost:
    object_id: str
    timerange: TimeRange
    lo: int  # timerange's bounds, read many times per segment by the batch checks
    hi: int
    ts_offset: int = 0
    last_duration: int | None = None
    object_timerange: TimeRange | None = None
    init_object_id: str | None = None
    get_urls: list[dict[str, str]] | None = None
    key_frame_count: int | None = None
    sample_offset: int | None = None
    sample_count: int | None = None

    def on_object_timeline(self) -> TimeRange:
        """The part of the Object this segment uses: ``timerange - ts_offset``."""
        return self.timerange.shift(-self.ts_offset)


def _int_field(body: dict[str, Any], name: str, minimum: int | None = None, maximum: int = INT64_MAX) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise BadRequest(f"{name} must be at least {minimum}")
    return check_int(value, name, maximum)


def _str_field(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"a segment needs {name}")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


_OPTIONAL = frozenset(
    {"ts_offset", "last_duration", "object_timerange", "init_object_id", "get_urls"}
    | {"key_frame_count", "sample_offset", "sample_count"}
)


def parse_segment(body: Any) -> SegmentPost:
    """Check one flow-segment-post.json body and turn it into domain values. (This runs for
    every segment of a batch: the common body of just object_id and timerange, the range in the
    usual form, takes a path of its own that passes every check below by its shape.)"""
    if type(body) is dict and len(body) == 2:  # only object_id and timerange, in the usual form
        object_id, tr_text = body.get("object_id"), body.get("timerange")
        if type(object_id) is str and type(tr_text) is str and len(object_id) * 4 <= MAX_ID_BYTES:
            tr = segment_timerange(tr_text)
            if tr is not None:  # bounded, not empty, inclusive start and in range
                return SegmentPost(object_id, tr, tr.start, tr.end)  # type: ignore[arg-type]
    if not isinstance(body, dict):
        raise BadRequest("a segment must be a JSON object")
    object_id = check_text(_str_field(body, "object_id", required=True), MAX_ID_BYTES, "object_id")  # type: ignore[arg-type]
    tr_text = _str_field(body, "timerange", required=True)
    optional = not _OPTIONAL.isdisjoint(body)
    try:
        tr = TimeRange.from_str(tr_text)  # type: ignore[arg-type]
        ts_offset = last_duration = otr = None
        if optional:
            ts_offset = parse_timestamp(body["ts_offset"]) if body.get("ts_offset") is not None else None
            last_duration = parse_timestamp(body["last_duration"]) if body.get("last_duration") is not None else None
            otr = TimeRange.from_str(body["object_timerange"]) if body.get("object_timerange") is not None else None
    except (InvalidTimeRange, TypeError) as exc:
        raise BadRequest(f"invalid segment: {exc}") from None
    if tr.is_empty() or not tr.is_bounded():
        raise BadRequest(f"segment timerange {tr_text!r} must be bounded and not empty")
    if tr.start_exclusive:
        raise BadRequest(f"segment timerange {tr_text!r} must have an inclusive start")
    if not tr.fits_int64() or (ts_offset and not tr.shift(-ts_offset).fits_int64()):
        raise BadRequest(f"segment timerange {tr_text!r} is outside the supported years 1677-2262")
    seg = SegmentPost(object_id, tr, tr.start, tr.end)  # type: ignore[arg-type]
    if not optional:
        return seg
    if last_duration is not None and last_duration < 0:
        raise BadRequest("last_duration must not be negative")
    get_urls = body.get("get_urls")
    if get_urls is not None:
        if not isinstance(get_urls, list) or not all(
            isinstance(u, dict)
            and isinstance(u.get("url"), str)
            and isinstance(u.get("label"), str)
            and set(u) <= {"url", "label"}
            for u in get_urls
        ):
            raise BadRequest("get_urls must be an array of {url, label} objects")
        for u in get_urls:
            check_text(u["url"], MAX_URL_BYTES, "a get_urls url")
            check_text(u["label"], MAX_LABEL_BYTES, "a get_urls label")
        labels = [u["label"] for u in get_urls]
        if len(set(labels)) != len(labels):
            raise BadRequest("get_urls labels must be unique")
    seg.ts_offset = ts_offset or 0
    seg.last_duration = last_duration
    seg.object_timerange = otr
    init_object_id = _str_field(body, "init_object_id")
    seg.init_object_id = None if init_object_id is None else check_text(init_object_id, MAX_ID_BYTES, "init_object_id")
    seg.get_urls = get_urls
    seg.key_frame_count = _int_field(body, "key_frame_count", 0, INT32_MAX)  # a 32-bit column
    seg.sample_offset = _int_field(body, "sample_offset")
    seg.sample_count = _int_field(body, "sample_count", 0)
    return seg


def overlaps_any(lo: int, hi: int, starts: list[int], spans: list[tuple[int, int]]) -> bool:
    """Does ``[lo, hi)`` overlap one of ``spans`` (sorted, non-overlapping; ``starts`` their
    start values)? Two neighbours suffice because the spans never overlap each other."""
    i = bisect.bisect_left(starts, hi)  # spans[:i] start before hi
    return i > 0 and spans[i - 1][1] > lo


def reference_counts(object_ids: list[str], init_of: Mapping[str, str | None]) -> dict[str, int]:
    """Segments per Object, an init Object counting once per segment of its media Objects."""
    counts: dict[str, int] = {}
    for oid in object_ids:
        counts[oid] = counts.get(oid, 0) + 1
        init = init_of.get(oid)
        if init is not None:
            counts[init] = counts.get(init, 0) + 1
    return counts

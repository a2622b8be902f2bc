"""TAI and UTC: TAMS timestamps are TAI nanoseconds since 1970-01-01T00:00:00 TAI (the PTP
epoch); clocks, HLS ``EXT-X-PROGRAM-DATE-TIME`` and people speak UTC. The two differ by the
leap seconds inserted so far (37 s since 2017), listed here (IERS Bulletin C; none is announced
after 2017)."""

from __future__ import annotations

import bisect
import datetime as dt
import time

__all__ = ["NS", "WALL_CLOCK_FROM", "iso_to_tai", "is_wall_clock", "now_tai", "tai_to_utc", "utc_iso", "utc_to_tai"]

NS = 1_000_000_000

# UTC seconds since the Unix epoch at which TAI - UTC became the offset beside it.
_LEAPS_UTC = [
    (63072000, 10),  # 1972-01-01
    (78796800, 11),
    (94694400, 12),
    (126230400, 13),
    (157766400, 14),
    (189302400, 15),
    (220924800, 16),
    (252460800, 17),
    (283996800, 18),
    (315532800, 19),
    (362793600, 20),
    (394329600, 21),
    (425865600, 22),
    (489024000, 23),
    (567993600, 24),
    (631152000, 25),
    (662688000, 26),
    (709948800, 27),
    (741484800, 28),
    (773020800, 29),
    (820454400, 30),
    (867715200, 31),
    (915148800, 32),
    (1136073600, 33),
    (1230768000, 34),
    (1341100800, 35),
    (1435708800, 36),
    (1483228800, 37),  # 2017-01-01
]
_UTC_STARTS = [s for s, _ in _LEAPS_UTC]
# The same instants on the TAI timeline.
_TAI_STARTS = [(s + offset) for s, offset in _LEAPS_UTC]

# A Flow whose segments start after 2000-01-01 (TAI) is taken to be on a wall-clock timeline:
# media timelines that start at zero (files, edits) are decades earlier.
WALL_CLOCK_FROM = (946684800 + 32) * NS


def _offset_at(starts: list[int], seconds: int) -> int:
    i = bisect.bisect_right(starts, seconds) - 1
    return _LEAPS_UTC[i][1] if i >= 0 else 0


def tai_to_utc(tai_ns: int) -> int:
    """UTC nanoseconds since the Unix epoch at ``tai_ns`` (during a leap second, its repeat)."""
    return tai_ns - _offset_at(_TAI_STARTS, tai_ns // NS) * NS


def utc_to_tai(utc_ns: int) -> int:
    return utc_ns + _offset_at(_UTC_STARTS, utc_ns // NS) * NS


def now_tai() -> int:
    """The current TAI time, in nanoseconds since the PTP epoch (from the system's UTC clock)."""
    return utc_to_tai(time.time_ns())


def is_wall_clock(tai_ns: int) -> bool:
    return tai_ns >= WALL_CLOCK_FROM


def utc_iso(tai_ns: int) -> str:
    """``tai_ns`` as an ISO 8601 UTC date-time with milliseconds, e.g. for
    ``EXT-X-PROGRAM-DATE-TIME`` and DASH ``availabilityStartTime``."""
    utc = tai_to_utc(tai_ns)
    seconds, rest = divmod(utc, NS)
    stamp = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1_000_000:03d}Z"


def iso_to_tai(text: str) -> int:
    """An ISO 8601 date-time with its zone (``2026-12-07T10:00:00Z``, ``...+01:00``) as TAI
    nanoseconds, to the microsecond, in integers: the inverse of :func:`utc_iso`. A date-time
    without a zone names no instant (ValueError)."""
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text} needs its zone (Z for UTC, or +01:00 ...)")
    since = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # whole days, seconds and microseconds
    return utc_to_tai((since.days * 86_400 + since.seconds) * NS + since.microseconds * 1000)

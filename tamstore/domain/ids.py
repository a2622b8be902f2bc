"""Object ids the store allocates: UUIDs whose order is the order they were made (RFC 9562 v7).

Every index keyed by Object id (the Objects themselves, segments by Object, reference counts)
takes a segment batch's ids at one place at its end when the ids are time-ordered, instead of
at a thousand random places: a 1,000-segment registration touched and wrote back several times
as many database pages with random (v4) ids, and the gap grows with the store
(docs/performance.md). The ids stay opaque strings to clients, as the spec wants.

Layout (RFC 9562 §5.7): 48 bits of Unix milliseconds, version 7, then 74 bits that start
random at each new millisecond and count up within one ("monotonic random", §6.2 method 2),
so ids made by one process never go backwards even when the clock does.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid

__all__ = ["time_ordered_ids", "time_ordered_uuid"]

_SEQ_BITS = 74
_lock = threading.Lock()
_last_ms = 0
_last_seq = 0


def time_ordered_uuid() -> uuid.UUID:
    return uuid.UUID(time_ordered_ids(1)[0])


def time_ordered_ids(count: int) -> list[str]:
    """``count`` new ids, in order, as strings. The random steps between them are drawn in one
    call: allocating 1,000 Objects spent a quarter of its time drawing them one by one (a system
    call each) and making ``UUID`` objects only to print them."""
    global _last_ms, _last_seq
    steps = secrets.token_bytes(count)  # each id's step within a millisecond: 1 + 0..255
    made = []
    with _lock:
        ms = time.time_ns() // 1_000_000
        for step in steps:
            if ms > _last_ms:
                _last_ms, _last_seq = ms, secrets.randbits(_SEQ_BITS - 1)  # headroom to count up
            else:
                _last_seq += 1 + step
                if _last_seq >> _SEQ_BITS:  # a millisecond's worth used up: borrow the next one
                    _last_ms, _last_seq = _last_ms + 1, secrets.randbits(_SEQ_BITS - 1)
            made.append((_last_ms, _last_seq))
    return [_text(ms, seq) for ms, seq in made]


def _text(ms: int, seq: int) -> str:
    value = (ms << 80) | (0x7 << 76) | ((seq >> 62) << 64) | (0b10 << 62) | (seq & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

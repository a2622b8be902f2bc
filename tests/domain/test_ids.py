"""Allocated Object ids are RFC 9562 version 7 UUIDs that never go backwards."""

from __future__ import annotations

import time
import uuid

import pytest

from tamstore.domain import ids


def test_ids_are_version_7_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    u = ids.time_ordered_uuid()
    after = time.time_ns() // 1_000_000
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after


def test_ids_made_in_a_burst_are_distinct_and_increasing() -> None:
    made = [ids.time_ordered_uuid() for _ in range(20_000)]
    assert [u.int for u in made] == sorted({u.int for u in made})
    # As strings too: that is how the database orders them.
    text = [str(u) for u in made]
    assert text == sorted(text)


def test_ids_keep_increasing_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    first = ids.time_ordered_uuid()
    monkeypatch.setattr(ids.time, "time_ns", lambda: (first.int >> 80) * 1_000_000 - 5_000_000_000)
    later = [ids.time_ordered_uuid() for _ in range(100)]
    assert all(a.int < b.int for a, b in zip([first, *later], later, strict=False))
    assert all(u.version == 7 for u in later)


def test_a_used_up_millisecond_borrows_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    monkeypatch.setattr(ids.time, "time_ns", lambda: now)
    first = ids.time_ordered_uuid()
    monkeypatch.setattr(ids, "_last_seq", (1 << 74) - 1)
    second = ids.time_ordered_uuid()
    assert second.int > first.int
    assert second.int >> 80 == (first.int >> 80) + 1
    assert (second.version, second.variant) == (7, uuid.RFC_4122)


def test_ids_made_together_are_those_made_one_by_one() -> None:
    """A batch (as /storage allocates) is distinct, increasing, version 7 and in order with the
    ids made before and after it; its strings are the UUIDs' own."""
    before = ids.time_ordered_uuid()
    batch = ids.time_ordered_ids(5_000)
    after = ids.time_ordered_uuid()
    parsed = [uuid.UUID(text) for text in batch]
    assert [str(u) for u in parsed] == batch
    assert all((u.version, u.variant) == (7, uuid.RFC_4122) for u in parsed)
    values = [before.int, *(u.int for u in parsed), after.int]
    assert values == sorted(set(values))

"""Wall-clock times in API documents: RFC 3339, UTC, microseconds (rendered without datetime)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tamstore.ops.context import rfc3339


@given(st.integers(min_value=0, max_value=253402300799_999999))  # up to 9999-12-31T23:59:59.999999Z
def test_rfc3339_matches_datetime(us: int) -> None:
    expected = datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=us % 1_000_000)
    assert rfc3339(us) == expected.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_rfc3339_of_nothing_is_nothing() -> None:
    assert rfc3339(None) is None
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"

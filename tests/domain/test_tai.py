"""TAI and UTC: date-times people give, taken to the TAMS timeline exactly."""

from __future__ import annotations

import pytest

from tamstore.domain.tai import NS, iso_to_tai, utc_iso

NEW_YEAR_2017 = (1483228800 + 37) * NS  # 2017-01-01T00:00:00Z in TAI: 37 leap seconds by then


def test_iso_date_times_become_tai_in_integers() -> None:
    assert iso_to_tai("2017-01-01T00:00:00Z") == NEW_YEAR_2017
    assert iso_to_tai("2017-01-01T01:00:00.000001+01:00") == NEW_YEAR_2017 + 1000  # any zone, to the microsecond
    # the second before the last leap second (23:59:60) is two TAI seconds before the new year
    assert iso_to_tai("2016-12-31T23:59:59Z") == NEW_YEAR_2017 - 2 * NS
    assert iso_to_tai(utc_iso(NEW_YEAR_2017 + 123_000_000)) == NEW_YEAR_2017 + 123_000_000  # utc_iso's inverse


def test_a_date_time_without_its_zone_names_no_instant() -> None:
    with pytest.raises(ValueError, match="needs its zone"):
        iso_to_tai("2017-01-01T00:00:00")
    with pytest.raises(ValueError):
        iso_to_tai("2017-13-01T00:00:00Z")

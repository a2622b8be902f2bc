"""GET URLs are signed once per Object per window, and always outlive the promised lifetime."""

from __future__ import annotations

import pytest

from tamstore.store.media import base
from tamstore.store.media.base import GetUrlWindow


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock(1_800_000_000.0)  # a window boundary (a multiple of 60)
    monkeypatch.setattr(base, "time", c)
    return c


def test_a_window_keeps_its_urls_and_the_next_starts_empty(clock: Clock) -> None:
    window = GetUrlWindow(lifetime=900)
    window.urls()["a"] = "url-a"
    clock.now += 59.5
    assert window.urls() == {"a": "url-a"}
    clock.now += 0.5
    assert window.urls() == {}


@pytest.mark.parametrize("offset", [0, 1, 30, 59.99])
def test_urls_outlive_the_lifetime_whenever_handed_out(clock: Clock, offset: float) -> None:
    window = GetUrlWindow(lifetime=900)
    clock.now += offset
    window.urls()
    assert window.expires - clock.now >= 900
    assert window.expires - clock.now <= 960
    assert window.start <= clock.now < window.start + 60


def test_a_full_window_starts_over(clock: Clock) -> None:
    window = GetUrlWindow(lifetime=900, max_urls=3)
    for key in "abc":
        window.urls()[key] = key
    assert window.urls() == {}  # the fourth would exceed the bound

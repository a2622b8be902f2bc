"""GET URLs are signed once per Object per window, and always outlive the promised lifetime."""

from __future__ import annotations

import pytest

from tamstore.store.media.base import GetUrlWindow
from tests.conftest import Clock


class Signer:
    """Records each signing; a URL names its key and the window bounds it was signed with."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []

    def __call__(self, start: int, expires: int, key: str) -> str:
        self.calls.append((start, expires, key))
        return f"{key}@{start}-{expires}"


def test_a_url_is_signed_once_per_window(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    first = window.url("a", sign, "a")
    clock.now += 59.5
    assert window.url("a", sign, "a") == first
    assert len(sign.calls) == 1
    clock.now += 0.5  # the next window
    assert window.url("a", sign, "a") != first
    assert len(sign.calls) == 2


@pytest.mark.parametrize("offset", [0, 1, 30, 59.99])
def test_urls_outlive_the_lifetime_whenever_handed_out(clock: Clock, offset: float) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    clock.now += offset
    window.url("a", sign, "a")
    [(start, expires, _)] = sign.calls
    assert 900 <= expires - clock.now <= 960
    assert start <= clock.now < start + 60


def test_a_full_window_starts_over(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900, max_urls=3), Signer()
    for key in "abc":
        window.url(key, sign, key)
    window.url("a", sign, "a")  # the fourth would exceed the bound: everything is made afresh
    assert [k for _, _, k in sign.calls] == ["a", "b", "c", "a"]

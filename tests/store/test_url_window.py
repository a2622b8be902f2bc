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
    first = window.urls(["a"], sign)[0]
    clock.now += 59.5
    assert window.urls(["a"], sign)[0] == first
    assert len(sign.calls) == 1
    clock.now += 0.5  # the next window
    assert window.urls(["a"], sign)[0] != first
    assert len(sign.calls) == 2


@pytest.mark.parametrize("offset", [0, 1, 30, 59.99])
def test_urls_outlive_the_lifetime_whenever_handed_out(clock: Clock, offset: float) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    clock.now += offset
    window.urls(["a"], sign)[0]
    [(start, expires, _)] = sign.calls
    assert 900 <= expires - clock.now <= 960
    assert start <= clock.now < start + 60


def test_a_full_window_starts_over(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900, max_urls=3), Signer()
    for key in "abc":
        window.urls([key], sign)
    window.urls(["a"], sign)[0]  # the fourth would exceed the bound: everything is made afresh
    assert [k for _, _, k in sign.calls] == ["a", "b", "c", "a"]


def test_a_page_of_urls_comes_back_in_order_and_signs_only_what_is_new(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900, max_urls=5), Signer()
    at = f"@{int(clock.now)}-{int(clock.now) + 960}"
    assert window.urls(["b", "a"], sign) == ["b" + at, "a" + at]
    assert window.urls(["a", "c", "b"], sign) == ["a" + at, "c" + at, "b" + at]
    assert [k for _, _, k in sign.calls] == ["b", "a", "c"]
    window.urls(["a", "d", "e"], sign)  # six might be kept, past the bound: the page afresh
    assert [k for _, _, k in sign.calls] == ["b", "a", "c", "a", "d", "e"]

"""GET URLs are signed once per Object per window, and always outlive the promised lifetime."""

from __future__ import annotations

import orjson
import pytest

from tamstore.store.media.base import GetUrlWindow, url_json
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
    first = window.signer(sign)("a")
    clock.now += 59.5
    assert window.signer(sign)("a") == first
    assert len(sign.calls) == 1
    clock.now += 0.5  # the next window
    assert window.signer(sign)("a") != first
    assert len(sign.calls) == 2


@pytest.mark.parametrize("offset", [0, 1, 30, 59.99])
def test_urls_outlive_the_lifetime_whenever_handed_out(clock: Clock, offset: float) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    clock.now += offset
    window.signer(sign)("a")
    [(start, expires, _)] = sign.calls
    assert 900 <= expires - clock.now <= 960
    assert start <= clock.now < start + 60


def test_a_full_window_starts_over(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900, max_urls=3), Signer()
    url = window.signer(sign)
    for key in "abc":
        url(key)
    url("d")  # a fourth would pass the bound: everything is forgotten first
    url("a")
    assert [k for _, _, k in sign.calls] == ["a", "b", "c", "d", "a"]
    window.signer(sign)("d")  # kept since the start-over
    assert len(sign.calls) == 5


def test_scopes_are_kept_apart_and_count_towards_one_bound(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900, max_urls=4), Signer()
    at = f"@{int(clock.now)}-{int(clock.now) + 960}"
    assert window.signer(sign, "host-1")("a") == "a" + at
    assert window.signer(sign, "host-2")("a") == "a" + at
    assert len(sign.calls) == 2  # one URL per scope
    assert window.signer(sign, "host-1")("a") == "a" + at
    assert len(sign.calls) == 2
    for n in range(1000):  # scopes that never sign keep nothing
        window.signer(sign, f"empty-{n}")
    many = window.signer(sign, "host-3")
    for key in "bcd":
        many(key)
    assert len(sign.calls) == 5  # the fifth URL started over: host-1's is gone
    window.signer(sign, "host-1")("a")
    assert len(sign.calls) == 6
    assert len(window._urls) <= 2


def test_a_signer_that_outlives_its_window_keeps_nothing_in_the_next(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    old = window.signer(sign)
    clock.now += 60
    window.signer(sign)  # the next window: everything is forgotten
    old("a")  # signed for the old window, in which its response began, and not kept
    window.signer(sign)("a")  # a later response gets a URL of its own window
    first = sign.calls[0][0]
    assert [start for start, _, _ in sign.calls] == [first, first + 60]


def test_an_objects_url_as_json_is_kept_beside_its_url_and_is_the_same_url(clock: Clock) -> None:
    window, sign = GetUrlWindow(lifetime=900), Signer()
    around = (b'[{"url":', b',"presigned":true}]')
    as_json = window.signer(url_json(sign, around), ("host", around))
    url = window.signer(sign, "host")("a")
    assert orjson.dumps({"get_urls": as_json("a")}) == orjson.dumps({"get_urls": [{"url": url, "presigned": True}]})
    assert as_json("a") is as_json("a")
    assert len(sign.calls) == 2  # one of each, each kept for the window

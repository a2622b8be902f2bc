"""The media URL signer is HMAC-SHA256 exactly as the hmac module computes it."""

from __future__ import annotations

import hmac

from hypothesis import given
from hypothesis import strategies as st

from tamstore.keys import HmacSha256


@given(key=st.binary(min_size=0, max_size=200), message=st.binary(max_size=300))
def test_matches_the_hmac_module(key: bytes, message: bytes) -> None:
    assert HmacSha256(key).hexdigest(message) == hmac.new(key, message, "sha256").hexdigest()


def test_a_signer_can_be_reused() -> None:
    signer = HmacSha256(b"k" * 32)
    assert signer.hexdigest(b"a") == signer.hexdigest(b"a") != signer.hexdigest(b"b")

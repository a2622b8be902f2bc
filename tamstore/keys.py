"""Secret keys kept in the data dir: made once (0600), so signatures survive restarts; and the
HMAC-SHA256 signer that media URLs use with them."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

__all__ = ["HmacSha256", "load_or_create_key"]


def load_or_create_key(data_dir: Path, name: str) -> bytes:
    path = data_dir / name
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


class HmacSha256:
    """HMAC-SHA256 (RFC 2104) with the keyed inner and outer hash states computed once.

    A page of segments signs a URL per Object; through the ``hmac`` module each signature costs
    a Python-level object copy, here it is a few C calls on copied ``hashlib`` states.
    ``tests/test_keys.py`` checks it against ``hmac.new(key, message, "sha256")``.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hexdigest(self, message: bytes) -> str:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

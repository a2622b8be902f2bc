"""An identity provider's signing keys (its JWKS), fetched off the event loop and never on a
client's say-so alone.

PyJWT's ``PyJWKClient`` fetches with urllib, which blocks, and fetches again for every token
whose key id it does not know. In a server that would let anyone stall the event loop, and so
every request, for one round trip to the identity provider per forged token (up to the whole
timeout while the provider hangs). Here the set is fetched with httpx, once for all who wait,
kept for ``lifespan`` seconds, and fetched again early (for a key id it does not list: the
provider may have rotated its keys) at most once every ``refetch`` seconds. A fetch that fails
leaves the keys already held in use; with none held, tokens get a 503 until one succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt
import orjson

from tamstore.domain.errors import Unavailable

__all__ = ["JwksKeys", "UnknownKey"]

log = logging.getLogger("tamstore.auth")

MAX_JWKS_BYTES = 1 << 20  # a provider's key set is a few KB


class UnknownKey(LookupError):
    """The token names a key the provider does not list (or names none, among several)."""


class JwksKeys:
    def __init__(self, url: str, *, lifespan: float = 300, refetch: float = 30, timeout: float = 10) -> None:
        self.url = url
        self.lifespan = lifespan
        self.refetch = refetch
        self.timeout = timeout
        self._keys: dict[str | None, Any] | None = None
        self._expires = 0.0  # when the keys held are due for a fetch
        self._next_try = 0.0  # no fetch before this, whatever the tokens name
        self._error = ""  # the last fetch's failure, by kind (its words name the provider's URL: logged)
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str | None) -> Any:
        """The public key for a token's ``kid`` header. Raises ``UnknownKey``, or
        ``Unavailable`` when no key could be fetched yet."""
        if self._due(kid):
            async with self._lock:
                if self._due(kid):  # not fetched by whoever held the lock meanwhile
                    await self._fetch()
        key = self._find(kid)
        if key is not None:
            return key
        if self._keys is None:
            raise Unavailable(f"the identity provider's keys cannot be fetched now ({self._error})")
        raise UnknownKey(f"the identity provider lists no signing key {kid!r}")

    def _due(self, kid: str | None) -> bool:
        now = time.monotonic()
        if now < self._next_try:
            return False
        return self._keys is None or now >= self._expires or self._find(kid) is None

    def _find(self, kid: str | None) -> Any:
        if self._keys is None:
            return None
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        started = time.monotonic()
        self._next_try = started + self.refetch
        try:
            async with asyncio.timeout(self.timeout):
                body = await self._download()
            keys = _signing_keys(body)
        except (TimeoutError, httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            self._error = type(exc).__name__
            log.warning("identity provider keys not fetched from %s: %s: %s", self.url, self._error, exc)
            return
        self._keys, self._expires, self._error = keys, started + self.lifespan, ""

    async def _download(self) -> bytes:
        body = bytearray()
        async with (
            httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client,
            client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
        ):
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"the key set is larger than {MAX_JWKS_BYTES} bytes")
        return bytes(body)


def _signing_keys(body: bytes) -> dict[str | None, Any]:
    """The set's keys meant for signatures, by key id (orjson's and PyJWT's errors are ValueErrors
    and PyJWTErrors)."""
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise ValueError("the key set is not a JSON object")
    keys = {k.key_id: k.key for k in jwt.PyJWKSet.from_dict(data).keys if k.public_key_use in ("sig", None)}
    if not keys:
        raise ValueError("the key set holds no signing key")
    return keys

"""Requests tamstore makes of its own accord (webhook deliveries; its client's media downloads),
only where policy allows.

The target's name is resolved here as each connection opens, every address it resolves to is
checked against the :class:`~tamstore.domain.targets.TargetPolicy`, and the connection is made to
the checked address itself (the URL's host kept in ``Host`` and, for HTTPS, in SNI and certificate
checks; connections pooled by that name), so that what was checked is what is connected to: a
name that resolves to a public address when checked and to 127.0.0.1 a moment later (DNS
rebinding) reaches nothing. Failures are reported in words
that do not map the network (no "connection refused" versus "timed out" per port); the detail
goes to the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

from tamstore.domain.errors import BadRequest
from tamstore.domain.targets import TargetPolicy
from tamstore.threads import ThreadLane

__all__ = ["CheckedTransport", "OutboundClient", "TargetRefused", "allowed_address", "check_target"]

log = logging.getLogger("tamstore.outbound")


class TargetRefused(Exception):
    """The URL's host is, or resolves to, an address the policy does not allow."""


# The names are the clients' choice, and so are their name servers: one that never answers
# would hold a thread for the resolver's whole timeout (its tries times its servers). Names are
# resolved on a lane of their own, and one not resolved in RESOLVE_SECONDS is taken as one that
# does not resolve (a registration accepts it; a delivery fails and tries again later).
RESOLVE_SECONDS = 5.0
RESOLVER = ThreadLane("resolve", lambda why: OSError(f"name resolution busy: {why}"), threads=4, wait=RESOLVE_SECONDS)


async def _addresses(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]
    except ValueError:
        pass
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            infos = await RESOLVER.run(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise OSError(f"no answer for {host} within {RESOLVE_SECONDS:g} s") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def allowed_address(host: str, port: int, policy: TargetPolicy, what: str) -> str:
    """The address to connect to for ``host``; TargetRefused when any it resolves to is refused
    (all of them: a name with one public and one private address could be steered to either).
    ``what`` names the kind of target in the refusal. OSError when the name does not resolve."""
    addresses = await _addresses(host, port)
    if not addresses:
        raise TargetRefused("the host name has no address")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise TargetRefused(f"the URL's host is not an allowed {what}: {reason}")
    return addresses[0]


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _is_http_target(url: httpx.URL) -> bool:
    """An absolute http(s) URL with a host and a valid port: the only kind fetched."""
    return url.scheme in ("http", "https") and bool(url.host) and 0 < _port(url) < 65536


def _http_url(url: str) -> httpx.URL:
    """``url`` parsed as httpx parses what it connects to; TargetRefused for anything but an
    absolute http(s) URL with a host and a valid port."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        parsed = None
    if parsed is None or not _is_http_target(parsed):
        raise TargetRefused("a webhook url must be an absolute http(s) URL with a host")
    return parsed


async def check_target(url: str, policy: TargetPolicy) -> None:
    """At registration: BadRequest when the URL is not an http(s) URL, or its host is (or now
    resolves to) a refused address. A name that does not resolve yet is accepted: it is
    checked again at each delivery."""
    try:
        parsed = _http_url(url)
        await allowed_address(parsed.host, _port(parsed), policy, "webhook target")
    except TargetRefused as exc:
        raise BadRequest(f"webhook url refused: {exc}") from None
    except OSError:
        return


# An httpx transport's own default bounds (``httpx.Limits()`` alone bounds nothing).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class Unresolved(httpx.ConnectError):
    """The host name does not resolve (now)."""


class _NoAddress(Exception):
    """Raised by :class:`_CheckedBackend` when the name does not resolve; the transport, which
    has the request, turns it into :class:`Unresolved`."""


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens each connection to an address of its host name that ``policy`` allows, resolved
    and checked just before. The connection pool above it still keys connections by the URL's
    name, so a connection (and its TLS session, opened with that name in SNI and checked against
    that name's certificate) is only ever reused for that name."""

    def __init__(self, policy: TargetPolicy, what: str) -> None:
        self.policy = policy
        self.what = what
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            address = await allowed_address(host, port, self.policy, self.what)
        except OSError as exc:
            raise _NoAddress(f"{host} does not resolve ({exc})") from None
        return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection, for every redirect hop (the client follows
    them above the transport), goes to an address of its host that ``policy`` allows, resolved
    and checked as the connection opens: what was checked is what is connected to. Connections
    are pooled by the URL's host name, as in any httpx client, so a connection checked for one
    name (and, for HTTPS, verified against that name's certificate) never carries another
    name's requests, even where two names share an address. A refused host raises what
    ``refused(reason, request)`` makes; one that does not resolve, :class:`Unresolved`."""

    def __init__(self, policy: TargetPolicy, what: str, refused: Callable[[str, httpx.Request], Exception]) -> None:
        # One TLS context (loading the CA bundle takes ~20 ms), for the pool httpx builds here
        # and for the one that replaces it: httpx builds its pool with the default network
        # backend and offers no way to name another, so the pool is rebuilt as httpx builds it
        # (its own transport's limits), with the checking backend.
        tls = httpx.create_ssl_context()
        super().__init__(verify=tls, limits=LIMITS)
        self.refused = refused
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls,
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=_CheckedBackend(policy, what),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        try:
            if not _is_http_target(url):
                raise TargetRefused(f"the URL is not an absolute http(s) URL with a host ({url.scheme}:)")
            return await super().handle_async_request(request)
        except TargetRefused as exc:
            raise self.refused(str(exc), request) from None
        except _NoAddress as exc:
            raise Unresolved(str(exc), request=request) from None


class _Refused(httpx.RequestError):
    """A webhook target the policy refuses (raised in the transport, answered by ``post``)."""


class OutboundClient:
    """POSTs to policy-checked addresses (:class:`CheckedTransport`). ``post`` returns
    (ok, problem) and never raises for the target's sake."""

    def __init__(self, policy: TargetPolicy, timeout: float) -> None:
        self.timeout = timeout
        transport = CheckedTransport(policy, "webhook target", lambda why, request: _Refused(why, request=request))
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, transport=transport)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        try:
            host = _http_url(url).host
        except TargetRefused as exc:
            return False, str(exc)
        # The whole exchange within the timeout (httpx's bounds each read, so a receiver that
        # drips its answer a byte at a time would hold the delivery for ever), and the status
        # line is all that is read: the answer's body, of any size, is never read into memory.
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.client.stream("POST", url, content=body, headers=headers) as r,
            ):
                status = r.status_code
        except _Refused as exc:
            return False, str(exc)
        except Unresolved as exc:
            log.info("webhook target %s does not resolve: %s", host, exc)
            return False, "the URL's host name does not resolve"
        except (httpx.HTTPError, TimeoutError) as exc:
            log.info("webhook delivery to %s failed: %s: %s", host, type(exc).__name__, exc)
            return False, "no answer from the receiver (connection failed or timed out)"
        if 200 <= status < 300:
            return True, ""
        return False, f"the receiver answered HTTP {status}"

"""Requests tamstore makes of its own accord (webhook deliveries; its client's media downloads),
only where policy allows.

The target's name is resolved here, every address it resolves to is checked against the
:class:`~tamstore.domain.targets.TargetPolicy`, and the connection is made to the checked address
itself (the URL's host kept in ``Host`` and, for HTTPS, in SNI and certificate checks), so that
what was checked is what is connected to: a name that resolves to a public address when checked
and to 127.0.0.1 a moment later (DNS rebinding) reaches nothing. Failures are reported in words
that do not map the network (no "connection refused" versus "timed out" per port); the detail
goes to the log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from tamstore.domain.errors import BadRequest
from tamstore.domain.targets import TargetPolicy
from tamstore.threads import ThreadLane

__all__ = ["OutboundClient", "TargetRefused", "allowed_address", "check_target"]

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


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int | None
    userinfo: str
    hostport: str  # as written in the URL: what the Host header says

    @classmethod
    def parse(cls, url: str) -> _Target:
        """The parts a delivery needs; TargetRefused for anything but an absolute http(s) URL
        with a host and a valid port."""
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port  # .port raises for a port out of range
        except ValueError:
            host = port = None
        if parts.scheme not in ("http", "https") or not host:
            raise TargetRefused("a webhook url must be an absolute http(s) URL with a host")
        userinfo, _, hostport = parts.netloc.rpartition("@")
        return cls(parts.scheme, host, port, userinfo, hostport)

    def pinned(self, url: str, address: str) -> str:
        """``url`` with its host replaced by ``address`` (the one checked)."""
        parts = urlsplit(url)
        netloc = f"[{address}]" if ":" in address else address
        if self.port:
            netloc += f":{self.port}"
        if self.userinfo:
            netloc = f"{self.userinfo}@{netloc}"
        return urlunsplit((self.scheme, netloc, parts.path or "/", parts.query, ""))


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


async def _allowed_address(target: _Target, policy: TargetPolicy) -> str:
    port = target.port or (443 if target.scheme == "https" else 80)
    return await allowed_address(target.host, port, policy, "webhook target")


async def check_target(url: str, policy: TargetPolicy) -> None:
    """At registration: BadRequest when the URL is not an http(s) URL, or its host is (or now
    resolves to) a refused address. A name that does not resolve yet is accepted: it is
    checked again at each delivery."""
    try:
        await _allowed_address(_Target.parse(url), policy)
    except TargetRefused as exc:
        raise BadRequest(f"webhook url refused: {exc}") from None
    except OSError:
        return


class OutboundClient:
    """POSTs to policy-checked addresses. ``post`` returns (ok, problem) and never raises for the
    target's sake."""

    def __init__(self, policy: TargetPolicy, timeout: float, client: httpx.AsyncClient | None = None) -> None:
        self.policy = policy
        self.timeout = timeout
        self.client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[bool, str]:
        try:
            target = _Target.parse(url)
            address = await _allowed_address(target, self.policy)
        except TargetRefused as exc:
            return False, str(exc)
        except OSError as exc:
            log.info("webhook target %s does not resolve: %s", urlsplit(url).hostname, exc)
            return False, "the URL's host name does not resolve"
        pinned = target.pinned(url, address)
        headers = {**headers, "host": target.hostport}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        # The whole exchange within the timeout (httpx's bounds each read, so a receiver that
        # drips its answer a byte at a time would hold the delivery for ever), and the status
        # line is all that is read: the answer's body, of any size, is never read into memory.
        try:
            async with (
                asyncio.timeout(self.timeout),
                self.client.stream("POST", pinned, content=body, headers=headers, extensions=extensions) as r,
            ):
                status = r.status_code
        except (httpx.HTTPError, TimeoutError) as exc:
            log.info("webhook delivery to %s failed: %s: %s", target.host, type(exc).__name__, exc)
            return False, "no answer from the receiver (connection failed or timed out)"
        if 200 <= status < 300:
            return True, ""
        return False, f"the receiver answered HTTP {status}"

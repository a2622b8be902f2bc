"""Where tamstore may send requests of its own (webhook deliveries, and its client's media
downloads): the outbound target policy.

A webhook URL is chosen by a client, and the server then connects to it. Unchecked, that lets a
client reach what only the server can: a cloud metadata service (credentials), an admin port on
loopback, a database on the private network (server-side request forgery). So every address a
delivery would connect to is checked against this policy, at registration and again on the
address actually resolved at connect time (a name may resolve elsewhere by then: DNS rebinding).

- Public (globally routable) addresses: always allowed.
- Loopback: allowed when ``targets`` is ``local`` or ``private``.
- Private, shared and unique-local ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 ...):
  allowed when ``targets`` is ``private``.
- Link-local (169.254/16, fe80::/10, where cloud metadata services live), known metadata
  addresses, unspecified, multicast and reserved addresses: never, whatever ``targets`` says.
- ``allow_networks``: addresses in these networks are allowed whatever their range (an operator
  who really wants a receiver at 169.254.10.1 says so here).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["TARGET_MODES", "TargetPolicy", "check_header"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TARGET_MODES = ("public", "local", "private")

# Metadata services that sit outside link-local: AWS's IPv6 one, Alibaba's.
_METADATA = (ipaddress.ip_network("fd00:ec2::254/128"), ipaddress.ip_network("100.100.100.200/32"))


@dataclass(frozen=True)
class TargetPolicy:
    targets: str = "public"
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, targets: str, allow_networks: str, server_host: str) -> TargetPolicy:
        """``targets`` ``auto`` means ``local`` for a server listening on loopback (local
        development: a receiver on the same machine) and ``public`` otherwise."""
        if targets == "auto":
            targets = "local" if _is_loopback_host(server_host) else "public"
        if targets not in TARGET_MODES:
            raise ValueError(f"webhook_targets must be auto or one of {', '.join(TARGET_MODES)}")
        networks = []
        for item in allow_networks.split(","):
            if item.strip():
                try:
                    networks.append(ipaddress.ip_network(item.strip(), strict=False))
                except ValueError:
                    raise ValueError(f"webhook_allow_networks: {item.strip()!r} is not a network") from None
        return cls(targets, tuple(networks))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` (an IP literal) may not be connected to, or None when it may."""
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return "it is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow_networks):
            return None
        if ip.is_loopback:  # before "reserved": ::1 is in IPv6's reserved ::/8
            return None if self.targets in ("local", "private") else "loopback addresses are not allowed here"
        if ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved:
            return "link-local, unspecified, multicast and reserved addresses are never request targets"
        if any(ip in net for net in _METADATA):
            return "cloud metadata addresses are never request targets"
        if not ip.is_global:
            return None if self.targets == "private" else "private network addresses are not allowed here"
        return None


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_FIELD_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]*[\x21-\x7e])?\Z")
# Headers a delivery sets itself, or that change how the request is framed or routed.
_RESERVED = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "te", "trailer", "upgrade"}
    | {"keep-alive", "proxy-authorization", "proxy-connection", "expect"}
)


def check_header(name: str, value: str | None) -> str | None:
    """Why ``name: value`` cannot be sent as a header (HTTP/1.1 tokens and visible ASCII), or
    None when it can."""
    if not _TOKEN.match(name):
        return f"api_key_name {name[:64]!r} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
    if name.lower() in _RESERVED:
        return f"api_key_name {name!r} is a header the delivery sets itself"
    if value is not None and not _FIELD_VALUE.match(value):
        return "api_key_value must be visible ASCII characters (spaces and tabs only inside)"
    return None

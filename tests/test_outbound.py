"""Outbound connections (the client's media downloads; webhook deliveries share the transport)
against real HTTP and HTTPS servers: each connects to the address checked for it (no DNS
rebinding), and a connection checked and verified for one host name never carries another
name's requests."""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tamstore.client import TamsClient
from tamstore.domain.targets import TargetPolicy
from tamstore.outbound import CheckedTransport, OutboundClient


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _object_server(seen: list[str]) -> http.server.ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1 (not yet serving) that answers every GET with five bytes and
    every POST with a 204, keeps its connections alive, and records the Host header of each
    request in ``seen``."""

    class Object(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive, to be reused

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.headers["Host"])
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"bytes")

        def do_POST(self) -> None:  # noqa: N802 (a webhook delivery)
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers["Host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Object)


def test_client_downloads_connect_to_the_address_they_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A media URL's host is resolved once, checked, and that address is the one connected to:
    a name that answers an allowed address for the check and a metadata service's for the
    connection (DNS rebinding) still reaches only the first. The URL's host stays in the Host
    header. The name's answers are faked (a test cannot run the machine's resolver); the
    server is real."""
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebinding.example":
            return real(host, port, *args, **kwargs)
        answers.append("127.0.0.1" if not answers else "169.254.169.254")
        return real(answers[-1], port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    seen: list[str] = []
    objects = _object_server(seen)
    threading.Thread(target=objects.serve_forever, daemon=True).start()
    port = objects.server_address[1]
    try:
        with TamsClient("http://127.0.0.1:9", timeout=5, retries=0) as tams:
            assert tams.download(f"http://rebinding.example:{port}/object") == b"bytes"
            assert tams.download(f"http://rebinding.example:{port}/again") == b"bytes"  # the same connection
    finally:
        objects.shutdown()
    assert answers == ["127.0.0.1"] and seen == [f"rebinding.example:{port}"] * 2


@pytest.fixture
def one_name_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for ``a.example`` only, keeping its
    connections alive, from a test CA the client trusts (``SSL_CERT_FILE``). ``a.example`` and
    ``b.example`` both resolve to it (faked answers: a test cannot run the machine's resolver).
    Yields its port and the Host headers it was sent."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tamstore test CA")])
    ca = _certificate("tamstore test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("a.example", key, ca_name, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    real = socket.getaddrinfo

    def two_names_one_address(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("a.example", "b.example"):
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_names_one_address)
    seen: list[str] = []
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "key.pem")
    server = _object_server(seen)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()


def test_a_connection_verified_for_one_name_is_not_reused_for_another(one_name_server: tuple[int, list[str]]) -> None:
    """Connections are pinned to the address checked for them, but pooled by the URL's name:
    ``b.example`` on the same address as ``a.example`` gets a connection of its own, whose
    certificate (``a.example``'s) does not verify, rather than riding ``a.example``'s."""
    port, seen = one_name_server
    with TamsClient("http://127.0.0.1:9", timeout=5, retries=0) as tams:
        assert tams.download(f"https://a.example:{port}/object") == b"bytes"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            tams.download(f"https://b.example:{port}/object")
        assert tams.download(f"https://a.example:{port}/again") == b"bytes"
    assert seen == [f"a.example:{port}", f"a.example:{port}"]


async def test_webhooks_reach_an_https_receiver_an_in_house_ca_signed(one_name_server: tuple[int, list[str]]) -> None:
    """Deliveries verify the receiver's certificate for its own name, against the CA bundle
    ``SSL_CERT_FILE`` names (docs/operating.md, "Webhook targets"): the receiver's own name is
    delivered to, another name on its address is not."""
    port, seen = one_name_server
    client = OutboundClient(TargetPolicy("local"), timeout=5)
    try:
        assert await client.post(f"https://a.example:{port}/hook", b"{}", {}) == (True, "")
        ok, problem = await client.post(f"https://b.example:{port}/hook", b"{}", {})
        assert not ok and "no answer" in problem
    finally:
        await client.aclose()
    assert seen == [f"a.example:{port}"]


def test_the_checked_transport_keeps_httpx_s_connection_bounds() -> None:
    """Rebuilding httpx's pool around the checking backend keeps a plain transport's bounds on
    connections (``httpx.Limits()`` alone has none)."""
    plain, checked = httpx.AsyncHTTPTransport(), CheckedTransport(TargetPolicy("local"), "test", _refuse)
    for bound in ("_max_connections", "_max_keepalive_connections", "_keepalive_expiry"):
        assert getattr(checked._pool, bound) == getattr(plain._pool, bound), bound


def _refuse(reason: str, request: httpx.Request) -> Exception:
    return httpx.ConnectError(reason, request=request)

"""Slow and idle clients cannot exhaust the server (issue 16, item 7): headers have a deadline,
connections a cap, stalled bodies a timeout, and everyone else is answered meanwhile. Against a
real ``tamstore serve`` process."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import httpx

from tests.live import LiveServer


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_slow_headers_are_cut_and_others_are_served(tmp_path: Path) -> None:
    env = {"TAMSTORE_HEADER_TIMEOUT": "1", "TAMSTORE_MAX_CONNECTIONS": "60"}
    server = LiveServer(tmp_path / "data", **env).start()
    slow: list[socket.socket] = []
    try:
        for _ in range(50):  # slowloris: a request line, then headers that never end
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/healthz").status_code == 200  # answered while they wait
        for _ in range(20):  # over the cap: the longest-waiting slow clients make room ...
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET /flows HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        assert sum(_closed_by_server(s, 0.2) for s in slow[:20]) >= 10
        with httpx.Client(base_url=server.url, timeout=5) as c:  # ... and whole requests are answered
            assert c.get("/healthz").status_code == 200
        time.sleep(1.2)
        assert all(_closed_by_server(s, 1.0) for s in slow)  # past the header deadline
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/flows").status_code == 200
    finally:
        for s in slow:
            with contextlib.suppress(OSError):
                s.close()
        server.stop()


def test_a_stalled_body_is_a_408(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", TAMSTORE_BODY_TIMEOUT="1").start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(
                b"POST /service/webhooks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"url": '
            )
            s.settimeout(5)
            answer = b""
            while b'"time"' not in answer and (chunk := s.recv(4096)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"type":"request_timeout"' in answer
    finally:
        server.stop()


def test_a_request_the_parser_cannot_read_gets_the_error_shape(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data").start()
    try:
        for request in (
            b"GET /flows?x=" + b"a" * (128 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # an over-long request line
            b"GET /flows HTTP/1.1\r\nBad Header Line\r\n\r\n",
        ):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(request)
                s.settimeout(5)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head, answer[:300]
            assert set(json.loads(body)) >= {"type", "summary", "time"}
    finally:
        server.stop()


def test_headers_that_never_end_are_a_431_and_others_are_served(tmp_path: Path) -> None:
    """A header sent at full speed and never ended is refused once the headers pass
    max_header_kib: before, the parser copied it over and over on the event loop, and every
    other request waited seconds. Headers just under the limit are served."""
    server = LiveServer(tmp_path / "data", TAMSTORE_MAX_HEADER_KIB="32").start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/service", headers={"x-big": "a" * 31_000}).status_code == 200
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"GET /service HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(OSError):  # the server answers and closes while this sends
                for _ in range(64):
                    s.sendall(b"a" * 16384)
                    time.sleep(0.001)
            s.settimeout(5)
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := s.recv(65536):
                    answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431") and b"application/json" in head, answer[:300]
        assert json.loads(body)["summary"] == "the request's headers are over 32 KiB"
        with httpx.Client(base_url=server.url, timeout=5) as c:
            assert c.get("/healthz").status_code == 200
    finally:
        server.stop()


def test_a_media_upload_that_stalls_is_a_408_and_leaves_nothing(tmp_path: Path) -> None:
    """Slow clients get no more time on the one route that takes large bodies."""
    server = LiveServer(tmp_path / "data", TAMSTORE_BODY_TIMEOUT="1").start()
    try:
        with httpx.Client(base_url=server.url) as c:
            flow = {
                "id": "3e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10",
                "source_id": "4e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10",
                "format": "urn:x-nmos:format:data",
                "codec": "text/plain",
                "container": "text/plain",
                "essence_parameters": {},
            }
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
            put_url = c.post(f"/flows/{flow['id']}/storage", json={"limit": 1}).json()["media_objects"][0]["put_url"]
        target = httpx.URL(put_url["url"])
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(
                f"PUT {target.raw_path.decode()} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode()
                + b"x" * 1000
            )
            s.settimeout(10)
            answer = b""
            while b'"time"' not in answer and (chunk := s.recv(4096)):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert list((tmp_path / "data" / "media" / ".tmp").iterdir()) == []  # no half-written upload
    finally:
        server.stop()

"""Media bytes through the embedded backend's signed URLs, beside their floors (issue 25).

Every transfer is made by ``curl`` (a separate process, C all the way), so that the client is
never the bottleneck being measured:

- GET of one Object from ``tamstore serve``, beside the same bytes from the S3 server
  (SeaweedFS, started here) and from a minimal HTTP server that answers with ``sendfile(2)``;
- PUT of the same Object to ``tamstore serve`` (which writes it to a temporary file, fsyncs it
  and moves it into place), beside the same bytes written to a file and fsynced.
"""

from __future__ import annotations

import os
import socket
import socketserver
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from bench import loader

Row = tuple[str, str, str, str]


def _curl(*args: str) -> float:
    """Seconds the transfer took, by curl's own clock (its start-up is not the server's)."""
    done = subprocess.run(
        ["curl", "-sSf", "-o", "/dev/null", "-w", "%{time_total}", *args], check=True, capture_output=True, text=True
    )
    return float(done.stdout)


def _curl_get(url: str) -> float:
    return _curl(url)


def _curl_put(url: str, path: Path) -> float:
    return _curl("-T", str(path), url)


def _median_of(rounds: int, fn: Callable[[], float]) -> float:
    """The median of ``rounds`` timings (one more before them warms the page cache, dropped)."""
    fn()
    return statistics.median(fn() for _ in range(rounds))


class _SendfileHandler(socketserver.BaseRequestHandler):
    path: Path

    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                return
            data += more
        size = self.path.stat().st_size
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
            + f"Content-Length: {size}\r\nConnection: close\r\n\r\n".encode()
        )
        with self.path.open("rb") as f:
            sock.sendfile(f)


class SendfileServer:
    """The floor of a GET: an HTTP/1.1 server that answers any request with one file, by
    ``sendfile(2)``, on a thread of this process."""

    def __init__(self, path: Path) -> None:
        handler = type("Handler", (_SendfileHandler,), {"path": path})
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/object"

    def __enter__(self) -> SendfileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _raw_write(payload: Path, scratch: Path) -> float:
    """Copy the payload into a new file 1 MiB at a time and fsync it: the floor of a PUT. The
    file is kept, as tamstore keeps an Object: a disk absorbs a burst of writes far faster than
    it sustains them (here 1.6 GB/s for one file into a clean page cache, 350 MB/s file after
    file), so both sides must meet it in the same state."""
    target = scratch / f"raw-{uuid.uuid4()}"
    t0 = time.perf_counter()
    with payload.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    return time.perf_counter() - t0


def bench_media_bytes(server_url: str, scratch: Path, megabytes: int, rounds: int = 5) -> list[Row]:
    """``server_url``: a running ``tamstore serve`` on the embedded media backend."""
    from tests.s3server import SeaweedS3

    payload = scratch / "payload"
    with payload.open("wb") as f:
        for _ in range(megabytes):
            f.write(os.urandom(1 << 20))
    mb = megabytes * (1 << 20) / 1e6
    with httpx.Client(base_url=server_url, timeout=300) as c:
        flow_id = str(uuid.uuid4())
        doc = {"id": flow_id, **loader.flow_doc(flow_id, str(uuid.uuid4()))}
        c.put(f"/flows/{flow_id}", json=doc).raise_for_status()

        def put_once() -> float:
            [obj] = c.post(f"/flows/{flow_id}/storage", json={"limit": 1}).json()["media_objects"]
            return _curl_put(obj["put_url"]["url"], payload)

        # PUTs and raw writes alternate, each leaving its file behind (see _raw_write).
        put_once()
        _raw_write(payload, scratch)
        puts, raw_writes = [], []
        for _ in range(rounds):
            puts.append(put_once())
            raw_writes.append(_raw_write(payload, scratch))
        put, raw_write = statistics.median(puts), statistics.median(raw_writes)
        [obj] = c.post(f"/flows/{flow_id}/storage", json={"limit": 1}).json()["media_objects"]
        _curl_put(obj["put_url"]["url"], payload)
        c.post(
            f"/flows/{flow_id}/segments", json={"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
        ).raise_for_status()
        url = c.get(f"/flows/{flow_id}/segments").json()[0]["get_urls"][0]["url"]
    get = _median_of(rounds, lambda: _curl_get(url))
    with SendfileServer(payload) as floor_server:
        sendfile = _median_of(rounds, lambda: _curl_get(floor_server.url))
    s3 = SeaweedS3().start()
    try:
        client = s3.client()
        bucket = s3.new_bucket()
        client.upload_file(str(payload), bucket, "object")
        s3_url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "object"}, ExpiresIn=3600)
        s3_get = _median_of(rounds, lambda: _curl_get(s3_url))
    finally:
        s3.stop()
    for written in scratch.glob("raw-*"):
        written.unlink()
    payload.unlink()
    return [
        (
            f"media GET, {megabytes} MiB object, curl (beside: the S3 server, SeaweedFS)",
            f"{mb / get:,.0f} MB/s",
            f"{mb / s3_get:,.0f} MB/s",
            f"{s3_get / get:.2f} of it",
        ),
        (
            "  the same GET beside a minimal sendfile(2) server",
            f"{mb / get:,.0f} MB/s",
            f"{mb / sendfile:,.0f} MB/s",
            f"{sendfile / get:.2f} of it",
        ),
        (
            f"media PUT, {megabytes} MiB object, curl (beside: a raw write and fsync, alternating)",
            f"{mb / put:,.0f} MB/s",
            f"{mb / raw_write:,.0f} MB/s",
            f"{raw_write / put:.2f} of it",
        ),
    ]

"""A real HTTP receiver for webhook tests: records every POST; answers with scripted statuses."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answered in turn; 200 when empty
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.received.append(
                            {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                        )
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bodies(self, event_type: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [r["body"] for r in self.received if event_type is None or r["body"]["event_type"] == event_type]

    def wait_for(self, count: int, event_type: str | None = None, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.bodies(event_type)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"expected {count} {event_type or ''} deliveries, got {len(self.bodies(event_type))}")

    async def arrived(self, count: int, event_type: str | None = None, timeout: float = 20) -> list[dict[str, Any]]:
        """``wait_for`` for async tests, without blocking the event loop the workers run on."""
        import asyncio

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.bodies(event_type)
            if len(got) >= count:
                return got
            await asyncio.sleep(0.02)
        raise AssertionError(f"expected {count} {event_type or ''} deliveries, got {len(self.bodies(event_type))}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Connections held to time, size and number: uvicorn's HTTP protocol with a header deadline, a
header size limit and a cap.

uvicorn closes a connection idle between requests (``timeout_keep_alive``) but gives a client as
long as it likes to send a request's headers, so clients trickling a header every few seconds
(slowloris) each hold a file descriptor for ever; 20,000 of them took the server down for
everyone. Here each request's headers must be complete within ``header_timeout`` seconds of its
first byte (of the connection, for the first request), and past ``max_connections`` open
connections the one that has waited longest for its headers is closed to make room (or, when
every connection is busy with a request, the new one), so the process keeps descriptors for its
database and media files and goes on answering clients that send whole requests. A body that stalls is bounded in
``api/limits.py`` (``body_timeout``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tamstore.config import Settings
from tamstore.domain.errors import BadRequest, TooLarge, error_body

__all__ = ["STREAM_SCOPE_KEY", "GuardedHttpProtocol", "configure"]

# In a request's scope, the callable that ends a response streaming until its client leaves
# (the event stream), for a server that is stopping.
STREAM_SCOPE_KEY = "tamstore.endless"


class GuardedHttpProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_connections: int = 4096
    max_header_bytes: int = 64 * 1024
    # Connections waiting for a request's headers, longest-waiting first: at the cap the first of
    # these makes room, so that a flood of slow clients costs its oldest member, not the next
    # client who sends a whole request at once.
    _awaiting: dict[GuardedHttpProtocol, None] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # received for this request's line and headers, so far
        self._began = False  # this request began in the chunk being parsed

    def data_received(self, data: bytes) -> None:
        """The request line and headers are bounded in size as well as time. The parser gathers
        a header's value by appending each piece to what it has, so one client sending a header
        that never ends, at full speed, had it copying megabytes on the event loop: every other
        request waited seconds. Chunks wholly within one request's headers are counted (the
        chunk it began in may hold the end of the one before, so it is not), so the parser
        holds at most one chunk more than ``max_header_bytes``."""
        self._began = False
        super().data_received(data)
        if self._header_deadline is None or self._began or self.transport.is_closing():
            return
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            limit = self.max_header_bytes // 1024
            self._disarm()
            self._reply_and_close(
                b"431 Request Header Fields Too Large", TooLarge(f"the request's headers are over {limit} KiB")
            )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            oldest = next(iter(self._awaiting), None)
            if oldest is None:  # every connection is busy with a request: refuse this one
                transport.abort()
                return
            oldest._disarm()
            oldest.transport.abort()
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()
        self._header_bytes, self._began = 0, True

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping: uvicorn lets responses in progress finish, but an event
        stream never does by itself, so it is asked to end (the callable it left in its scope
        under ``STREAM_SCOPE_KEY``); it completes its response, and the server stops without
        waiting for its clients to hang up (they reconnect to another replica, or later)."""
        cycle = getattr(self, "cycle", None)
        if cycle is not None and not cycle.response_complete:
            end = cycle.scope.get(STREAM_SCOPE_KEY)
            if callable(end):
                end()
        super().shutdown()

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser cannot read (a malformed or over-long request line or
        header block) gets the spec's error shape too, not uvicorn's plain text."""
        self._reply_and_close(b"400 Bad Request", BadRequest(f"the HTTP request could not be read: {msg.rstrip('.')}"))

    def _reply_and_close(self, status: bytes, err: BadRequest) -> None:
        body = orjson.dumps(error_body(err))
        head = [b"HTTP/1.1 " + status + b"\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body)]
        head += [b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)
        self._awaiting[self] = None

    def _disarm(self) -> None:
        self._awaiting.pop(self, None)
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        self._awaiting.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()


def configure(settings: Settings) -> None:
    """Set the limits for this process's connections (each server process calls this)."""
    GuardedHttpProtocol.header_timeout = float(settings.header_timeout)
    GuardedHttpProtocol.max_connections = settings.max_connections
    GuardedHttpProtocol.max_header_bytes = settings.max_header_kib * 1024

"""A real Server-Sent Events client for tests: reads a stream in a thread, parses its events."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Event:
    id: int | None
    event: str
    data: Any
    received: float = field(default_factory=time.monotonic)


class SseClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url, self.headers = url, headers or {}
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.status: int | None = None
        self.ended = threading.Event()
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(5, read=None)) as r:
                self._response = r
                self.status = r.status_code
                self.opened.set()
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif line == "":
                        if "data" in fields or "event" in fields:
                            data = fields.get("data", "")
                            event_id = int(fields["id"]) if "id" in fields else None
                            self.events.append(
                                Event(event_id, fields.get("event", "message"), json.loads(data) if data else None)
                            )
                        fields = {}
                    else:
                        name, _, value = line.partition(":")
                        fields[name] = value[1:] if value.startswith(" ") else value
        except Exception:  # closed under it (close()), or the server went
            pass
        finally:
            self.opened.set()
            self.ended.set()

    def wait_for(self, count: int, timeout: float = 10) -> list[Event]:
        """The events once there are at least ``count`` (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline and not self.ended.is_set():
            time.sleep(0.01)
        assert len(self.events) >= count, (len(self.events), [e.event for e in self.events])
        return list(self.events)

    def close(self) -> None:
        """Disconnect: the server sees the connection go."""
        self._stop.set()
        response = getattr(self, "_response", None)
        if response is not None:
            with contextlib.suppress(Exception):  # closed under the reading thread
                response.close()
        self.ended.wait(5)

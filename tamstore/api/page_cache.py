"""Kept segment pages: a GET of ``/flows/{id}/segments`` answered again from memory while
nothing it shows can have changed.

A segment page is a function of four things: what the database holds for the Flow (its segments
in range and the instances of the Objects they use), the request's path and query string, the
address it was asked at (links and media URLs are made from it), and the URL window its
``get_urls`` were signed in.

- The database part is summed up by the Flow's ``pages_token``: every write of segments or of
  Object instances sets the token of each Flow it touches to a fresh random value, in the same
  transaction (``store/metadata/base.py``). The token is read from the database before a page is
  reused, so a write made by any process or replica is seen by the next read everywhere.
- The token is read *before* a page is rendered: a write committed in between makes the kept page
  newer than its token, never older, and the next read simply renders it again.
- A page is reused only within the URL window it was rendered in, so the URLs in it keep the
  lifetime they promise (``store/media/base.py: GetUrlWindow``).

This is ASGI middleware inside authentication and the request log, and before routing: a hit
costs the token read and a copy of the kept bytes. The route itself knows nothing of it. A page
is kept from the second time it is asked for: the first time costs nothing more than before (no
token read), so reading a Flow through once, page after page, pays nothing for the cache. The
cache is per process, least recently used out first, bounded by the bytes of the pages it keeps.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, NamedTuple

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tamstore.api.deps import scope_context
from tamstore.domain.access import READ
from tamstore.domain.errors import TamsError
from tamstore.domain.flows import UUID_RE
from tamstore.ops import access
from tamstore.store.media.base import url_window

__all__ = ["PageCache", "PageCacheMiddleware"]


class KeptPage(NamedTuple):
    """A 200 answer to a GET, rendered after ``token`` was read, in URL window ``window``."""

    token: int
    window: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class PageCache:
    def __init__(self, max_bytes: int, *, remembered: int = 10_000) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._pages: OrderedDict[Hashable, KeptPage] = OrderedDict()
        self._asked: OrderedDict[Hashable, None] = OrderedDict()  # keys asked for once lately
        self._remembered = remembered

    def __len__(self) -> int:
        return len(self._pages)

    def asked_before(self, key: Hashable) -> bool:
        """Whether ``key`` was asked for lately; if not, remember that it now was. Only pages
        asked for a second time are worth a token read and a place: most of a random scan
        never comes back, and on PostgreSQL the read costs a round trip."""
        if key in self._pages or key in self._asked:
            return True
        self._asked[key] = None
        if len(self._asked) > self._remembered:
            self._asked.popitem(last=False)
        return False

    def get(self, key: Hashable, token: int, window: int) -> KeptPage | None:
        """The page kept for ``key`` if it was rendered at this ``token`` in this ``window``."""
        page = self._pages.get(key)
        if page is None or page.token != token or page.window != window:
            return None
        self._pages.move_to_end(key)
        return page

    def put(self, key: Hashable, page: KeptPage) -> None:
        """Keep ``page`` (pages over a quarter of the budget are not kept)."""
        if len(page.body) > self.max_bytes // 4:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.bytes -= len(old.body)
        self._pages[key] = page
        self.bytes += len(page.body)
        while self.bytes > self.max_bytes:
            _, evicted = self._pages.popitem(last=False)
            self.bytes -= len(evicted.body)


class PageCacheMiddleware:
    """Answers a GET or HEAD of a segment page from ``cache`` when it may, and keeps each 200
    answer to a GET that it passes on. ``route`` is the segment listing's GET route: its path
    is what is answered here, and the request log and metrics name it for a kept page as for
    any other."""

    def __init__(self, app: ASGIApp, cache: PageCache, metrics: Any, route: Any) -> None:
        self.app = app
        self.cache = cache
        self.metrics = metrics
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.route.path_regex.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD") or not self.cache.max_bytes:
            await self.app(scope, receive, send)
            return
        flow_id = match["flow_id"]
        key = (
            scope.get("raw_path") or scope["path"],
            scope["query_string"],
            scope["scheme"],
            scope.get("server"),
            scope.get("root_path"),
            next((v for k, v in scope["headers"] if k == b"host"), None),
        )
        token = None
        if UUID_RE.match(flow_id) and self.cache.asked_before(key):
            # (the database being away, the route answers, in the spec's error shape)
            with contextlib.suppress(TamsError):
                token = await scope_context(scope).store.pages_token(flow_id)
                seen = access.current()
                if token is not None and not seen.everything:
                    # A kept page is only for callers who may read the Flow; the others get the
                    # route's answer (that of a missing Flow), which is not kept.
                    store = scope_context(scope).store
                    async with store.read() as tx:
                        if not seen.allows(READ, await tx.classes_of("flow", flow_id)):
                            token = None
        window = url_window()
        page = None if token is None else self.cache.get(key, token, window)
        if page is not None:
            self.metrics.page_cache_hits.inc()
            scope["route"] = self.route
            await send({"type": "http.response.start", "status": 200, "headers": list(page.headers)})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else page.body})
            return
        self.metrics.page_cache_misses.inc()
        # Rendered by the route. Not kept: a page asked for once, a malformed id, no such Flow,
        # no database (no token), or a HEAD (no body).
        if token is None or scope["method"] == "HEAD":
            await self.app(scope, receive, send)
            return
        started: dict[str, Any] = {}
        body: list[bytes] = []

        async def keep(message: Message) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
                if not message.get("more_body") and started.get("status") == 200:
                    headers = list(started.get("headers", []))
                    self.cache.put(key, KeptPage(token, window, headers, b"".join(body)))
            await send(message)

        await self.app(scope, receive, keep)

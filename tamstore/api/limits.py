"""Request bodies held to ``max_body_kib`` and ``body_timeout`` as they arrive (ASGI middleware).

A body declared larger than the limit (``Content-Length``) is refused with 413 before any of it
is read; a body sent without a length (chunked) is counted as it streams and refused the moment
it passes the limit, so no request holds more than the limit in memory. Any body, media
uploads (``/x-tamstore/media/``) included, that stops arriving for ``body_timeout`` seconds is a
408; media uploads are not API bodies and have no size limit here (they stream to the media
store).
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tamstore.api.responses import error_reply
from tamstore.domain.errors import TimedOut, TooLarge
from tamstore.store.media.filesystem import MEDIA_PREFIX

__all__ = ["BodyLimitMiddleware"]


_UNREAD = frozenset({"GET", "HEAD"})
_MEDIA = MEDIA_PREFIX + "/"


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No route reads the body of a GET or HEAD (the server discards it unread).
        if scope["type"] != "http" or scope["method"] in _UNREAD:
            await self.app(scope, receive, send)
            return
        # Media uploads stream to the media store: bounded in time like every body, not in size.
        limit = None if scope["path"].startswith(_MEDIA) else self.max_bytes
        if limit is not None:
            for name, value in scope["headers"]:
                if name == b"content-length":
                    if not value.isdigit() or int(value) > limit:
                        await error_reply(scope, send, 413, self._too_large())
                        return
                    break
        received = 0
        complete = False

        async def counted() -> Message:
            nonlocal received, complete
            if complete:  # the body is in; later calls wait for a disconnect, unbounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise TimedOut(f"the request body stalled for {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if limit is not None and received > limit:
                    raise self._too_large()
            return message

        await self.app(scope, counted, send)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"the request body is larger than this service accepts ({self.max_bytes} bytes)")

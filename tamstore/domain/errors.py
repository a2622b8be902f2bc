"""The domain error tree. It knows nothing of HTTP; ``api/errors.py`` maps it to status codes.

TamsError
├── BadRequest        the request is malformed or breaks a rule of the spec   (400)
│   ├── Conflict      it clashes with stored state (overlap, existing id)     (400)
│   ├── TooLarge      it is bigger than this service accepts (a limit)        (413)
│   └── TimedOut      the client stopped sending it part-way                  (408)
├── Forbidden         allowed in general, refused here (read-only Flow)       (403)
├── NotFound          the resource does not exist                             (404)
├── UnsupportedMedia  the body is not of a type the route reads (not JSON)    (415)
├── TooManyRequests   the client is refused for a while (failed logins)       (429)
└── Unavailable       a backing service (database, storage) is unreachable    (503)
    └── InsufficientStorage  the media store has no room for the bytes        (507)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "NotFound",
    "TamsError",
    "TimedOut",
    "TooLarge",
    "TooManyRequests",
    "Unavailable",
    "UnsupportedMedia",
    "error_body",
]


class TamsError(Exception):
    """Base of every error the service reports to a client."""

    kind = "error"

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.summary!r})"


class BadRequest(TamsError):
    kind = "bad_request"


class Conflict(BadRequest):
    kind = "conflict"


class Forbidden(TamsError):
    kind = "forbidden"


class NotFound(TamsError):
    kind = "not_found"


class TooLarge(BadRequest):
    kind = "payload_too_large"


class TimedOut(BadRequest):
    kind = "request_timeout"


class UnsupportedMedia(TamsError):
    kind = "unsupported_media_type"


class TooManyRequests(TamsError):
    kind = "too_many_requests"

    def __init__(self, summary: str, retry_after: int) -> None:
        super().__init__(summary)
        self.retry_after = retry_after


class Unavailable(TamsError):
    kind = "unavailable"


class InsufficientStorage(Unavailable):
    kind = "insufficient_storage"


def error_body(exc: TamsError) -> dict[str, Any]:
    """The spec's error shape (error.json): ``type``, ``summary``, ``time``."""
    return {
        "type": exc.kind,
        "summary": exc.summary,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }

"""The web UI at ``/ui/``: static files from the package (no CDN, no build step), and a browser
opening ``/`` sent there.

The files are public, like the API documentation: the UI signs in against the API itself, and
shows only what the API lets the signed-in principal see.
"""

from __future__ import annotations

from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["STATIC", "BrowserRedirectMiddleware", "ui_files"]

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"


# The UI runs with the signed-in user's credentials, and shows text that any writer chose
# (labels, tags, get_urls): only its own files may run in it, nothing may frame it (a delete
# button under someone else's page), and no response is taken for another type than it says.
# Media and playlists may come from any storage backend's origin (S3 presigned URLs).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
        b"media-src 'self' blob: http: https:; connect-src 'self' http: https:; worker-src 'self' blob:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def ui_files() -> ASGIApp:
    files = StaticFiles(directory=STATIC, html=True)

    async def with_security_headers(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await files(scope, receive, send_with_headers)

    return with_security_headers


def _wants_html(headers: Headers) -> bool:
    """A browser's navigation (``Accept: text/html,...``), not an API client: those ask for JSON
    or anything (``*/*``)."""
    accept = headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


class BrowserRedirectMiddleware:
    """``GET /`` from a browser goes to the UI; API clients still get the spec's JSON there. It
    runs before authentication, so a browser is not asked for credentials by ``/`` itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == "/"
            and scope["method"] in ("GET", "HEAD")
            and _wants_html(Headers(scope=scope))
        ):
            await RedirectResponse("/ui/", status_code=302)(scope, receive, send)
            return
        await self.app(scope, receive, send)

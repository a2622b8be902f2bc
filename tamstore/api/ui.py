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
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["STATIC", "BrowserRedirectMiddleware", "ui_files"]

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"


def ui_files() -> StaticFiles:
    return StaticFiles(directory=STATIC, html=True)


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

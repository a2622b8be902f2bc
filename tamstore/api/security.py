"""Authentication before routing (ASGI middleware) and the built-in OAuth2 token endpoint.

Every request is checked here, before any route runs, against ``tamstore.auth.scopes_for``:
missing or invalid credentials get 401 with ``WWW-Authenticate``, too few scopes get 403.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import orjson
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tamstore.api.errors import retry_headers
from tamstore.api.responses import error_reply
from tamstore.api.routing import api_router
from tamstore.auth import ADMIN, ALL_SCOPES, AuthConfig, AuthError, TooManyFailures, scopes_for
from tamstore.domain.errors import Forbidden, TamsError, TooManyRequests, Unavailable
from tamstore.ops import access

__all__ = ["AuthMiddleware", "router"]


class AuthMiddleware:
    def __init__(self, app: ASGIApp, config: AuthConfig) -> None:
        self.app = app
        self.config = config
        challenges = []
        if "bearer" in config.methods:
            challenges.append('Bearer realm="tamstore"')
        if "basic" in config.methods:
            challenges.append('Basic realm="tamstore", charset="UTF-8"')
        self.challenge = ", ".join(challenges)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.config.enabled:
            await self.app(scope, receive, send)
            return
        needed = scopes_for(scope["method"], scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = QueryParams(scope.get("query_string", b"")).get("access_token")
        try:
            principal = await self.config.authenticate(headers.get("authorization"), token, _client_address(scope))
        except TooManyFailures as exc:
            held = TooManyRequests(str(exc), exc.retry_after)
            await error_reply(scope, send, 429, held, {"Retry-After": str(exc.retry_after)})
            return
        except AuthError as exc:
            err = TamsError(str(exc))
            err.kind = "unauthorized"
            await error_reply(scope, send, 401, err, {"WWW-Authenticate": self.challenge})
            return
        except Unavailable as exc:  # the identity provider's keys cannot be fetched
            await error_reply(scope, send, 503, exc, retry_headers(exc))
            return
        if not principal.scopes & needed:
            wanted = " or ".join(sorted(needed))
            await error_reply(scope, send, 403, Forbidden(f"this needs the scope {wanted}"))
            return
        scope["tamstore.principal"] = principal.name
        scope["tamstore.admin"] = ADMIN in principal.scopes
        scope["tamstore.scopes"] = sorted(principal.scopes)
        scope["tamstore.groups"] = sorted(principal.groups)
        # The operations this request runs enforce the principal's auth classes (ops/access.py).
        entered = access.CURRENT.set(self.config.access(principal))
        try:
            await self.app(scope, receive, send)
        finally:
            access.CURRENT.reset(entered)


router = api_router(tags=["authentication"])


@router.get(
    "/x-tamstore/whoami",
    summary="Who the request's credentials name, and their scopes (tamstore extension)",
    description="With authentication off: no name, every scope. The web UI shows only the controls "
    "these scopes allow (the API refuses the rest anyway).",
)
async def whoami(request: Request) -> Response:
    config: AuthConfig = request.app.state.auth
    if not config.enabled:
        body = {"name": None, "scopes": sorted(ALL_SCOPES), "authentication": False}
    else:
        body = {
            "name": request.scope.get("tamstore.principal"),
            "scopes": request.scope.get("tamstore.scopes", []),
            "groups": request.scope.get("tamstore.groups", []),
            "authentication": True,
        }
    return Response(orjson.dumps(body), media_type="application/json")


@router.post(
    "/x-tamstore/oauth2/token",
    summary="OAuth2 client-credentials token endpoint (tamstore extension)",
    description="For deployments without an identity provider: clients listed in the auth file "
    "exchange their id and secret (HTTP Basic or form fields) for a Bearer token.",
)
async def token(request: Request) -> Response:
    config: AuthConfig = request.app.state.auth
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
    if form.get("grant_type") != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type")
    client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return _oauth_error(401, "invalid_client")
    try:
        issued = await config.issue_token(client_id, secret, form.get("scope"), _client_address(request.scope))
    except TooManyFailures as exc:
        return Response(
            orjson.dumps({"error": "invalid_client", "error_description": str(exc)}),
            status_code=429,
            media_type="application/json",
            headers={"Retry-After": str(exc.retry_after)},
        )
    except AuthError:
        return _oauth_error(401, "invalid_client")
    return Response(orjson.dumps(issued), media_type="application/json", headers={"Cache-Control": "no-store"})


def _client_address(scope: Scope) -> str:
    """The caller's address as the server saw it (behind a proxy, with --proxy-headers, the
    address the proxy forwarded for)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def _oauth_error(status: int, code: str) -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="tamstore"'} if status == 401 else None
    return Response(orjson.dumps({"error": code}), status_code=status, media_type="application/json", headers=headers)

"""How a client proves who it is: nothing, HTTP Basic, a Bearer token, or OAuth2 client
credentials (a token fetched from the token endpoint, and fetched again before it expires).

Each is an ``httpx.Auth``, so one object serves sync and async clients alike; the OAuth2 flow
asks for its token as one more request of the same client (its retries and timeouts included).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from dataclasses import dataclass

import httpx

__all__ = ["AuthOptions", "BearerToken", "ClientCredentials", "auth_from"]


class BearerToken(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class ClientCredentials(httpx.Auth):
    """OAuth2 client-credentials grant (RFC 6749 §4.4): the client id and secret go to
    ``token_url`` as HTTP Basic; the token is reused until ``REFRESH_MARGIN`` seconds before it
    expires, and fetched again when the server refuses it (401)."""

    REFRESH_MARGIN = 30.0

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str | None = None) -> None:
        self.token_url, self.scope = token_url, scope
        self._basic = httpx.BasicAuth(client_id, client_secret)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def _token_request(self) -> httpx.Request:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope else {})}
        request = httpx.Request("POST", self.token_url, data=form)
        return next(self._basic.auth_flow(request))

    def _take(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise httpx.HTTPStatusError(
                f"token endpoint {self.token_url} answered {response.status_code}",
                request=response.request,
                response=response,
            )
        body = response.json()
        with self._lock:
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 3600))

    def _fresh(self) -> bool:
        return self._token is not None and time.monotonic() < self._expires - self.REFRESH_MARGIN

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if not self._fresh():
            token_response = yield self._token_request()
            token_response.read()
            self._take(token_response)
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one more try with a new token
            token_response = yield self._token_request()
            token_response.read()
            self._take(token_response)
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    requires_response_body = True


@dataclass(frozen=True)
class AuthOptions:
    """The credentials a command line or environment gives, as one value."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    oauth2_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None


def auth_from(options: AuthOptions) -> httpx.Auth | None:
    """The ``httpx.Auth`` the options ask for (at most one kind may be given)."""
    kinds = [
        k
        for k, given in (
            ("basic", options.username is not None),
            ("token", options.token is not None),
            ("oauth2", options.oauth2_url is not None),
        )
        if given
    ]
    if len(kinds) > 1:
        raise ValueError(f"give one kind of credentials, not {' and '.join(kinds)}")
    if options.username is not None:
        return httpx.BasicAuth(options.username, options.password or "")
    if options.token is not None:
        return BearerToken(options.token)
    if options.oauth2_url is not None:
        if not (options.client_id and options.client_secret):
            raise ValueError("OAuth2 client credentials need a client id and a client secret")
        return ClientCredentials(options.oauth2_url, options.client_id, options.client_secret)
    return None

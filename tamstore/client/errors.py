"""What a TAMS server's refusal looks like to a client: an exception carrying the error body."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["ObjectTooLarge", "RefusedMediaUrl", "TamsApiError", "raise_for_status"]


class TamsApiError(Exception):
    """A TAMS server answered 4xx or 5xx. ``body`` is its error document (``type``, ``summary``,
    ``time``) when it sent one."""

    def __init__(self, method: str, url: str, status: int, body: Any) -> None:
        summary = body.get("summary") if isinstance(body, dict) else None
        super().__init__(f"{method} {url}: {status} {summary or str(body)[:200]}")
        self.method, self.url, self.status, self.body = method, url, status, body

    @property
    def summary(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("summary"), str):
            return str(self.body["summary"])
        return str(self.body)[:200]


class ObjectTooLarge(Exception):
    """A media URL gave more bytes than the client was told to accept."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(f"GET {url.split('?')[0]}: more than {limit} bytes, not read further")
        self.url, self.limit = url, limit


class RefusedMediaUrl(httpx.RequestError):
    """A media URL (or a redirect from one) leads to an address the client will not fetch from:
    a cloud metadata service, link-local, multicast or reserved (``domain.targets``)."""


def raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    request = response.request
    url = str(request.url.copy_with(query=None))
    raise TamsApiError(request.method, url, response.status_code, body)

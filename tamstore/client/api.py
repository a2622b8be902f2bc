"""A client for any TAMS 8.2 server: ``AsyncTamsClient``, and ``TamsClient`` for synchronous code.

Every call goes through one ``httpx.AsyncClient`` whose transport retries what may be retried
(``httpx-retries``): connections that could not be made, requests the server dropped unanswered
where sending them again is harmless (GET, HEAD, PUT, DELETE), and 503 and 429 answers,
honouring ``Retry-After``, with exponential backoff. Other 4xx and 5xx answers raise ``TamsApiError``
carrying the server's error document. Listings are followed page by page through their ``Link``
headers. Only the TAMS API is used, except ``events``: a Server-Sent Events stream a server
advertises in its ``/service`` (tamstore's ``x-tamstore-server-sent-events``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
from httpx_retries import Retry, RetryTransport

from tamstore.client.errors import ObjectTooLarge, RefusedMediaUrl, TamsApiError, raise_for_status
from tamstore.domain.targets import TargetPolicy
from tamstore.domain.timerange import TimeRange
from tamstore.outbound import CheckedTransport

__all__ = ["AsyncTamsClient", "TamsClient", "best_url"]

T = TypeVar("T")


class Resendable(httpx.TransportError):
    """The server dropped a request without answering it (it went away mid-request, or closed a
    kept connection as the request went out), and the request is one that may be sent again
    whether or not it was carried out: GET, HEAD, PUT, DELETE."""


_RESENDABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# What httpx raises for a request the server dropped without answering.
_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
RESENDS = 3  # a POST the server dropped unanswered is sent again this many times


class _MarkResendable(httpx.AsyncBaseTransport):
    """Turns a dropped request of a method that may be sent again into :class:`Resendable`,
    which the retries take; a dropped POST stays what it was (it may have been carried out)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self.inner.handle_async_request(request)
        except _DROPPED as exc:
            if request.method in _RESENDABLE_METHODS:
                raise Resendable(f"{type(exc).__name__}: {exc}", request=request) from exc
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()


# Failures before a request reached the server are retried, whatever the method; a request the
# server dropped unanswered only where sending it again is harmless (Resendable): a POST that
# was sent may have been carried out.
_RETRY_EXCEPTIONS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, Resendable)


async def _resent(call: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
    """``call()``'s result, and whether it was sent more than once: a POST the server dropped
    without answering is sent again (the retries waiting for the server to be back). What the
    first may already have done, the caller reconciles."""
    attempt = 0
    while True:
        try:
            return await call(), attempt > 0
        except _DROPPED:
            if attempt == RESENDS:
                raise
        await asyncio.sleep(0.5 * 2**attempt)
        attempt += 1


def _retry(total: int) -> Retry:
    return Retry(
        total=total,
        allowed_methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
        status_forcelist=[429, 503],
        retry_on_exceptions=list(_RETRY_EXCEPTIONS),
        backoff_factor=0.5,
        max_backoff_wait=30.0,
        respect_retry_after_header=True,
    )


# Media URLs are whatever a store's writers registered (get_urls), and a client downloads them
# wherever it runs: a URL at a cloud metadata service (169.254.169.254) would have its answer
# copied into the target store by ``tamstore sync``. Public, private and loopback addresses
# are fetched (stores and their buckets live on all three); link-local, metadata, multicast
# and reserved ones are refused, on every redirect too.
MEDIA_POLICY = TargetPolicy("private")


def _refused(reason: str, request: httpx.Request) -> RefusedMediaUrl:
    return RefusedMediaUrl(reason, request=request)


def best_url(urls: list[dict[str, Any]]) -> str | None:
    """The ``get_urls`` entry to read from: a presigned one carries its own authorisation, and
    is on a Storage Backend the server controls; else the first (an uncontrolled URL)."""
    if not urls:
        return None
    return str(sorted(urls, key=lambda u: u.get("presigned") is not True)[0]["url"])


class AsyncTamsClient:
    """``server`` is the TAMS API's base URL; ``auth`` an ``httpx.Auth`` (see ``client.auth``)."""

    def __init__(
        self,
        server: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        max_download: int = 2**30,
        media_policy: TargetPolicy | None = MEDIA_POLICY,
    ) -> None:
        self.server = server.rstrip("/")
        self.max_download = max_download
        wrapped = RetryTransport(_MarkResendable(transport or httpx.AsyncHTTPTransport()), retry=_retry(retries))
        self.http = httpx.AsyncClient(base_url=self.server, auth=auth, timeout=timeout, transport=wrapped)
        # Media URLs (presigned, possibly on another host) carry their own authorisation.
        # A lasting URL may redirect to a presigned one (tamstore's /x-tamstore/objects/).
        media: httpx.AsyncBaseTransport = (
            httpx.AsyncHTTPTransport()
            if media_policy is None
            else CheckedTransport(media_policy, "media URL host", _refused)
        )
        self.media = httpx.AsyncClient(
            timeout=timeout,
            transport=RetryTransport(_MarkResendable(media), retry=_retry(retries)),
            follow_redirects=True,
        )

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.media.aclose()

    async def __aenter__(self) -> AsyncTamsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- requests -----------------------------------------------------------------------------

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, path, **kwargs)
        raise_for_status(response)
        return response

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def _get_or_none(self, path: str, params: dict[str, Any] | None = None) -> Any:
        try:
            return await self.get_json(path, params)
        except TamsApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Every item of a paged listing, following ``Link: <...>; rel="next"`` to the end."""
        response = await self.request("GET", path, params=params)
        while True:
            for item in response.json():
                yield item
            following = response.links.get("next", {}).get("url")
            if not following:
                return
            response = await self.request("GET", following)

    # -- service, sources, flows ---------------------------------------------------------------

    async def service(self) -> dict[str, Any]:
        return await self.get_json("/service")  # type: ignore[no-any-return]

    async def event_stream_url(self) -> str | None:
        """The Server-Sent Events stream the server advertises in ``/service``, or None."""
        for mechanism in (await self.service()).get("event_stream_mechanisms") or []:
            if mechanism.get("name") == "x-tamstore-server-sent-events":
                url = (mechanism.get("config") or {}).get("url")
                return str(url) if url else None
        return None

    async def events(
        self, url: str, *, opened: Callable[[], None] | None = None, **filters: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The events of a Server-Sent Events stream (``event_stream_url``), each the webhook
        body with its stream ``id`` added, until the server ends the stream. ``filters`` are
        the webhook filters as query parameters (lists are joined with commas); ``opened`` is
        called once the server has accepted the stream."""
        params = {k: ",".join(v) if isinstance(v, list | tuple) else v for k, v in filters.items()}
        timeout = httpx.Timeout(self.http.timeout.connect, read=None)  # the stream waits for events
        async with self.http.stream("GET", url, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_status(response)
            if opened is not None:
                opened()
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    if not line.startswith(":"):  # a comment (heartbeat)
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    continue
                if fields.get("data") and fields.get("event") != "error":
                    event = json.loads(fields["data"])
                    event["id"] = fields.get("id")
                    yield event
                fields = {}

    async def sources(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        async for item in self.pages("/sources", filters):
            yield item

    async def get_source(self, source_id: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/sources/{source_id}")  # type: ignore[no-any-return]

    async def flows(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        async for item in self.pages("/flows", filters):
            yield item

    async def get_flow(self, flow_id: str, **params: Any) -> dict[str, Any] | None:
        return await self._get_or_none(f"/flows/{flow_id}", params)  # type: ignore[no-any-return]

    async def put_flow(self, flow: dict[str, Any]) -> None:
        """Create or replace a Flow (its Source is created with it)."""
        await self.request("PUT", f"/flows/{flow['id']}", json=flow)

    async def set_flow_property(self, flow_id: str, name: str, value: Any) -> None:
        await self.request("PUT", f"/flows/{flow_id}/{name}", json=value)

    async def delete_flow(self, flow_id: str, *, wait: bool = True, poll: float = 0.5) -> None:
        """Delete a Flow; a server that answers 202 is polled until its delete request is done."""
        response = await self.request("DELETE", f"/flows/{flow_id}")
        if response.status_code == 202 and wait:
            await self.wait_for_delete_request(response.json()["id"], poll=poll)

    async def wait_for_delete_request(self, request_id: str, *, poll: float = 0.5) -> dict[str, Any]:
        while True:
            doc = await self.get_json(f"/flow-delete-requests/{request_id}")
            if doc["status"] == "done":
                return doc  # type: ignore[no-any-return]
            if doc["status"] == "error":
                raise TamsApiError("DELETE", f"/flow-delete-requests/{request_id}", 500, doc.get("error", doc))
            await asyncio.sleep(poll)

    # -- segments and media --------------------------------------------------------------------

    async def segments(
        self, flow_id: str, timerange: TimeRange | str | None = None, **params: Any
    ) -> AsyncIterator[dict[str, Any]]:
        if timerange is not None:
            params["timerange"] = str(timerange) if isinstance(timerange, TimeRange) else timerange
        async for item in self.pages(f"/flows/{flow_id}/segments", params):
            yield item

    async def post_segments(self, flow_id: str, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Register segments; returns the ones the server refused (its ``failed_segments``).

        A POST the server dropped without answering (it went away mid-request) is sent again
        once it is back; segments the second one is refused because the first had registered
        them (the Flow holds them as they are) are not refusals."""
        path = f"/flows/{flow_id}/segments"
        response, again = await _resent(lambda: self.request("POST", path, json=segments))
        failed = list(response.json().get("failed_segments", [])) if response.status_code == 200 else []
        if failed and again:
            failed = [f for f in failed if not await self._holds(flow_id, f)]
        return failed

    async def _holds(self, flow_id: str, segment: dict[str, Any]) -> bool:
        """The Flow holds ``segment`` as it is (the same range and Object)."""
        async for held in self.segments(flow_id, segment["timerange"], accept_get_urls=""):
            if held["timerange"] == segment["timerange"] and held["object_id"] == segment["object_id"]:
                return True
        return False

    async def allocate(self, flow_id: str, count: int, **extra: Any) -> list[dict[str, Any]]:
        """Object ids and upload URLs for ``count`` new Objects (``POST /flows/{id}/storage``);
        ``object_ids=[...]`` asks for those ids instead (the spec allows one or the other). An
        allocation of ``count`` the server dropped unanswered is asked for again (Objects it may
        have allocated are collected as never used); one of given ids is not (they may be taken)."""
        path = f"/flows/{flow_id}/storage"
        if "object_ids" in extra:
            body = await self.request("POST", path, json=dict(extra))
        else:
            body, _ = await _resent(lambda: self.request("POST", path, json={"limit": count, **extra}))
        return list(body.json()["media_objects"])

    async def upload(self, put_url: dict[str, Any], data: bytes) -> None:
        headers = {"content-type": put_url["content-type"]} if put_url.get("content-type") else {}
        response = await self.media.put(put_url["url"], content=data, headers=headers)
        raise_for_status(response)

    async def download(self, url: str, *, limit: int | None = None) -> bytes:
        """An Object's bytes from one of its ``get_urls``; more than ``limit`` bytes (default
        ``max_download``) is an ObjectTooLarge, read no further: a media URL is any server's."""
        limit = self.max_download if limit is None else limit
        # TAMS: clients include their credentials for a URL on the API's own origin (as
        # tamstore's lasting /x-tamstore/objects/ URLs are); any other host gets none of them,
        # nor does a redirect away from that origin (httpx drops them there).
        auth = self.http.auth if self.http.auth is not None and self._same_origin(url) else httpx.USE_CLIENT_DEFAULT
        async with self.media.stream("GET", url, auth=auth) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_status(response)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise ObjectTooLarge(url, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ObjectTooLarge(url, limit)
                chunks.append(chunk)
        return b"".join(chunks)

    def _same_origin(self, url: str) -> bool:
        try:
            theirs, ours = httpx.URL(url), httpx.URL(self.server)
        except httpx.InvalidURL:
            return False
        return (theirs.scheme, theirs.host, theirs.port) == (ours.scheme, ours.host, ours.port)

    async def get_object(self, object_id: str) -> dict[str, Any] | None:
        return await self._get_or_none(f"/objects/{object_id}")  # type: ignore[no-any-return]

    async def add_instance(self, object_id: str, instance: dict[str, Any]) -> None:
        """Another place for an Object's bytes: ``{"storage_id": ...}`` (the server copies) or
        ``{"url": ..., "label": ...}`` (an uncontrolled copy the client made)."""
        await self.request("POST", f"/objects/{object_id}/instances", json=instance)

    async def delete_instance(self, object_id: str, *, storage_id: str | None = None, label: str | None = None) -> None:
        params = {"storage_id": storage_id} if storage_id else {"label": label}
        await self.request("DELETE", f"/objects/{object_id}/instances", params=params)

    # -- webhooks ------------------------------------------------------------------------------

    async def webhooks(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self.pages("/service/webhooks"):
            yield item

    async def create_webhook(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("POST", "/service/webhooks", json=body)).json()  # type: ignore[no-any-return]

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request("DELETE", f"/service/webhooks/{webhook_id}")


class TamsClient:
    """``AsyncTamsClient`` for synchronous code: the same methods, blocking, on an event loop of
    the client's own (in a background thread); listings are ordinary iterators."""

    def __init__(self, server: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tams-client", daemon=True)
        self._thread.start()

        async def make() -> AsyncTamsClient:
            return AsyncTamsClient(server, **options)

        self._client = self._call(make())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncIterator[Any]) -> Iterator[Any]:
        while True:
            try:
                yield self._call(agen.__anext__())
            except StopAsyncIteration:
                return

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self._iterate(attr(*a, **k))
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._call(attr(*a, **k))
        return attr

    def close(self) -> None:
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> TamsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

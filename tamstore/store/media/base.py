"""The media store seam: where Object bytes live and the URLs clients use to reach them.

A media store is one TAMS Storage Backend. It hands out upload URLs for new Objects and
download URLs for stored ones, and deletes bytes. It never sees Flows or Segments.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

__all__ = [
    "URL_WINDOW_SECONDS",
    "BackendInfo",
    "GetUrlWindow",
    "MediaStore",
    "SignedUrl",
    "copy_via_file",
    "url_json",
    "url_window",
]

T = TypeVar("T")

URL_WINDOW_SECONDS = 60


def url_window(seconds: int = URL_WINDOW_SECONDS) -> int:
    """The start (Unix seconds) of the window that GET URLs are signed for now: every GET URL
    handed out during it stays valid at least its lifetime after the window ends."""
    now = int(time.time())
    return now - now % seconds


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """What ``/service/storage-backends`` says about a backend (ADR 0032, 0055)."""

    id: str
    label: str
    provider: str
    store_product: str
    store_type: str = "http_object_store"
    default_storage: bool = False
    region: str | None = None
    availability_zone: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "store_type": self.store_type,
            "provider": self.provider,
            "store_product": self.store_product,
            "label": self.label,
            "default_storage": self.default_storage,
        }
        for key in ("region", "availability_zone"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.tags:
            out["tags"] = self.tags
        return out


class SignedUrl(NamedTuple):
    """A URL for an Object's bytes (an upload URL; GET URLs come a page at a time as strings)."""

    url: str
    presigned: bool


class GetUrlWindow:
    """GET URLs signed once per Object per time window and handed out again within it.

    Every page of segments carries a signed URL per Object. Signing each once per window
    instead of once per read takes most of the URL work off a page, and the same Object gets
    the same URL all window long, so HTTP caches in front of the media (a CDN, a browser) see
    one URL rather than a new one per read. Every URL stays valid ``lifetime`` seconds past the
    end of its window: whenever it is handed out, it has at least ``lifetime`` seconds to run.
    """

    def __init__(self, lifetime: int, *, seconds: int = URL_WINDOW_SECONDS, max_urls: int = 100_000) -> None:
        self.lifetime = lifetime
        self.seconds = seconds
        self.max_urls = max_urls
        self._start = -1  # the current window: [start, start + seconds)
        self._urls: dict[Hashable, dict[str, Any]] = {}  # scope: Object id: URL (or its JSON)
        self._made = 0  # URLs kept, in all scopes

    def signer(self, sign: Callable[[int, int, str], T], scope: Hashable = None) -> Callable[[str], T]:
        """A function from an Object id to the current window's URL for it in ``scope`` (what
        else the URL depends on: the base URL a client named; and what ``sign`` makes of it, the
        URL or a JSON entry around it, ``url_json``), made by ``sign(start, expires,
        object_id)`` the first time it is asked for (``start``: the window's start,
        ``expires``: when its URLs stop working, both Unix seconds).

        One signer serves one response: the window is looked up once for all of its URLs, and
        each URL after that is one dictionary lookup. The URLs are forgotten when the window
        moves on, or when ``max_urls`` are kept: memory stays bounded, whatever the scopes."""
        start = url_window(self.seconds)
        if start != self._start:
            self._start = start
            self._start_over()
        kept: dict[str, T] = self._urls.get(scope, {})
        expires = start + self.seconds + self.lifetime

        def url(object_id: str) -> T:
            found = kept.get(object_id)
            if found is None:
                found = sign(start, expires, object_id)
                if self._start == start:  # (a signer that outlives its window keeps nothing)
                    if self._made >= self.max_urls:
                        self._start_over()
                    kept[object_id] = found
                    self._urls[scope] = kept  # a scope is kept once it has a URL
                    self._made += 1
            return found

        return url

    def _start_over(self) -> None:
        for kept in self._urls.values():
            kept.clear()  # (a signer still in use keeps its dictionary, now empty)
        self._urls, self._made = {}, 0


def url_json(
    sign: Callable[[int, int, str], str], around: tuple[bytes, bytes]
) -> Callable[[int, int, str], orjson.Fragment]:
    """``sign`` made to give the URL as JSON, between ``around``'s two halves: a page's whole
    ``get_urls`` list for an Object, serialized once per window instead of once per page
    (``MediaStore.get_url_json``)."""
    head, tail = around

    def as_json(start: int, expires: int, object_id: str) -> orjson.Fragment:
        return orjson.Fragment(head + orjson.dumps(sign(start, expires, object_id)) + tail)

    return as_json


class MediaStore(Protocol):
    info: BackendInfo

    def put_url(self, object_id: str, content_type: str | None, base_url: str) -> SignedUrl:
        """A URL a client can PUT the Object's bytes to, valid at least the presigned timeout."""

    def get_url_signer(self, base_url: str) -> Callable[[str], str]:
        """A function giving an Object's presigned GET URL, for one response (its set-up is
        paid once a page, not once a URL: ``GetUrlWindow.signer``). Every backend here offers
        that one kind of URL."""

    def get_url_json(self, base_url: str, around: tuple[bytes, bytes]) -> Callable[[str], orjson.Fragment]:
        """``get_url_signer``'s URL as a JSON string between ``around``'s halves (``url_json``),
        kept in the same window as the URLs: a segment page's ``get_urls`` for an Object with
        only its controlled instance, ready to be spliced into the page's JSON."""

    async def delete(self, object_ids: list[str]) -> None:
        """Delete stored bytes; objects that were never uploaded are not an error."""

    async def exists(self, object_id: str) -> bool: ...

    async def check(self) -> None:
        """Raise when the backend cannot be used right now (readiness)."""

    async def copy_from(self, object_id: str, source: MediaStore) -> None:
        """Copy bytes from another controlled backend (object instance replication)."""

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run a blocking call on this backend's bytes (``download_to``, ``copy_via_file``) in a
        thread meant for it: a remote backend's own (``ThreadLane``), so that one that
        stops answering holds none of the threads other requests need."""

    def download_to(self, object_id: str, path: Path) -> None:
        """Blocking: write the Object's bytes to a local file. FileNotFoundError when the
        backend does not hold them; another OSError (or the backend's own error) when it
        cannot be read now."""

    def upload_from(self, object_id: str, path: Path) -> None:
        """Blocking: store a local file's bytes as the Object."""


def copy_via_file(source: MediaStore, target: MediaStore, object_id: str) -> None:
    """Blocking: copy an Object between backends of different kinds through a temporary file."""
    tmp = Path(tempfile.mkdtemp(prefix="tamstore-copy-"))
    try:
        path = tmp / "object"
        source.download_to(object_id, path)
        target.upload_from(object_id, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

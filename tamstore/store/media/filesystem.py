"""The embedded media backend: Object bytes in files under the data dir, served by tamstore.

An Object id is an arbitrary client-visible string (it may hold ``/``, ``..``, NUL ...), so it is
never used as a path: a file is named by the SHA-256 of the id, sharded two levels deep. No id
can reach outside the media root.

Upload and download URLs point at tamstore's own ``/x-tamstore/media/{base64url id}`` routes
(base64, so that no client normalises ``..`` or ``%2F`` away) and carry an
HMAC-SHA256 signature over (method, object id, expiry): they are presigned in the TAMS sense,
self-authorising for ``url_timeout`` seconds and useless for anything else once tampered with.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import os
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tamstore.domain.errors import InsufficientStorage, TooLarge, Unavailable
from tamstore.keys import HmacSha256
from tamstore.store.media.base import BackendInfo, GetUrlWindow, MediaStore, SignedUrl, copy_via_file, url_json
from tamstore.store.media.file_writer import UPLOADS_AT_ONCE, BackgroundFileWriter

__all__ = ["FilesystemMediaStore", "MEDIA_PREFIX"]

T = TypeVar("T")

MEDIA_PREFIX = "/x-tamstore/media"
# Defaults of the settings max_object_mib and min_free_mib (see ``FilesystemMediaStore``).
MAX_OBJECT_BYTES = 5 << 30
MIN_FREE_BYTES = 64 << 20
# A stable id for the embedded backend, the same in every installation (uuid5 of its name).
FILESYSTEM_BACKEND_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "tamstore:filesystem"))


@dataclass(frozen=True)
class StoredItem:
    object_id: str | None
    path: Path
    mtime: float

    @property
    def name(self) -> str:
        return self.object_id if self.object_id is not None else str(self.path)


class FilesystemMediaStore:
    def __init__(
        self,
        root: Path,
        key: bytes,
        *,
        url_timeout: int,
        info: BackendInfo | None = None,
        uploads_at_once: int = UPLOADS_AT_ONCE,
        max_object_bytes: int = MAX_OBJECT_BYTES,
        min_free_bytes: int = MIN_FREE_BYTES,
    ):
        self.root = root
        # Anyone holding a put_url may upload, and the database usually shares this disk: one
        # Object is bounded, and uploads stop short of the last ``min_free_bytes``, so that a
        # writer filling the disk leaves the store able to record, list and delete.
        self.max_object_bytes = max_object_bytes
        self.min_free_bytes = min_free_bytes
        self._uploads_at_once = uploads_at_once
        # Uploads being written at once: each may hold MAX_QUEUED bytes for the disk, so this
        # bounds their memory; the others wait their turn (their clients' TCP windows fill).
        self._writing = asyncio.Semaphore(uploads_at_once)
        self.tmp = root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._hmac = HmacSha256(key)
        self.url_timeout = url_timeout
        self._get_window = GetUrlWindow(url_timeout)
        self.info = info or BackendInfo(
            id=FILESYSTEM_BACKEND_ID,
            label="tamstore:filesystem:local",
            provider="tamstore",
            store_product="tamstore-filesystem",
            default_storage=True,
        )

    # -- paths --------------------------------------------------------------------------------

    def path_for(self, object_id: str) -> Path:
        return self.root / _relative_path(object_id)

    # -- signing ------------------------------------------------------------------------------

    def _signature(self, method: str, object_id: str, expires: int) -> str:
        return self._hmac.hexdigest(f"{method}\n{object_id}\n{expires}".encode("utf-8", "surrogatepass"))

    def _signed(self, method: str, object_id: str, base_url: str, expires: int) -> str:
        sig = self._signature(method, object_id, expires)
        return f"{base_url}{MEDIA_PREFIX}/{encode_id(object_id)}?expires={expires}&signature={sig}"

    def verify(self, method: str, object_id: str, expires: str, signature: str) -> bool:
        """True when the signature is ours for this method and id and has not expired.
        HEAD is allowed on a GET URL, as HTTP clients expect."""
        try:
            exp = int(expires)
        except ValueError:
            return False
        if exp < time.time():
            return False
        methods = ("GET",) if method == "HEAD" else (method,)
        return any(hmac.compare_digest(self._signature(m, object_id, exp), signature) for m in methods)

    # -- MediaStore ---------------------------------------------------------------------------

    def put_url(self, object_id: str, content_type: str | None, base_url: str) -> SignedUrl:
        return SignedUrl(self._signed("PUT", object_id, base_url, int(time.time()) + self.url_timeout), True)

    def get_url_signer(self, base_url: str) -> Callable[[str], str]:
        # Kept per base URL: each Host a client names gets URLs that point back at it.
        return self._get_window.signer(self._get_signing(base_url), base_url)

    def get_url_json(self, base_url: str, around: tuple[bytes, bytes]) -> Callable[[str], orjson.Fragment]:
        return self._get_window.signer(url_json(self._get_signing(base_url), around), (base_url, around))

    def _get_signing(self, base_url: str) -> Callable[[int, int, str], str]:
        def sign(_start: int, expires: int, object_id: str) -> str:
            return self._signed("GET", object_id, base_url, expires)

        return sign

    async def write(
        self,
        object_id: str,
        chunks: AsyncIterator[bytes],
        before_install: Callable[[], Awaitable[None]] | None = None,
        declared: int | None = None,
    ) -> int:
        """Stream an upload to a temporary file, fsync it, then rename it into place, so a
        reader sees the whole Object or nothing (``before_install`` may still refuse it then).
        Returns the byte count. An upload larger than ``max_object_bytes`` is TooLarge; one that
        would leave less than ``min_free_bytes`` free, or a full disk, InsufficientStorage; any
        other failure to write Unavailable. ``declared`` (the Content-Length) lets the first two
        be refused before any byte is read. Whatever the failure, nothing is left half-written."""
        final = self.path_for(object_id)
        tmp = self.tmp / f"{final.name}.{secrets.token_hex(8)}"
        size = 0
        try:
            if declared is not None:
                self._check_size(declared)
            async with self._writing, BackgroundFileWriter(tmp) as f:
                room = await self._room()
                if declared is not None and declared > room:
                    raise _no_room()
                # Up to ``budget`` more bytes before the disk is asked again. Each upload
                # takes a share of the room, so that all writing at once cannot pass the
                # reserve together; shares shrink, and checks come sooner, as the disk fills.
                budget = room // self._uploads_at_once
                async for chunk in chunks:
                    size += len(chunk)
                    self._check_size(size)
                    budget -= len(chunk)
                    if budget < 0:
                        await f.drain()  # so that the disk's free space counts all written so far
                        room = await self._room()
                        if room < len(chunk):
                            raise _no_room()
                        budget = room // self._uploads_at_once - len(chunk)
                    await f.write(chunk)
                await f.close()
            if before_install is not None:
                await before_install()
            await asyncio.to_thread(_install, tmp, final, object_id)
        except BaseException as exc:
            with contextlib.suppress(OSError):  # a read-only or failing disk may refuse this too
                tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise _write_failure(exc) from exc
            raise
        return size

    def _check_size(self, size: int) -> None:
        if size > self.max_object_bytes:
            raise TooLarge(f"a media Object may hold at most {self.max_object_bytes >> 20} MiB here (max_object_mib)")

    async def _room(self) -> int:
        """Bytes an upload may still put on the disk: its free space less ``min_free_bytes``."""
        return await asyncio.to_thread(self._room_now)

    def _room_now(self) -> int:
        return self._room_in(os.statvfs(self.root))

    def _room_in(self, stats: os.statvfs_result) -> int:
        return stats.f_bavail * stats.f_frsize - self.min_free_bytes

    async def delete(self, object_ids: list[str]) -> None:
        def _rm() -> None:
            # A Flow's deletion unlinks two files a segment, so this loop is kept lean: plain
            # strings, and try/except rather than a context manager around each call (86,400
            # Objects: 0.8 s, where the unlink calls alone take 0.4).
            root, unlink = f"{self.root}/", os.unlink
            for oid in object_ids:
                path = root + _relative_path(oid)
                for name in (path, path + ".id"):
                    try:  # noqa: SIM105
                        unlink(name)
                    except FileNotFoundError:
                        pass

        await asyncio.to_thread(_rm)

    async def check(self) -> None:
        """Ready when the media root is a writable directory with room left. (The reasons go to
        ``/readyz``, which anyone may read: they name the backend's state, not its path.)"""
        if not (self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)):
            raise OSError("the media directory is missing or not writable")
        stats = await asyncio.to_thread(os.statvfs, self.root)
        if stats.f_flag & os.ST_RDONLY:
            raise OSError("the media directory is on a read-only file system")
        if self._room_in(stats) < 0:
            raise OSError("the media directory is full")

    async def exists(self, object_id: str) -> bool:
        return self.path_for(object_id).exists()

    async def copy_from(self, object_id: str, source: MediaStore) -> None:
        await source.run_blocking(copy_via_file, source, self, object_id)

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    def download_to(self, object_id: str, path: Path) -> None:
        shutil.copyfile(self.path_for(object_id), path)

    def upload_from(self, object_id: str, path: Path) -> None:
        """Install a local file's bytes as the Object's (a copy from another backend); the disk's
        failures are reported as for an upload, with nothing left half-written."""
        size = path.stat().st_size
        self._check_size(size)
        if size > self._room_now():
            raise _no_room()
        final = self.path_for(object_id)
        tmp = self.tmp / f"{final.name}.{secrets.token_hex(8)}"
        try:
            shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _install(tmp, final, object_id)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _write_failure(exc) from exc

    def stored(self) -> Iterator[StoredItem]:
        """Everything on disk: each Object's bytes (with the id written beside them) and any
        temporary files left by interrupted uploads."""
        for path in self.root.glob("??/??/*"):
            if path.suffix == ".id":
                continue
            sidecar = path.with_suffix(".id")
            object_id = sidecar.read_text(encoding="utf-8", errors="surrogatepass") if sidecar.exists() else None
            yield StoredItem(object_id, path, path.stat().st_mtime)
        for path in self.tmp.glob("*"):
            yield StoredItem(None, path, path.stat().st_mtime)

    def remove_stored(self, item: StoredItem) -> None:
        item.path.unlink(missing_ok=True)
        item.path.with_suffix(".id").unlink(missing_ok=True)


def _relative_path(object_id: str) -> str:
    """Where an Object's bytes live under the media root: by a hash of its id (so any id is a
    safe file name), two levels of 256 directories deep."""
    digest = hashlib.sha256(object_id.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{digest[:2]}/{digest[2:4]}/{digest}"


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def encode_id(object_id: str) -> str:
    """An Object id as one URL path segment that no client will rewrite (no dots, no slashes):
    unpadded base64url (done with binascii directly: it runs for every URL of a page)."""
    raw = object_id.encode("utf-8", "surrogatepass")
    return binascii.b2a_base64(raw, newline=False).rstrip(b"=").translate(_URLSAFE).decode()


def decode_id(segment: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()
    except ValueError:
        return None


def _no_room() -> InsufficientStorage:
    return InsufficientStorage("the media store is full: the upload was not stored")


def _write_failure(exc: OSError) -> Unavailable:
    """What a client is told when the media store cannot take an upload (the path stays out of it)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _no_room()
    reason = os.strerror(exc.errno) if exc.errno else "an I/O error"
    return Unavailable(f"the media store cannot write ({reason}): the upload was not stored")


def _install(tmp: Path, final: Path, object_id: str) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    # The id beside the bytes lets `tamstore admin cleanup` tell whose bytes these are.
    final.with_suffix(".id").write_text(object_id, encoding="utf-8", errors="surrogatepass")
    os.replace(tmp, final)


_: type[MediaStore] = FilesystemMediaStore  # the class satisfies the protocol

"""S3-compatible media backend (AWS S3, Ceph RGW, MinIO, SeaweedFS).

Clients upload and download straight to and from the bucket through presigned URLs; tamstore
never proxies the bytes. boto3 does the few administrative calls, on the backend's own threads
(``ThreadLane``: boto3 blocks), each socket wait within ``timeout`` seconds. The lean SigV4
presigner in ``sigv4.py`` makes the URLs. A key is the prefix plus the base64url form of the
Object id, so no id (``..``, ``/``, odd characters) turns into a path a client rewrites, and
every key can be turned back into its id (for ``tamstore admin cleanup``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tamstore.domain.errors import Unavailable
from tamstore.store.media.base import BackendInfo, GetUrlWindow, MediaStore, SignedUrl, copy_via_file, url_json
from tamstore.store.media.filesystem import decode_id, encode_id
from tamstore.store.media.sigv4 import Presigner
from tamstore.threads import ThreadLane

__all__ = ["S3MediaStore", "StorageUnavailable"]

T = TypeVar("T")

log = logging.getLogger("tamstore.storage")


class StorageUnavailable(Unavailable):
    """The bucket cannot be used (missing, wrong credentials, unreachable): at start-up a
    refusal to serve, on a request a 503 the client may retry."""


@contextlib.contextmanager
def _bucket_calls(bucket: str) -> Iterator[None]:
    """botocore's failures (the endpoint unreachable after its retries, an error answer) as
    ``StorageUnavailable``: an administrative call that fails is the bucket being away."""
    from boto3.exceptions import S3UploadFailedError  # (boto3's transfer manager wraps the cause)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        # The client hears what kind of failure it was; botocore's words name the endpoint's
        # URL and the Object's key, which are the service's business: they go to the log.
        log.warning("bucket %s: %s", bucket, exc)
        kind = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        raise StorageUnavailable(f"bucket {bucket} cannot be used now ({kind or type(exc).__name__})") from None


def _missing(exc: Any) -> bool:
    """Whether botocore's ClientError says the key is not in the bucket."""
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's longest presigned URL


class S3MediaStore:
    def __init__(
        self,
        info: BackendInfo,
        *,
        bucket: str,
        region: str,
        access_key: str,
        secret_key: str,
        endpoint_url: str | None = None,
        session_token: str | None = None,
        prefix: str = "",
        url_timeout: int = 900,
        addressing_style: str | None = None,
        timeout: int = 30,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.info = info
        self.bucket = bucket
        self.prefix = prefix
        self.url_timeout = url_timeout
        self._get_window = GetUrlWindow(url_timeout)
        endpoint = endpoint_url or f"https://s3.{region}.amazonaws.com"
        style = addressing_style or ("path" if endpoint_url else "virtual")
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            # An endpoint that stops answering fails a call after botocore's three attempts of
            # ``timeout`` each (a connection is refused or made in far less than 10 s).
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": style},
                retries={"mode": "standard"},
                connect_timeout=min(timeout, 10),
                read_timeout=timeout,
            ),
        )
        self.calls = ThreadLane("s3", lambda why: StorageUnavailable(f"bucket {bucket}: {why}"), wait=timeout)
        self.presigner = Presigner(
            endpoint, bucket, region, access_key, secret_key, session_token=session_token, addressing_style=style
        )

    def key(self, object_id: str) -> str:
        return self.prefix + encode_id(object_id)

    # -- start-up check -------------------------------------------------------------------------

    async def check(self) -> None:
        """Fail clearly now rather than at the first upload."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            await self.calls.run(self.client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise StorageUnavailable(f"S3 bucket {self.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageUnavailable(f"S3 bucket {self.bucket!r}: access denied (check the credentials)") from None
            raise StorageUnavailable(f"S3 bucket {self.bucket!r}: {code or type(exc).__name__}") from None
        except BotoCoreError as exc:
            # The reasons go to /readyz, which anyone may read: the endpoint's URL goes to the log.
            log.warning("S3 endpoint of bucket %s unreachable: %s", self.bucket, exc)
            raise StorageUnavailable(
                f"S3 endpoint of bucket {self.bucket!r} unreachable ({type(exc).__name__})"
            ) from None

    # -- MediaStore -----------------------------------------------------------------------------

    def put_url(self, object_id: str, content_type: str | None, base_url: str) -> SignedUrl:
        return SignedUrl(self.presigner.presign("PUT", self.key(object_id), self.url_timeout), True)

    def get_url_signer(self, base_url: str) -> Callable[[str], str]:
        return self._get_window.signer(self._presigned_get)

    def get_url_json(self, base_url: str, around: tuple[bytes, bytes]) -> Callable[[str], orjson.Fragment]:
        return self._get_window.signer(url_json(self._presigned_get, around), around)

    def _presigned_get(self, start: int, expires: int, object_id: str) -> str:
        """Signed as at the window's start, valid until the window's URLs expire."""
        expires_in = min(expires - start, MAX_PRESIGN_SECONDS)
        return self.presigner.presign("GET", self.key(object_id), expires_in, now=start)

    async def delete(self, object_ids: list[str]) -> None:
        for i in range(0, len(object_ids), 1000):
            chunk = [{"Key": self.key(oid)} for oid in object_ids[i : i + 1000]]
            with _bucket_calls(self.bucket):
                await self.calls.run(
                    self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                )

    async def exists(self, object_id: str) -> bool:
        return await self.size(object_id) is not None

    async def size(self, object_id: str) -> int | None:
        """The stored size in bytes, or None when the Object is not (yet) in the bucket."""
        from botocore.exceptions import ClientError

        with _bucket_calls(self.bucket):
            try:
                head = await self.calls.run(self.client.head_object, Bucket=self.bucket, Key=self.key(object_id))
            except ClientError as exc:
                if _missing(exc):
                    return None
                raise
        return int(head["ContentLength"])

    async def run_blocking(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await self.calls.run(fn, *args)

    def download_to(self, object_id: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        with _bucket_calls(self.bucket):
            try:
                self.client.download_file(self.bucket, self.key(object_id), str(path))
            except ClientError as exc:
                if _missing(exc):
                    raise FileNotFoundError(f"Object {object_id} is not in the bucket") from None
                raise

    def upload_from(self, object_id: str, path: Path) -> None:
        with _bucket_calls(self.bucket):
            self.client.upload_file(str(path), self.bucket, self.key(object_id))

    async def copy_from(self, object_id: str, source: MediaStore) -> None:
        """Replicate an Object here: server-side within one S3 service, else via a temp file."""
        if isinstance(source, S3MediaStore) and source.client.meta.endpoint_url == self.client.meta.endpoint_url:
            with _bucket_calls(self.bucket):
                await self.calls.run(
                    self.client.copy_object,
                    Bucket=self.bucket,
                    Key=self.key(object_id),
                    CopySource={"Bucket": source.bucket, "Key": source.key(object_id)},
                )
            return
        await self.calls.run(copy_via_file, source, self, object_id)

    def stored_ids(self) -> Iterator[tuple[str | None, str, Any]]:
        """(object id or None, key, last modified) of every key under the prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                yield decode_id(key[len(self.prefix) :]), key, item["LastModified"]

    def remove_key(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


_: type[MediaStore] = S3MediaStore

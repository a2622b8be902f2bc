"""Which Storage Backends this service has, from settings (ADR 0032, 0055).

Three ways, first match wins:

* ``storage_config``: a TOML file of ``[[backends]]``, each ``kind = "s3"`` or ``"filesystem"``,
  with ``id`` (UUID), ``label``, ``provider``, ``store_product``, ``region``,
  ``availability_zone``, ``tags`` and ``default``; S3 ones add ``bucket``, ``endpoint_url``,
  ``prefix``, ``access_key_id``/``secret_access_key`` (else the ``AWS_*`` environment).
* ``s3_bucket`` (``TAMSTORE_S3_BUCKET``, with ``TAMSTORE_S3_ENDPOINT_URL`` and the standard
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``): one S3 bucket, the default.
* otherwise the embedded filesystem backend under the data dir.
"""

from __future__ import annotations

import os
import tomllib
import uuid
from pathlib import Path
from typing import Any

from tamstore.config import Settings
from tamstore.keys import load_or_create_key
from tamstore.store.media.base import BackendInfo, MediaStore
from tamstore.store.media.filesystem import FILESYSTEM_BACKEND_ID, FilesystemMediaStore
from tamstore.store.media.s3 import S3MediaStore

__all__ = ["open_backends"]

UUID_RE_TEXT = "lower-case UUID of versions 1-5"


def open_backends(settings: Settings) -> dict[str, MediaStore]:
    if settings.storage_config is not None:
        backends = [_from_table(settings, t) for t in _read(settings.storage_config)]
    elif settings.s3_bucket:
        backends = [_env_s3(settings)]
    else:
        backends = [_filesystem(settings, None)]
    defaults = [b for b in backends if b.info.default_storage]
    if len(defaults) > 1:
        raise ValueError("storage_config: at most one backend may have default = true")
    ids = [b.info.id for b in backends]
    if len(set(ids)) != len(ids):
        raise ValueError("storage_config: backend ids must be unique")
    labels = [b.info.label for b in backends]
    if len(set(labels)) != len(labels):
        raise ValueError("storage_config: backend labels must be unique")
    return {b.info.id: b for b in backends}


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"storage_config {path}: {exc}") from None
    tables = data.get("backends")
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"storage_config {path}: no [[backends]] listed")
    return tables


def _info(table: dict[str, Any], **defaults: Any) -> BackendInfo:
    from tamstore.domain.flows import UUID_RE

    backend_id = str(table.get("id", defaults.get("id", "")))
    if not UUID_RE.match(backend_id):
        raise ValueError(f"storage backend id {backend_id!r} must be a {UUID_RE_TEXT}")
    return BackendInfo(
        id=backend_id,
        label=str(table.get("label", defaults["label"])),
        provider=str(table.get("provider", defaults["provider"])),
        store_product=str(table.get("store_product", defaults["store_product"])),
        default_storage=bool(table.get("default", defaults.get("default", False))),
        region=table.get("region", defaults.get("region")),
        availability_zone=table.get("availability_zone"),
        tags=dict(table.get("tags", {})),
    )


def _filesystem(settings: Settings, table: dict[str, Any] | None) -> FilesystemMediaStore:
    table = table or {}
    info = _info(
        table,
        id=FILESYSTEM_BACKEND_ID,
        label="tamstore:filesystem:local",
        provider="tamstore",
        store_product="tamstore-filesystem",
        default=not table,  # the embedded backend is the default; configured ones say so
    )
    root = Path(table.get("path", settings.data_dir / "media"))
    key = load_or_create_key(settings.data_dir, "media-signing.key")
    return FilesystemMediaStore(
        root,
        key,
        url_timeout=settings.presigned_url_timeout,
        info=info,
        max_object_bytes=settings.max_object_mib << 20,
        min_free_bytes=settings.min_free_mib << 20,
    )


def _s3(settings: Settings, table: dict[str, Any], info: BackendInfo) -> S3MediaStore:
    access_key = table.get("access_key_id") or os.environ.get("AWS_ACCESS_KEY_ID")
    secret_key = table.get("secret_access_key") or os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not access_key or not secret_key:
        raise ValueError(
            f"storage backend {info.label!r}: no S3 credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        )
    return S3MediaStore(
        info,
        bucket=table["bucket"],
        region=info.region or "us-east-1",
        access_key=access_key,
        secret_key=secret_key,
        session_token=table.get("session_token") or os.environ.get("AWS_SESSION_TOKEN"),
        endpoint_url=table.get("endpoint_url"),
        prefix=str(table.get("prefix", "")),
        url_timeout=settings.presigned_url_timeout,
        addressing_style=table.get("addressing_style"),
        timeout=settings.s3_timeout,
    )


def _s3_defaults(table: dict[str, Any]) -> dict[str, Any]:
    region = table.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    aws = not table.get("endpoint_url")
    seed = f"tamstore:s3:{table.get('endpoint_url', 'aws')}:{table['bucket']}:{table.get('prefix', '')}"
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, seed)),
        "label": f"{'aws' if aws else 's3'}.{region}:s3:{table['bucket']}",
        "provider": "AWS" if aws else "S3-compatible",
        "store_product": "S3" if aws else "S3-compatible",
        "region": region,
    }


def _from_table(settings: Settings, table: dict[str, Any]) -> MediaStore:
    kind = table.get("kind")
    if kind == "filesystem":
        return _filesystem(settings, table)
    if kind == "s3":
        if "bucket" not in table:
            raise ValueError("storage backend of kind s3 needs a bucket")
        return _s3(settings, table, _info(table, **_s3_defaults(table)))
    raise ValueError(f"storage backend kind must be 's3' or 'filesystem', not {kind!r}")


def _env_s3(settings: Settings) -> S3MediaStore:
    table = {"bucket": settings.s3_bucket, "prefix": settings.s3_prefix}
    if settings.s3_endpoint_url:
        table["endpoint_url"] = settings.s3_endpoint_url
    info = _info(table, **_s3_defaults(table), default=True)
    return _s3(settings, table, info)

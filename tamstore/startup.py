"""Opening what a running tamstore uses: the stores its settings name, and its auth
configuration. Apart from the app (``tamstore.app``), so that processes without an HTTP server
(``tamstore worker``, the worker process beside ``serve``, admin commands) open the same stores
without importing the web app (a worker process's memory 121 -> 100 MB)."""

from __future__ import annotations

from tamstore.auth import AuthConfig, FailureLimiter
from tamstore.config import Settings
from tamstore.keys import load_or_create_key
from tamstore.ops.context import Context
from tamstore.store.media.backends import open_backends
from tamstore.store.media.filesystem import FilesystemMediaStore
from tamstore.store.media.s3 import S3MediaStore
from tamstore.store.metadata.sql import open_metadata_store
from tamstore.store.migrate import upgrade

__all__ = ["load_auth", "migrate_database", "open_context"]


async def open_context(settings: Settings, *, migrate: bool = True) -> Context:
    """Open every store the settings name (checking each S3 bucket). The caller closes
    ``ctx.store``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    backends = open_backends(settings)
    for backend in backends.values():
        if isinstance(backend, S3MediaStore):
            await backend.check()
    if migrate and settings.migrate:
        await migrate_database(settings)
    store = open_metadata_store(
        settings.sqlalchemy_url(),
        pool_size=settings.db_pool_size,
        busy_timeout=settings.db_busy_timeout,
        statement_timeout=settings.db_statement_timeout or None,
        scan_rows=settings.listing_scan_rows,
    )
    store.record_all_events = settings.event_stream
    filesystem = next((b for b in backends.values() if isinstance(b, FilesystemMediaStore)), None)
    ctx = Context(settings=settings, store=store, backends=backends, filesystem=filesystem)
    if settings.auth.strip() not in ("", "none"):  # workers too decide what webhook owners may hear
        auth = load_auth(settings)
        ctx.policy, ctx.principal_groups = auth.policy, auth.groups
    return ctx


async def migrate_database(settings: Settings) -> None:
    """Bring the schema up to date, on connections of its own: free of the statement timeout
    that the serving store has, since a migration may rewrite a whole table."""
    store = open_metadata_store(settings.sqlalchemy_url())
    try:
        await upgrade(store.engine)
    finally:
        await store.close()


def load_auth(settings: Settings) -> AuthConfig:
    """The auth configuration; the token signing key lives in the data dir (made once, 0600)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = load_or_create_key(settings.data_dir, "token-signing.key")
    public_key = settings.jwt_public_key_file.read_text() if settings.jwt_public_key_file else None
    return AuthConfig.load(
        settings.auth,
        settings.auth_file,
        key,
        token_lifetime=settings.token_lifetime,
        failures=FailureLimiter(settings.auth_failures_per_minute, 60.0),
        jwks_url=settings.jwt_jwks_url,
        public_key=public_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )

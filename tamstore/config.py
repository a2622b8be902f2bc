"""Settings: one table that feeds the CLI flags, the ``TAMSTORE_*`` environment and the docs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

__all__ = ["SETTINGS", "Settings", "setting_kinds"]


@dataclass(frozen=True)
class Settings:
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on."})
    port: int = field(default=8000, metadata={"help": "TCP port to listen on."})
    data_dir: Path = field(
        default=Path("./tamstore-data"),
        metadata={"help": "Directory for the SQLite database and media files."},
    )
    database_url: str | None = field(
        default=None,
        metadata={"help": "Metadata database URL (postgresql://user@host:port/db). Default: SQLite in the data dir."},
    )
    min_object_timeout: int = field(
        default=3600,
        metadata={"help": "Seconds an allocated Object waits for registration before GC (>= 300)."},
    )
    presigned_url_timeout: int = field(
        default=900,
        metadata={"help": "Seconds signed media URLs stay valid (>= 30, <= min_object_timeout)."},
    )
    default_page_limit: int = field(default=100, metadata={"help": "Page size when no limit given."})
    max_page_limit: int = field(default=1000, metadata={"help": "Largest page size served."})
    page_cache_mib: int = field(
        default=32,
        metadata={
            "help": "MiB of rendered segment pages each process keeps and reuses until the Flow changes (0: none)."
        },
    )
    max_storage_limit: int = field(default=1000, metadata={"help": "Most Objects allocated by one /storage request."})
    max_body_kib: int = field(
        default=8192,
        metadata={"help": "Largest API request body, in KiB (413 beyond it). Media uploads are not API bodies."},
    )
    max_object_mib: int = field(
        default=5120,
        metadata={
            "help": "Largest media Object uploaded to an embedded (filesystem) backend, in MiB (413 beyond it). "
            "5 GiB, as one PUT to S3."
        },
    )
    min_free_mib: int = field(
        default=64,
        metadata={
            "help": "MiB an embedded media backend leaves free on its disk for the database and the system: "
            "an upload that would use them is a 507, and /readyz is 503 below them."
        },
    )
    max_json_items: int = field(
        default=10_000,
        metadata={"help": "Most members of one JSON object or array in a request, so most segments in one POST."},
    )
    max_header_kib: int = field(
        default=64, metadata={"help": "Largest request line and headers of one request, in KiB (431 beyond it)."}
    )
    header_timeout: int = field(
        default=10, metadata={"help": "Seconds a client has to send a request's headers before it is disconnected."}
    )
    body_timeout: int = field(
        default=30, metadata={"help": "Seconds a request body may pause between chunks before a 408."}
    )
    keep_alive_timeout: int = field(
        default=5, metadata={"help": "Seconds an idle connection stays open between requests."}
    )
    max_connections: int = field(
        default=4096, metadata={"help": "Open connections per server process; more are closed at once."}
    )
    cors_origins: str = field(
        default="",
        metadata={
            "help": "Comma list of web origins whose pages may call the API from a browser (CORS); "
            "empty: none, * for any."
        },
    )
    inline_delete_limit: int = field(
        default=1000,
        metadata={"help": "Deletions of up to this many segments finish inline (204)."},
    )
    recovery_window: int = field(
        default=0,
        metadata={
            "help": "Seconds deleted Flows and segments stay restorable (tamstore admin restore); 0 deletes at once."
        },
    )
    delete_request_retention: int = field(
        default=86400, metadata={"help": "Seconds a finished flow-delete-request stays listed."}
    )
    processes: int = field(
        default=1,
        metadata={"help": "HTTP server processes sharing the port, one per core to use (uvicorn workers)."},
    )
    workers: bool = field(
        default=True,
        metadata={"help": "Run the background workers (deletion, retention, GC, webhooks) for this server."},
    )
    worker_process: bool = field(
        default=True,
        metadata={
            "help": "serve: run the background workers (deletion, retention, GC, webhooks, checkpoints) in a "
            "worker process of their own, so they never hold up requests (off: in the server process)."
        },
    )
    worker_lease: int = field(
        default=30, metadata={"help": "Seconds a worker holds a job before another may take it over."}
    )
    retention_interval: int = field(
        default=60,
        metadata={
            "help": "Seconds between retention passes (segment_retention_offset and flow_retention_offset tags); "
            "0 turns retention off."
        },
    )
    public_url: str | None = field(
        default=None,
        metadata={
            "help": "The URL clients reach this service at, for media URLs made outside a request "
            "(webhook messages). Default: http://HOST:PORT."
        },
    )
    webhook_timeout: int = field(
        default=10, metadata={"help": "Seconds a webhook delivery may take, to the receiver's status line."}
    )
    webhook_max_attempts: int = field(
        default=8, metadata={"help": "Failed deliveries in a row before a webhook goes to 'error'."}
    )
    webhook_backoff_ms: int = field(
        default=1000, metadata={"help": "First retry delay (ms) after a failed delivery; doubles each time."}
    )
    webhook_backoff_max: int = field(default=300, metadata={"help": "Longest retry delay, in seconds."})
    webhook_concurrency: int = field(default=16, metadata={"help": "Webhooks one worker delivers to at the same time."})
    max_webhooks: int = field(
        default=1000,
        metadata={"help": "Webhooks one principal may register (all of them, with authentication off)."},
    )
    webhook_targets: str = field(
        default="auto",
        metadata={
            "help": "Addresses webhooks may be delivered to: public, local (public and loopback), private "
            "(public, loopback and private networks); auto: local when listening on loopback, else public."
        },
    )
    webhook_allow_networks: str = field(
        default="",
        metadata={"help": "Comma list of networks (CIDR) webhooks may reach whatever their range."},
    )
    webhook_event_retention: int = field(
        default=86400,
        metadata={"help": "Seconds events are kept: for webhooks in error, and for event stream clients to resume."},
    )
    event_stream: bool = field(
        default=True,
        metadata={"help": "Offer the event stream (/x-tamstore/events): every change records its event."},
    )
    event_stream_heartbeat: int = field(
        default=15, metadata={"help": "Seconds between event stream heartbeats (so proxies keep the connection)."}
    )
    event_stream_max_clients: int = field(
        default=1000, metadata={"help": "Event stream connections one process serves at most (then 503)."}
    )
    event_stream_buffer_kib: int = field(
        default=4096,
        metadata={"help": "Events held for one stream client that reads slowly (KiB) before it is cut off."},
    )
    storage_config: Path | None = field(
        default=None,
        metadata={"help": "TOML file of [[backends]] (s3, filesystem): several Storage Backends at once."},
    )
    s3_bucket: str | None = field(
        default=None,
        metadata={"help": "Use this S3 bucket as the only (default) backend; credentials from AWS_* variables."},
    )
    s3_endpoint_url: str | None = field(
        default=None, metadata={"help": "Endpoint of an S3-compatible service (omit for AWS S3)."}
    )
    s3_prefix: str = field(default="", metadata={"help": "Key prefix for Objects in the S3 bucket."})
    s3_timeout: int = field(
        default=30,
        metadata={
            "help": "S3: seconds a call to a bucket waits for an answer before it tries again (three tries); "
            "then its request gets a 503."
        },
    )
    auth: str = field(
        default="none",
        metadata={"help": "Authentication: none, or a comma list of basic and bearer (JWT, access_token)."},
    )
    auth_file: Path | None = field(
        default=None,
        metadata={"help": "TOML file of [[users]] (Basic) and [[clients]] (token endpoint), secrets hashed."},
    )
    jwt_jwks_url: str | None = field(
        default=None, metadata={"help": "JWKS URL of an identity provider whose Bearer tokens to accept."}
    )
    jwt_public_key_file: Path | None = field(
        default=None, metadata={"help": "PEM public key of an identity provider (instead of a JWKS URL)."}
    )
    jwt_issuer: str | None = field(default=None, metadata={"help": "Required 'iss' of external tokens."})
    jwt_audience: str | None = field(default=None, metadata={"help": "Required 'aud' of external tokens."})
    auth_failures_per_minute: int = field(
        default=10,
        metadata={"help": "Failed password checks one client address may make a minute before 429s."},
    )
    token_lifetime: int = field(default=3600, metadata={"help": "Seconds a token from the token endpoint lasts."})
    allow_unauthenticated_network_access: bool = field(
        default=False,
        metadata={
            "help": "Let serve listen on a non-loopback address with auth none: anyone who can reach "
            "it can read, change and delete everything."
        },
    )
    log_format: str = field(
        default="auto", metadata={"help": "Request logs: json, text, or auto (text on a terminal, else json)."}
    )
    migrate: bool = field(
        default=True,
        metadata={"help": "Apply database migrations on start (--no-migrate: run `tamstore db upgrade`)."},
    )
    db_pool_size: int = field(
        default=10,
        metadata={"help": "PostgreSQL connections per process for reads; writes get half as many (+50% in bursts)."},
    )
    db_busy_timeout: int = field(
        default=30,
        metadata={"help": "Seconds a write waits for the database (locked by another process) before a 503."},
    )
    db_statement_timeout: int = field(
        default=60,
        metadata={
            "help": "PostgreSQL: seconds one statement may take before its request gets a 503 "
            "(a database that hangs without closing its connections); 0 for none."
        },
    )
    listing_scan_rows: int = field(
        default=10_000,
        metadata={
            "help": "SQLite: rows a filtered listing's page looks at, at most (4-5 ms at 10,000); "
            "where they run out, the page ends short, with a next link. Lookups (source_id, label, "
            "a rare tag value) always run whole."
        },
    )
    service_name: str = field(default="tamstore", metadata={"help": "Default service name."})

    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+asyncpg://" + url[len(prefix) :]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tamstore.db').resolve()}"

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def check(self) -> None:
        """Raise ValueError naming the setting when a value cannot work."""
        if self.min_object_timeout < 300:
            raise ValueError("min_object_timeout must be at least 300 seconds (TAMS spec)")
        if not 30 <= self.presigned_url_timeout <= self.min_object_timeout:
            raise ValueError(
                "presigned_url_timeout must be at least 30 seconds and at most min_object_timeout (TAMS spec)"
            )
        if not 0 < self.port < 65536:
            raise ValueError("port must be between 1 and 65535")
        if self.auth.strip() not in ("", "none"):
            methods = {m.strip() for m in self.auth.split(",")}
            if not methods <= {"basic", "bearer"}:
                raise ValueError("auth must be none, or a comma list of basic and bearer")
        if self.log_format not in ("auto", "json", "text"):
            raise ValueError("log_format must be auto, json or text")
        if self.recovery_window < 0:
            raise ValueError("recovery_window must not be negative")
        if self.retention_interval < 0:
            raise ValueError("retention_interval must not be negative")
        from tamstore.domain.targets import TargetPolicy

        TargetPolicy.from_settings(self.webhook_targets, self.webhook_allow_networks, self.host)
        if self.page_cache_mib < 0:
            raise ValueError("page_cache_mib must not be negative")
        if self.min_free_mib < 0:
            raise ValueError("min_free_mib must not be negative")
        for name in (
            "default_page_limit",
            "max_page_limit",
            "max_storage_limit",
            "max_body_kib",
            "max_object_mib",
            "max_json_items",
            "db_pool_size",
            "processes",
            "worker_lease",
            "webhook_timeout",
            "webhook_max_attempts",
            "webhook_concurrency",
            "max_webhooks",
            "auth_failures_per_minute",
            "db_busy_timeout",
            "s3_timeout",
            "header_timeout",
            "max_header_kib",
            "body_timeout",
            "keep_alive_timeout",
            "max_connections",
            "event_stream_heartbeat",
            "event_stream_max_clients",
            "event_stream_buffer_kib",
            "listing_scan_rows",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.db_statement_timeout < 0:
            raise ValueError("db_statement_timeout must be 0 (none) or positive")

    def to_json(self) -> str:
        """The settings as JSON, for another process (``serve --processes``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})

    @classmethod
    def from_json(cls, text: str) -> Settings:
        values = json.loads(text)
        kinds = setting_kinds()
        for name, value in values.items():
            if kinds[name] is Path and value is not None:
                values[name] = Path(value)
        return cls(**values)


def setting_kinds() -> dict[str, type]:
    """Each setting's value type (``int``, ``bool``, ``str`` or ``Path``), from its annotation:
    ``X | None`` is ``X``. Any other annotation is an error here, not a setting silently read as
    a string."""
    kinds: dict[str, type] = {}
    for name, hint in get_type_hints(Settings).items():
        args = [a for a in get_args(hint) if a is not type(None)] if get_origin(hint) is UnionType else [hint]
        if len(args) != 1 or args[0] not in (int, bool, str, Path):
            raise TypeError(f"setting {name} has type {hint}; settings are int, bool, str or Path (or None)")
        kinds[name] = args[0]
    return kinds


SETTINGS: list[dict[str, Any]] = [
    {"name": f.name, "default": f.default, "help": f.metadata.get("help", "")} for f in fields(Settings)
]

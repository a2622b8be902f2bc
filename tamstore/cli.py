"""The ``tamstore`` command. Each subcommand parses options and calls into the app or ops."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import click

from tamstore import __version__
from tamstore.config import Settings, setting_kinds
from tamstore.media.commands import export_command, ingest_command, sync_command
from tamstore.store.media.s3 import StorageUnavailable

ENV_PREFIX = "TAMSTORE_"


def _settings_options(fn: Any) -> Any:
    """One click option per setting, each also read from ``TAMSTORE_<NAME>``."""
    kinds = setting_kinds()
    for f in reversed(fields(Settings)):
        default = f.default
        flag = f"--{f.name.replace('_', '-')}"
        kind = kinds[f.name]
        if kind is bool:
            flag = f"{flag}/--no-{f.name.replace('_', '-')}"
        typ: Any = click.Path(path_type=Path) if kind is Path else kind
        option = click.option(
            flag,
            f.name,
            type=typ,
            default=default,
            show_default=default is not None,
            envvar=ENV_PREFIX + f.name.upper(),
            show_envvar=True,
            help=f.metadata.get("help", ""),
        )
        fn = option(fn)
    return fn


def _fail(message: str) -> None:
    click.echo(f"tamstore: error: {message}", err=True)
    sys.exit(2)


def _build_settings(values: dict[str, Any]) -> Settings:
    settings = Settings(**values)
    try:
        settings.check()
    except ValueError as exc:
        _fail(str(exc))
    return settings


def _check_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot create data dir {path}: {exc.strerror}")
    if not os.access(path, os.W_OK | os.X_OK):
        _fail(f"data dir {path} is not writable")


async def _check_storage(settings: Settings) -> None:
    """Open the storage backends once before serving: a missing bucket or wrong credentials is
    a clear error at start-up, not a 500 at the first upload."""
    from tamstore.store.media.backends import open_backends
    from tamstore.store.media.s3 import S3MediaStore

    for backend in open_backends(settings).values():
        if isinstance(backend, S3MediaStore):
            await backend.check()


def _check_exposure(settings: Settings) -> None:
    """Without authentication, only this machine may connect, unless the operator insists."""
    if settings.auth.strip() not in ("", "none") or settings.allow_unauthenticated_network_access:
        return
    try:
        loopback = ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = settings.host == "localhost"
    if not loopback:
        _fail(
            f"refusing to listen on {settings.host} with --auth none: anyone on the network could read, "
            "change and delete all media. Set --auth (see README) or pass "
            "--allow-unauthenticated-network-access"
        )


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                _fail(f"port {port} on {host} is already in use")
            _fail(f"cannot listen on {host}:{port}: {exc.strerror}")


def _load_config_file(ctx: click.Context, _param: Any, path: Path | None) -> Path | None:
    """Settings from a TOML file become the defaults of every command (flags and TAMSTORE_*
    variables still win)."""
    if path is None:
        return None
    import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        _fail(f"config file {path}: {exc}")
    known = {f.name for f in fields(Settings)}
    for key in data:
        if key.replace("-", "_") not in known:
            _fail(f"config file {path}: unknown setting {key!r}")
    values = {k.replace("-", "_"): v for k, v in data.items()}
    groups = {"db": ["upgrade"], "admin": ["deleted", "restore", "cleanup", "check", "stats"], "config": ["show"]}
    ctx.default_map = {
        "serve": values,
        "worker": values,
        **{group: {cmd: values for cmd in cmds} for group, cmds in groups.items()},
    }
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tamstore")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="TAMSTORE_CONFIG",
    show_envvar=True,
    callback=_load_config_file,
    is_eager=True,
    expose_value=False,
    help="TOML file of settings (names as in `tamstore serve --help`, with _ for -).",
)
def main() -> None:
    """tamstore: a Time-addressable Media Store (TAMS 8.2) server.

    Run `tamstore serve` to start a server on this machine with nothing else installed:
    metadata in SQLite and media files in the data dir.
    """


@main.command()
@_settings_options
def serve(**values: Any) -> None:
    """Start the TAMS HTTP server.

    Every option can also be set with the environment variable shown beside it.
    The database schema is migrated on start.
    """
    settings = _build_settings(values)
    _check_exposure(settings)
    _check_data_dir(settings.data_dir)
    _check_port(settings.host, settings.port)
    from tamstore.startup import load_auth

    try:
        load_auth(settings)
        asyncio.run(_check_storage(settings))
    except (ValueError, OSError, StorageUnavailable) as exc:
        _fail(str(exc))

    from tamstore.api.observability import configure_logging

    configure_logging(settings.log_format)
    click.echo(f"tamstore {__version__}: serving TAMS 8.2 on http://{settings.host}:{settings.port}/")
    click.echo(f"data dir: {settings.data_dir.resolve()}  (API docs at /docs)")
    from tamstore.api.connections import GuardedHttpProtocol, configure

    _raise_open_file_limit()
    configure(settings)
    server: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "proxy_headers": True,
        "http": GuardedHttpProtocol,
        "timeout_keep_alive": settings.keep_alive_timeout,
    }
    background = None
    if settings.workers and settings.worker_process:
        # The background work (deletions, retention, GC, checkpoints, webhook delivery) in a
        # process of its own, started once the database is migrated.
        from tamstore.worker_process import WorkerProcess

        if settings.migrate:
            _upgrade(settings)
        background = WorkerProcess(settings)
        background.start()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler it
    # found: the default one would end this process there, before the worker process is told to
    # stop (it would find its server gone a second later, in the middle of its work).
    signal.signal(signal.SIGTERM, _terminated)
    terminated = False
    try:
        _run_servers(settings, server, work_elsewhere=background is not None)
    except _Terminated:
        terminated = True
    finally:
        if background is not None:
            background.stop()
    if terminated:  # end as a SIGTERM ends a process
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


class _Terminated(Exception):
    """SIGTERM, raised where the process was (see ``serve``)."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated


def _run_servers(settings: Settings, server: dict[str, Any], *, work_elsewhere: bool) -> None:
    import uvicorn

    from tamstore.app import PROCESS_SETTINGS_ENV, create_app

    if settings.processes == 1:
        app_settings = replace(settings, migrate=False) if work_elsewhere else settings  # (migrated)
        uvicorn.run(create_app(app_settings, workers=not work_elsewhere), **server)
        return
    # Several processes on one port: migrate once here, before they start, and hand them the
    # settings; each runs the app (and, without a worker process, the background workers,
    # which share their work by leases).
    if settings.migrate and not work_elsewhere:  # (else migrated already)
        _upgrade(settings)
    os.environ[PROCESS_SETTINGS_ENV] = settings.to_json()
    click.echo(f"{settings.processes} server processes")
    uvicorn.run("tamstore.app:app_from_environment", factory=True, workers=settings.processes, **server)


def _raise_open_file_limit() -> None:
    """As many file descriptors as the system lets this process have: connections, the database
    and media files all need them (max_connections bounds the connections' share)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@main.group()
def db() -> None:
    """Manage the metadata database."""


@db.command("upgrade")
@_settings_options
def db_upgrade(**values: Any) -> None:
    """Apply schema migrations now (serve also does this on start)."""
    settings = _build_settings(values)
    _check_data_dir(settings.data_dir)
    _upgrade(settings)
    click.echo("database schema is up to date")


def _upgrade(settings: Settings) -> None:
    from tamstore.startup import migrate_database

    try:
        asyncio.run(migrate_database(settings))
    except OSError as exc:
        _fail(f"cannot reach the database: {exc}")


def _with_context(settings: Settings, job: Any) -> Any:
    """Run ``job(ctx)`` against the stores the settings name (migrating them first)."""
    from tamstore.startup import open_context

    async def run() -> Any:
        ctx = await open_context(settings)
        try:
            return await job(ctx)
        finally:
            await ctx.store.close()

    try:
        return asyncio.run(run())
    except OSError as exc:
        _fail(f"cannot reach the database: {exc}")


@main.command()
@_settings_options
def worker(**values: Any) -> None:
    """Run the background workers alone (deletions, garbage collection, webhooks).

    For the scale-out configuration: API replicas run `serve --no-workers`, and one or more
    `tamstore worker` processes share the work through the database.
    """
    settings = _build_settings(values)
    from tamstore.worker_process import until_stopped
    from tamstore.workers import run_background

    click.echo(f"tamstore {__version__}: background worker started")
    with contextlib.suppress(KeyboardInterrupt):  # (before the signal handlers are in place)
        _with_context(settings, lambda ctx: run_background(ctx, until_stopped()))


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@_settings_options
def config_show(**values: Any) -> None:
    """Print the effective settings (flags, TAMSTORE_* variables, config file), secrets masked."""
    settings = _build_settings(values)
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name == "database_url" and value:
            value = _mask_url(value)
        click.echo(f"{f.name} = {value!r}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        click.echo(f"# {name} is {'set' if os.environ.get(name) else 'not set'}")
    if settings.auth_file is not None:
        from tamstore.startup import load_auth

        try:
            policy = load_auth(settings).policy.describe()
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"# auth_classes policy (from {settings.auth_file}): {json.dumps(policy)}")


def _mask_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@main.group()
def auth() -> None:
    """Helpers for the auth file."""


@auth.command("hash-secret")
def auth_hash_secret() -> None:
    """Read a password or client secret (prompted, or one line of stdin) and print the hash to
    put in the auth file. The secret itself is never stored or printed."""
    from tamstore.auth import hash_secret

    if sys.stdin.isatty():
        secret = click.prompt("secret", hide_input=True, confirmation_prompt=True)
    else:
        secret = sys.stdin.readline().rstrip("\n")
    if not secret:
        _fail("an empty secret is not allowed")
    click.echo(hash_secret(secret))


@main.group()
def admin() -> None:
    """Operator maintenance: the recovery window, orphaned media."""


@admin.command("deleted")
@_settings_options
def admin_deleted(**values: Any) -> None:
    """List deletions still inside the recovery window (newest first)."""
    settings = _build_settings(values)
    from tamstore.ops import deletion

    rows = _with_context(settings, deletion.list_deleted)
    if not rows:
        click.echo("nothing in the recovery window")
    for r in rows:
        click.echo(
            f"{r['id']}  {r['what']:8}  flow {r['flow_id']}  {r['timerange']}  "
            f"{r['segments']} segments  deleted {r['deleted']}  purged after {r['purged_after']}"
        )


@admin.command("restore")
@click.argument("deletion_id")
@_settings_options
def admin_restore(deletion_id: str, **values: Any) -> None:
    """Put back what deletion DELETION_ID removed (see `tamstore admin deleted`)."""
    settings = _build_settings(values)
    from tamstore.domain.errors import TamsError
    from tamstore.ops import deletion

    try:
        result = _with_context(settings, lambda ctx: deletion.restore(ctx, deletion_id))
    except TamsError as exc:
        _fail(exc.summary)
    what = "Flow and " if result["flow"] else ""
    click.echo(f"restored {what}{result['segments']} segments of Flow {result['flow_id']}")


@admin.command("cleanup")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("--yes", is_flag=True, help="Delete without asking (needed when not on a terminal).")
@click.option(
    "--min-age",
    type=int,
    default=None,
    help="Leave stored bytes younger than this many seconds (default: min_object_timeout plus a "
    "minute, so uploads in flight are safe). 0 only when no client is uploading.",
)
@_settings_options
def admin_cleanup(dry_run: bool, yes: bool, min_age: int | None, **values: Any) -> None:
    """Delete media nothing refers to: bytes with no Object record, leftovers of interrupted
    uploads, and Objects allocated but never registered past min_object_timeout."""
    settings = _build_settings(values)
    from tamstore.ops import cleanup

    found = _with_context(settings, lambda ctx: cleanup.find_orphans(ctx, min_age))
    lines = found.lines()
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("nothing to clean up")
        return
    if dry_run:
        click.echo(f"dry run: {len(lines)} items would be deleted")
        return
    if not yes:
        if not sys.stdin.isatty():
            _fail("refusing to delete without confirmation: not on a terminal (use --yes)")
        if not click.confirm(f"delete these {len(lines)} items?"):
            click.echo("nothing deleted")
            return
    removed = _with_context(settings, lambda ctx: cleanup.remove_orphans(ctx, found))
    click.echo(f"deleted {removed} items")


@admin.command("check")
@_settings_options
def admin_check(**values: Any) -> None:
    """Check metadata against stored media (every registered Object's bytes are there, no bytes
    without an Object) and the usage counters against a recount. Exits 1 when anything is off."""
    settings = _build_settings(values)
    from tamstore.ops import check

    report = _with_context(settings, check.check)
    for line in report.lines():
        click.echo(line)
    if report.ok:
        click.echo("consistent: metadata, stored media and counters agree")
        return
    click.echo(f"{len(report.lines())} problems found", err=True)
    sys.exit(1)


@admin.command("stats")
@_settings_options
def admin_stats(**values: Any) -> None:
    """Print what the store holds: Sources, Flows, segments, hours of media, storage per backend,
    webhooks, pending deletions (as JSON)."""
    settings = _build_settings(values)

    from tamstore.ops import check

    click.echo(json.dumps(_with_context(settings, check.stats), indent=2))


main.add_command(ingest_command)
main.add_command(export_command)
main.add_command(sync_command)


if __name__ == "__main__":  # pragma: no cover
    main()

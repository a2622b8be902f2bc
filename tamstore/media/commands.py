"""``tamstore ingest`` and ``tamstore export``: media into and out of any TAMS 8.2 server.

Both take the same connection options, each also read from the environment (``TAMSTORE_SERVER``,
``TAMSTORE_USERNAME`` ...): a server URL and at most one kind of credentials.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

__all__ = ["export_command", "ingest_command", "sync_command"]


def client_options(fn: Any) -> Any:
    """The options every client command takes: where the server is and who is asking."""
    specs = [
        ("--server", "TAMS API base URL (required)."),
        ("--username", "HTTP Basic user name."),
        ("--password", "HTTP Basic password."),
        ("--token", "A Bearer token."),
        ("--oauth2-url", "OAuth2 token endpoint, for client credentials."),
        ("--client-id", "OAuth2 client id."),
        ("--client-secret", "OAuth2 client secret."),
    ]
    options = [
        click.option(
            flag,
            envvar="TAMSTORE_" + flag[2:].replace("-", "_").upper(),
            show_envvar=True,
            required=flag == "--server",
            help=text,
        )
        for flag, text in specs
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# A live input does not wait: its ingest waits out a server that is away (restarting, failing
# over) for about ten minutes (backoff 0.5 s doubling to 30 s), reading on meanwhile.
LIVE_RETRIES = 25


def _client(values: dict[str, Any], prefix: str = "", retries: int = 4) -> Any:
    from tamstore.client import AsyncTamsClient, AuthOptions, auth_from

    names = ("username", "password", "token", "oauth2_url", "client_id", "client_secret")
    auth = auth_from(AuthOptions(**{n: values.pop(prefix + n) for n in names}))
    return AsyncTamsClient(values.pop(prefix + "server"), auth=auth, retries=retries)


def _timerange(text: str | None) -> Any:
    """``--timerange``: a TAMS timerange, whose bounds may also be UTC date-times with their zone
    (``[2026-12-07T10:00:00Z_2026-12-07T10:30:00Z)``), taken to the TAI of a wall-clock
    recording (``ingest --start now``), as the Web UI shows such a timeline."""
    import re

    from tamstore.domain.tai import iso_to_tai
    from tamstore.domain.timerange import InvalidTimeRange, TimeRange, format_timestamp

    if text is None:
        return None
    try:
        return TimeRange.from_str(
            re.sub(
                r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:?\d{2})?",
                lambda m: format_timestamp(iso_to_tai(m.group(0))),
                text,
            )
        )
    except (InvalidTimeRange, ValueError) as exc:
        _fail(f"--timerange: {exc}")


def side_options(side: str) -> Callable[[Any], Any]:
    """``client_options`` for one side of a copy: ``--from``/``--to`` and ``--from-token`` ...,
    also from the environment (``TAMSTORE_FROM_TOKEN`` ...)."""
    specs = [
        (f"--{side}", f"{side}_server", "TAMS API base URL (required)."),
        (f"--{side}-username", f"{side}_username", "HTTP Basic user name."),
        (f"--{side}-password", f"{side}_password", "HTTP Basic password."),
        (f"--{side}-token", f"{side}_token", "A Bearer token."),
        (f"--{side}-oauth2-url", f"{side}_oauth2_url", "OAuth2 token endpoint, for client credentials."),
        (f"--{side}-client-id", f"{side}_client_id", "OAuth2 client id."),
        (f"--{side}-client-secret", f"{side}_client_secret", "OAuth2 client secret."),
    ]

    def decorate(fn: Any) -> Any:
        for flag, name, text in reversed(specs):
            envvar = "TAMSTORE_" + name.upper()
            fn = click.option(flag, name, envvar=envvar, show_envvar=True, required=flag == f"--{side}", help=text)(fn)
        return fn

    return decorate


def _fail(message: str) -> None:
    click.echo(f"tamstore: error: {message}", err=True)
    sys.exit(1)


def _run(job: Callable[[], Any]) -> Any:
    """Run an async job; the failures a user can cause become one line and exit status 1."""
    import httpx

    from tamstore.client import ObjectTooLarge, TamsApiError
    from tamstore.media.ingest import SegmentsRefused
    from tamstore.media.segmenter import MediaError

    try:
        return asyncio.run(job())
    except (MediaError, TamsApiError, ObjectTooLarge, SegmentsRefused, ValueError, OSError) as exc:
        _fail(str(exc))
    except httpx.HTTPError as exc:  # could not reach the server (after the retries)
        _fail(f"{type(exc).__name__}: {exc}")


class _Reporter:
    """Progress on a terminal as one line rewritten; elsewhere a plain line every few seconds."""

    def __init__(self, quiet: bool) -> None:
        self.quiet, self.tty = quiet, sys.stderr.isatty()
        self.last = time.monotonic()  # the first line after a few seconds: short runs stay quiet

    def __call__(self, p: Any) -> None:
        now = time.monotonic()
        if self.quiet or (not self.tty and now - self.last < 5) or (self.tty and now - self.last < 0.2):
            return
        self.last = now
        rate = p.bytes / p.elapsed / 1e6 if p.elapsed > 0 else 0.0
        line = f"{p.segments} segments, {p.bytes / 1e6:.1f} MB, {rate:.1f} MB/s, {p.skipped} already there"
        if getattr(p, "flows_total", 0):
            line = f"Flow {min(p.flows + 1, p.flows_total)} of {p.flows_total}, " + line
        if p.eta is not None:
            line += f", {min(100, 100 * p.done_ns // p.total_ns)}% done, {p.eta:.0f} s to go"
        click.echo(("\r" + line) if self.tty else line, err=True, nl=not self.tty)


@click.command("ingest")
@click.argument("source")
@client_options
@click.option(
    "--segment-duration", default="2", show_default=True, help="Seconds a segment lasts at least (a decimal)."
)
@click.option(
    "--start",
    help="Place the input's first timestamp here on the timeline (seconds:nanoseconds), or 'now': "
    "at the TAI time it is read (a live recording on the wall clock).",
)
@click.option("--jobs", default=4, show_default=True, help="Segments uploaded at the same time.")
@click.option("--name", help="What the Flow and Source ids are derived from (default: the input's path or URL).")
@click.option("--label", help="Label of the Flows (default: the input's file name).")
@click.option(
    "--follow",
    is_flag=True,
    help="Live input (a growing HLS playlist or MPEG-TS file): read on until it ends or Ctrl-C.",
)
@click.option(
    "--container",
    type=click.Choice(["mp2t", "cmaf"]),
    default="mp2t",
    show_default=True,
    help="Segments as MPEG-TS, or as fragmented MP4 after one init segment per Flow (CMAF).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the created ids as JSON, no progress.")
def ingest_command(
    source: str,
    segment_duration: str,
    start: str | None,
    jobs: int,
    name: str | None,
    label: str | None,
    follow: bool,
    container: str,
    as_json: bool,
    **values: Any,
) -> None:
    """Ingest SOURCE (a file or URL FFmpeg reads) into a TAMS store, without re-encoding.

    One Flow per video and audio stream and a multi-essence Flow collecting them; running the
    same ingest again skips what is already registered.
    """
    from tamstore.domain.tai import utc_iso
    from tamstore.domain.timerange import InvalidTimeRange, format_timestamp, parse_timestamp
    from tamstore.media.ingest import IngestOptions, ingest

    try:
        seconds = Fraction(segment_duration)  # exact: "2.04" is 2.04 s, not a float near it
    except (ValueError, ZeroDivisionError):
        seconds = Fraction(0)
    if seconds <= 0 or jobs < 1:
        _fail("--segment-duration and --jobs must be positive numbers")
    try:
        start_ns = None if start in (None, "now") else parse_timestamp(start)
    except InvalidTimeRange as exc:
        _fail(f"--start: {exc}")
    options = IngestOptions(
        segment_ns=int(seconds * 1_000_000_000),
        start_ns=start_ns,
        start_now=start == "now",
        jobs=jobs,
        name=name,
        label=label,
        follow=follow,
        container=container,
    )
    reporter = _Reporter(quiet=as_json)

    async def job() -> Any:
        # Ctrl-C (or a TERM) ends the input where it is: what is in hand is still registered.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with _client(values, retries=LIVE_RETRIES if follow else 4) as client:
            return await ingest(client, source, options, reporter, stop)

    result = _run(job)
    p = result.progress
    summary = {
        "source_id": result.source_id,
        "flow_id": result.flow_id,
        "flows": result.flows,
        "sources": result.sources,
        "segments": p.segments,
        "skipped": p.skipped,
        "bytes": p.bytes,
        "not_ingested": result.not_ingested,
        "rejoined": result.rejoined,
        "start": None if result.start_ns is None else format_timestamp(result.start_ns),
    }
    for note in result.rejoined:
        click.echo(f"rejoined: {note}", err=True)
    if result.not_ingested:
        from tamstore.media.segmenter import CODECS

        kinds = ", ".join(dict.fromkeys(CODECS.values()))
        for stream in result.not_ingested:
            click.echo(f"not ingested: {stream}: tamstore makes Flows of {kinds}", err=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if reporter.tty:
        click.echo("", err=True)
    click.echo(
        f"ingested {p.segments} segments ({p.bytes / 1e6:.1f} MB, {p.skipped} already there) in {p.elapsed:.1f} s"
    )
    if options.start_now and result.start_ns is not None:
        click.echo(f"placed from {format_timestamp(result.start_ns)} TAI ({utc_iso(result.start_ns)} UTC)")
    click.echo(f"multi-essence Flow {result.flow_id}")
    for role, flow_id in result.flows.items():
        click.echo(f"  {role}: Flow {flow_id}")


@click.command("export")
@client_options
@click.option("--flow-id", required=True, help="The Flow to export (mono-essence, or multi-essence with its members).")
@click.option(
    "--timerange",
    help="The range to export (TAMS timerange; its bounds may be UTC date-times such as "
    "2026-12-07T10:00:00Z); default: all of it.",
)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--exact",
    is_flag=True,
    help="Cut at the range itself, re-encoding the video of the segments a cut falls inside (H.264).",
)
def export_command(flow_id: str, timerange: str | None, output: Path, exact: bool, **values: Any) -> None:
    """Export a Flow's media, or a time range of it, to OUTPUT (.ts, .mp4, .mkv, .mov),
    remuxed without re-encoding and cut at segment boundaries (or, with --exact, at the
    range, re-encoding only the video around each cut)."""
    from tamstore.media.export import export

    tr = _timerange(timerange)

    async def job() -> Any:
        async with _client(values) as client:
            return await export(client, flow_id, output, tr, exact=exact)

    result = _run(job)
    click.echo(f"exported {result.segments} segments ({result.bytes / 1e6:.1f} MB) to {output}")
    for gap in result.gaps:
        click.echo(f"gap: no segments in {gap}", err=True)


@click.command("sync")
@side_options("from")
@side_options("to")
@click.option("--flow-id", "flow_ids", multiple=True, help="A Flow to copy (and the Flows it collects); repeatable.")
@click.option("--source-id", "source_ids", multiple=True, help="A Source whose Flows to copy; repeatable.")
@click.option("--all", "everything", is_flag=True, help="Every Flow of the source server.")
@click.option("--timerange", help="Only segments in this range (TAMS timerange; its bounds may be UTC date-times).")
@click.option("--jobs", default=4, show_default=True, help="Objects copied at the same time.")
@click.option("--state", type=click.Path(path_type=Path, dir_okay=False), help="State file (resume, id mapping).")
@click.option("--dry-run", is_flag=True, help="Say what would be copied; change nothing.")
@click.option("--verify", "check", is_flag=True, help="Compare the two sides instead; exit 1 if they differ.")
@click.option(
    "--bytes", "compare_bytes", is_flag=True, help="With --verify: read every Object on both sides, compare digests."
)
@click.option("--follow", is_flag=True, help="After catching up, keep copying what appears until Ctrl-C.")
@click.option(
    "--interval",
    default="2",
    show_default=True,
    help="Seconds between looks at a source without an event stream (--follow).",
)
@click.option(
    "--by-reference",
    is_flag=True,
    help="Register the source's lasting URLs of media Objects on the target instead of copying bytes.",
)
@click.option("--label", default="synced", show_default=True, help="The label of those URLs (--by-reference).")
@click.option(
    "--copy-retention",
    is_flag=True,
    help="Copy the source's retention tags too, so the copy ages out as the source does "
    "(by default a copy keeps its own).",
)
def sync_command(
    flow_ids: tuple[str, ...],
    source_ids: tuple[str, ...],
    everything: bool,
    timerange: str | None,
    jobs: int,
    state: Path | None,
    dry_run: bool,
    check: bool,
    compare_bytes: bool,
    follow: bool,
    interval: str,
    by_reference: bool,
    label: str,
    copy_retention: bool,
    **values: Any,
) -> None:
    """Copy Flows, their Sources, segments and Objects from one TAMS server to another, with
    every property and ids kept. Running it again copies only what is missing."""
    from tamstore.media.sync import SyncOptions, select_flows, sync, verify

    if not (flow_ids or source_ids or everything):
        _fail("say what to copy: --flow-id, --source-id or --all")
    if jobs < 1:
        _fail("--jobs must be a positive number")
    tr = _timerange(timerange)
    try:
        seconds = float(Fraction(interval))
    except (ValueError, ZeroDivisionError):
        seconds = 0.0
    if seconds <= 0:
        _fail("--interval must be a positive number of seconds")
    options = SyncOptions(
        timerange=tr,
        jobs=jobs,
        dry_run=dry_run,
        state=state,
        follow=follow,
        interval=seconds,
        by_reference=by_reference,
        label=label,
        compare_bytes=compare_bytes,
        copy_retention=copy_retention,
    )
    reporter = _Reporter(quiet=False)

    async def job() -> Any:
        stop = asyncio.Event()  # Ctrl-C (or TERM) ends a --follow after the pass in hand
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with _client(values, "from_") as source, _client(values, "to_") as target:
            flows = await select_flows(source, list(flow_ids), list(source_ids), everything)
            if check:
                return await verify(source, target, flows, options)

            async def reselect(known: frozenset[str], made: dict[str, str | None] | None) -> list[dict[str, Any]]:
                if made is None:  # the whole selection again
                    return await select_flows(source, list(flow_ids), list(source_ids), everything, known)
                joining = [i for i, source_id in made.items() if everything or source_id in source_ids]
                return await select_flows(source, joining, [], False, known)

            grows = everything or bool(source_ids)  # (a --flow-id selection is what it was)
            return await sync(source, target, flows, options, reporter, stop, reselect if grows else None)

    result = _run(job)
    if check:
        for line in result:
            click.echo(line)
        if result:
            sys.exit(1)
        click.echo("the two sides agree")
        return
    what = "would copy" if dry_run else "copied"
    click.echo(
        f"{what} {result.segments} segments of {result.flows} Flows ({result.objects} Objects, "
        f"{result.bytes / 1e6:.1f} MB; {result.skipped} segments already there) in {result.elapsed:.1f} s"
    )
    if result.failures:
        for line in result.failures:
            click.echo(f"tamstore: error: {line}", err=True)
        sys.exit(1)

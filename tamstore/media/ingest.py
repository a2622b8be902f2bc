"""``tamstore ingest``: a media file or stream into any TAMS 8.2 server, as Flows of segments.

One mono-essence Flow (and Source) per video and audio stream, and a multi-essence Flow (and
Source) collecting them (AppNote 0001), described from the input (codec, container, essence
parameters, average bit rate). The segmenter cuts and remuxes in a thread of its own; segments
are uploaded ``jobs`` at a time and registered in batches per Flow.

Ids are derived from the input's name (uuid5), so running the same ingest again addresses the
same Flows: media already registered there is skipped, and an ingest stopped halfway ends
complete, with nothing twice, when it is run again, also where its segments fall otherwise than
the run before (a live input followed again from another point). An Object uploaded but never
registered (the ingest was killed between the two) is left to the server's collection of unused
allocations.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tamstore.client.api import AsyncTamsClient
from tamstore.domain.tai import now_tai
from tamstore.domain.timerange import TimeRange, format_timestamp
from tamstore.media.segmenter import CONTAINERS, NS, SHIFT_STEP, CutSegment, Essence, Segmenter

__all__ = ["IngestOptions", "IngestResult", "Progress", "SegmentsRefused", "ingest", "ingest_ids"]

REGISTER_BATCH = 20  # segments registered per POST
READ_AHEAD = 64 * 2**20  # bytes of cut segments read ahead of the uploads (a file)
# ... and of a live input, read on while its server is away (a restart, a failover): lost
# otherwise, as a stream does not wait (3.5 minutes at 10 Mbit/s)
LIVE_BUFFER = 256 * 2**20
ALLOCATE_BATCH = 16  # Objects allocated per request


@dataclass(frozen=True)
class IngestOptions:
    segment_ns: int = 2 * NS
    start_ns: int | None = None  # place the input's first timestamp here on the Flows' timeline
    # ... or at the TAI time its first packets were read (a live recording on the wall clock;
    # a live HLS playlist is then read from its live edge, not from the past its window holds)
    start_now: bool = False
    jobs: int = 4
    name: str | None = None  # what the ids are derived from (default: the input's path or URL)
    label: str | None = None
    follow: bool = False  # live input: read on until it ends or ``stop`` is set
    container: str = "mp2t"  # or "cmaf": fragmented MP4 segments after one init segment per Flow


@dataclass
class Progress:
    segments: int = 0
    skipped: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    done_ns: int = 0  # media time ingested (or found already there), of ...
    total_ns: int | None = None  # ... the input's duration, when it says

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds to go, at the pace so far (None: unknown)."""
        if not self.total_ns or not self.done_ns:
            return None
        return self.elapsed * max(0, self.total_ns - self.done_ns) / self.done_ns


@dataclass
class IngestResult:
    source_id: str  # the multi-essence Source
    flow_id: str  # the multi-essence Flow
    flows: dict[str, str]  # "video" / "audio" / "audio2" ... -> mono-essence Flow id
    sources: dict[str, str]
    progress: Progress
    not_ingested: list[str]  # the input's streams no Flow holds (a codec tamstore cannot describe, data)
    rejoined: list[str] = field(default_factory=list)  # where the input's timestamps went back, and what was done
    start_ns: int | None = None  # where the input's first timestamp went on the Flows' timeline


def ingest_ids(name: str, roles: list[str], container: str = "mp2t") -> tuple[dict[str, str], dict[str, str]]:
    """Flow and Source ids for an input named ``name``: the same name (and container), the same
    ids. Another container makes other Flows (and Sources: they are another rendition)."""
    space = uuid.uuid5(uuid.NAMESPACE_URL, "tamstore-ingest:" + name + ("" if container == "mp2t" else ":" + container))
    flows = {role: str(uuid.uuid5(space, "flow:" + role)) for role in [*roles, "multi"]}
    sources = {role: str(uuid.uuid5(space, "source:" + role)) for role in [*roles, "multi"]}
    return flows, sources


def _roles(essences: list[Essence]) -> dict[int, str]:
    roles: dict[int, str] = {}
    counts: dict[str, int] = {}
    for e in essences:
        counts[e.kind] = counts.get(e.kind, 0) + 1
        roles[e.index] = e.kind if counts[e.kind] == 1 else f"{e.kind}{counts[e.kind]}"
    return roles


def _flow_doc(e: Essence, flow_id: str, source_id: str, label: str, container: str) -> dict[str, Any]:
    params = dict(e.essence_parameters)
    if container == "cmaf" and e.container is None:
        params["init_segments"] = True  # AppNote 0024: every segment names its init Object
    doc: dict[str, Any] = {
        "id": flow_id,
        "source_id": source_id,
        "format": f"urn:x-nmos:format:{e.kind}",
        "codec": e.codec,
        "container": e.container or CONTAINERS[container][e.kind],
        "label": label,
        "essence_parameters": params,
    }
    if e.bit_rate:
        doc["avg_bit_rate"] = max(1, e.bit_rate // 1000)  # kilobits per second (AppNote 0013)
    return doc


async def ingest(
    client: AsyncTamsClient,
    source: str,
    options: IngestOptions,
    report: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
) -> IngestResult:
    """Ingest ``source``. Setting ``stop`` (Ctrl-C) ends the input where it is: the segments in
    hand are cut, uploaded and registered, and the result is returned as for a finished input."""
    segmenter = await asyncio.to_thread(
        Segmenter,
        source,
        options.segment_ns,
        follow=options.follow,
        container=options.container,
        live_edge=options.start_now,
    )
    stop = stop or asyncio.Event()
    created: list[str] = []  # the Flows this run makes, the collecting one last
    try:
        return await _ingest(client, segmenter, source, options, report, stop, created)
    except Exception:
        await _remove_if_empty(client, created)
        raise
    finally:
        if not stop.is_set():  # stopped, its reader may still be blocked in it: left to exit
            segmenter.close()


async def _remove_if_empty(client: AsyncTamsClient, flow_ids: list[str]) -> None:
    """Take away the Flows this ingest made if it failed before any segment of theirs was
    registered, so a refused input leaves nothing behind. (They are made before the input's
    first packets are read: reading those first would hold a live input's Ctrl-C until they
    came.) Best effort: the failure being reported may be that the server is out of reach."""
    with contextlib.suppress(Exception):
        for flow_id in flow_ids:
            async for _ in client.segments(flow_id, accept_get_urls="", limit=1):
                return  # it holds media now: everything stays
        for flow_id in reversed(flow_ids):  # the collecting Flow before the Flows it collects
            await client.delete_flow(flow_id, wait=False)


async def _ingest(
    client: AsyncTamsClient,
    segmenter: Segmenter,
    source: str,
    options: IngestOptions,
    report: Callable[[Progress], None] | None,
    stop: asyncio.Event,
    created: list[str],
) -> IngestResult:
    roles = _roles(segmenter.essences)
    name = options.name or (str(Path(source).resolve()) if "://" not in source else source)
    flow_ids, source_ids = ingest_ids(name, list(roles.values()), options.container)
    label = options.label or Path(source.split("?")[0]).name
    held_until: int | None = None  # the end of what the Flows hold (where --start now goes after)
    for e in segmenter.essences:
        role = roles[e.index]
        flow = await client.get_flow(flow_ids[role], include_timerange="true")
        if flow is None:
            await client.put_flow(
                _flow_doc(e, flow_ids[role], source_ids[role], f"{label} ({role})", options.container)
            )
            created.append(flow_ids[role])
        elif (end := TimeRange.from_str(flow.get("timerange", "()")).end) is not None:
            held_until = end if held_until is None else max(held_until, end)
    if await client.get_flow(flow_ids["multi"]) is None:
        await client.put_flow(
            {
                "id": flow_ids["multi"],
                "source_id": source_ids["multi"],
                "format": "urn:x-nmos:format:multi",
                "label": label,
                "flow_collection": [{"id": flow_ids[r], "role": r} for r in roles.values()],
            }
        )
        created.append(flow_ids["multi"])
    registered = {e.index: _Registered(client, flow_ids[roles[e.index]]) for e in segmenter.essences}
    progress = Progress(total_ns=segmenter.duration_ns())
    offset: int | None = None
    # Live input is registered segment by segment, so that it can be watched as it arrives.
    uploader = _Uploader(client, options.jobs, progress, report, 1 if options.follow else REGISTER_BATCH)
    # aclosing: on any failure the reader is stopped and waited for here, before the caller
    # closes the input it reads from.
    ahead = LIVE_BUFFER if options.follow else READ_AHEAD
    async with contextlib.aclosing(_cuts(segmenter, stop, ahead)) as cuts, uploader:
        async for cut in cuts:
            if offset is None:  # the first packets have been read: the input's start is known
                offset = _placement(options, segmenter, held_until) - segmenter.first_ns()
                if options.start_now:
                    segmenter.clock = functools.partial(_clock_less, offset)
            flow_id = flow_ids[roles[cut.stream]]
            progress.done_ns = max(progress.done_ns, cut.end_ns - segmenter.first_ns())
            pieces = await registered[cut.stream].uncovered(cut.start_ns + offset, cut.end_ns + offset)
            if not pieces:
                progress.skipped += 1
                continue
            await uploader.add(flow_id, cut, offset, pieces)
    await uploader.finish()
    return IngestResult(
        source_ids["multi"],
        flow_ids["multi"],
        {r: flow_ids[r] for r in roles.values()},
        {r: source_ids[r] for r in roles.values()},
        progress,
        segmenter.left_out,
        segmenter.rejoined,
        None if offset is None else segmenter.first_ns() + offset,
    )


def _placement(options: IngestOptions, segmenter: Segmenter, held_until: int | None) -> int:
    """Where the input's first timestamp goes on the Flows' timeline. With ``start_now``: the
    TAI time its first packets were read, down to a whole 10 ms, or the end of what the Flows
    hold if that is later (a live input restarted within its own latency, or a file ingested
    again: each run places anew, after what is there, never over it)."""
    if options.start_now:
        now = segmenter.first_read_tai // SHIFT_STEP * SHIFT_STEP
        return now if held_until is None else max(now, held_until)
    return segmenter.first_ns() if options.start_ns is None else options.start_ns


def _clock_less(offset: int) -> int:
    """The current TAI time less ``offset``: the wall clock on an input's own timeline."""
    return now_tai() - offset


class SegmentsRefused(Exception):
    """The server refused to register segments (they overlap what the Flow holds, say)."""


class _Registered:
    """The segments a Flow already holds where the ingest is, read ``WINDOW`` of the timeline at
    a time as the ingest moves on: running an ingest again reads what its input covers, never
    the whole of a long Flow."""

    WINDOW = 600 * NS

    def __init__(self, client: AsyncTamsClient, flow_id: str) -> None:
        self.client, self.flow_id = client, flow_id
        self.window: TimeRange | None = None
        self.spans: list[tuple[int, int]] = []

    async def uncovered(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that no segment of the Flow covers yet, in order: none
        when it is all there (this ingest run before, cut the same way or not), the whole range
        when none of it is. A part is what is left to register of a segment cut differently from
        the run before: a live input followed again from another point (a sliding HLS window)."""
        window = self.window
        if window is None or not window.contains_timestamp(start) or window.end is None or end > window.end:
            self.window = window = TimeRange(start, max(end, start + self.WINDOW))
            segments = self.client.segments(self.flow_id, window, accept_get_urls="")
            self.spans = sorted(
                [(tr.start, tr.end) async for tr in _ranges(segments) if tr.start is not None and tr.end is not None]
            )
        pieces, at = [], start
        for held_start, held_end in self.spans:
            if held_start >= end:
                break
            if held_end <= at:
                continue
            if held_start > at:
                pieces.append((at, held_start))
            at = held_end
            if at >= end:
                break
        if at < end:
            pieces.append((at, end))
        return pieces


async def _ranges(segments: AsyncIterator[dict[str, Any]]) -> AsyncIterator[TimeRange]:
    async for segment in segments:
        yield TimeRange.from_str(segment["timerange"])


async def _cuts(segmenter: Segmenter, stop: asyncio.Event, ahead: int) -> AsyncGenerator[CutSegment, None]:
    """The segmenter's output, produced in a thread and handed to the loop through a queue that
    holds at most ``ahead`` bytes of segments (so reading never runs further ahead of the
    uploads; a live input is read on while its server is away, up to that). When ``stop`` is set, the
    segments already cut are still handed over and then the input ends there: the reading
    thread (a daemon: a live input may hold it in FFmpeg until the next playlist reload) is told
    to stop and not waited for."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[CutSegment | BaseException | None] = asyncio.Queue()
    room = _Room(ahead)

    def produce() -> None:
        try:
            for cut in segmenter.segments():
                room.take(len(cut.data))
                asyncio.run_coroutine_threadsafe(queue.put(cut), loop).result()
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()
        except BaseException as exc:  # handed to the loop, raised there
            with contextlib.suppress(BaseException):
                asyncio.run_coroutine_threadsafe(queue.put(exc), loop).result()

    reader = threading.Thread(target=produce, name="tamstore-ingest-reader", daemon=True)
    reader.start()
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            if stop.is_set() and queue.empty():
                break
            getting = asyncio.ensure_future(queue.get())
            await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                segmenter.stopped.set()
                continue
            item = getting.result()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            room.give(len(item.data))
            yield item
    finally:
        stopping.cancel()
        segmenter.stopped.set()
        room.close()  # unblock a reader waiting to hand over one more
        if not stop.is_set():
            await asyncio.to_thread(reader.join)


class _Room:
    """Bytes of cut segments the reading thread has handed over and the loop not yet taken up,
    bounded: past ``limit`` the reader waits (one segment always goes through, however large)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self.closed = limit, 0, False
        self.changed = threading.Condition()

    def take(self, size: int) -> None:
        with self.changed:
            while self.used and self.used + size > self.limit and not self.closed:
                self.changed.wait()
            self.used += size

    def give(self, size: int) -> None:
        with self.changed:
            self.used -= size
            self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()


class _Uploader:
    """Uploads ``jobs`` segments at once; registers each Flow's uploaded segments in batches."""

    def __init__(
        self,
        client: AsyncTamsClient,
        jobs: int,
        progress: Progress,
        report: Callable[[Progress], None] | None,
        batch: int,
    ) -> None:
        self.client, self.progress, self.report, self.batch = client, progress, report, batch
        self.slots = asyncio.Semaphore(jobs)
        self.tasks: set[asyncio.Task[None]] = set()
        self.ready: dict[str, list[dict[str, Any]]] = {}
        self.failure: BaseException | None = None
        self.allocated: dict[str, list[dict[str, Any]]] = {}
        self.allocating: dict[str, asyncio.Lock] = {}
        self.inits: dict[tuple[str, bytes], asyncio.Task[str]] = {}

    async def add(self, flow_id: str, cut: CutSegment, offset: int, pieces: list[tuple[int, int]]) -> None:
        if self.failure is not None:
            raise self.failure
        await self.slots.acquire()
        task = asyncio.create_task(self._one(flow_id, cut, offset, pieces))
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    async def _object(self, flow_id: str) -> dict[str, Any]:
        """An allocated Object of the Flow, ``ALLOCATE_BATCH`` asked for at a time (any left over
        at the end are collected by the server as never used)."""
        async with self.allocating.setdefault(flow_id, asyncio.Lock()):
            pool = self.allocated.setdefault(flow_id, [])
            if not pool:
                pool.extend(await self.client.allocate(flow_id, ALLOCATE_BATCH))
            return pool.pop(0)

    async def _init_object(self, flow_id: str, init: bytes) -> str:
        """The id of the Object holding ``init`` for the Flow: uploaded once per ingest, by the
        first segment that needs it (segments after it wait for the same upload)."""
        key = (flow_id, init)
        if key not in self.inits:
            self.inits[key] = asyncio.ensure_future(self._upload(flow_id, init))
        return await asyncio.shield(self.inits[key])

    async def _upload(self, flow_id: str, data: bytes) -> str:
        obj = await self._object(flow_id)
        await self.client.upload(obj["put_url"], data)
        return str(obj["object_id"])

    async def _one(self, flow_id: str, cut: CutSegment, offset: int, pieces: list[tuple[int, int]]) -> None:
        """Upload ``cut`` and register it as the segments ``pieces`` of the Flow's timeline: one
        segment of the whole object, or, where the Flow already holds some of it, the parts it
        lacks, each saying which part of the object it uses (``object_timerange``, AppNote 0036)."""
        init_id = None if cut.init is None else await self._init_object(flow_id, cut.init)
        object_id = await self._upload(flow_id, cut.data)
        # The object's own timestamps are the Flow's less this (the ingest's --start, and for an
        # object whose samples start at 0, such as WAV, where it goes).
        ts_offset = offset + (0 if cut.media_start_ns is None else cut.start_ns - cut.media_start_ns)
        whole = TimeRange(cut.start_ns + offset, cut.end_ns + offset)
        batch = self.ready.setdefault(flow_id, [])
        for start, end in pieces:
            segment: dict[str, Any] = {"object_id": object_id, "timerange": TimeRange(start, end).to_str()}
            if init_id is not None:
                segment["init_object_id"] = init_id
            if ts_offset:
                segment["ts_offset"] = format_timestamp(ts_offset)
            if (start, end) != (whole.start, whole.end):
                segment["object_timerange"] = whole.shift(-ts_offset).to_str()
            elif cut.samples is None:
                segment["key_frame_count"] = cut.key_frames
            else:
                segment["sample_offset"], segment["sample_count"] = 0, cut.samples
            batch.append(segment)
            self.progress.segments += 1
        self.progress.bytes += len(cut.data)
        if len(batch) >= self.batch:
            self.ready[flow_id] = []
            await self._register(flow_id, batch)
        if self.report is not None:
            self.report(self.progress)

    async def _register(self, flow_id: str, batch: list[dict[str, Any]]) -> None:
        failed = await self.client.post_segments(flow_id, batch)
        if failed:
            first = failed[0]
            summary = first.get("error", {}).get("summary", "refused")
            raise SegmentsRefused(f"Flow {flow_id}: segment {first.get('timerange')} was refused: {summary}")

    async def __aenter__(self) -> _Uploader:
        return self

    async def __aexit__(self, kind: object, *rest: object) -> None:
        """On a failure, uploads still in flight are cancelled (their Objects stay unregistered,
        for the server to collect)."""
        if kind is not None:
            pending = [*self.tasks, *self.inits.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def finish(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        if self.failure is not None:
            raise self.failure
        for flow_id, batch in self.ready.items():
            if batch:
                await self._register(flow_id, batch)
        self.ready.clear()

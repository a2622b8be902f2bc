"""``tamstore sync``: copy Sources, Flows, segments and Objects from one TAMS 8.2 server to another,
losing nothing, through the TAMS API alone (``tamstore.client``).

- Flows and Sources keep their ids and every property (tags, labels, descriptions,
  collections, essence parameters, bit rates, container); a Flow's ``read_only`` is applied
  after its segments. Retention tags are the exception: a copy keeps its own (``copy_retention``
  copies them too). Mono-essence Flows are copied before the multi-essence Flows collecting
  them.
- Segments keep every field (``timerange``, ``ts_offset``, ``object_timerange``,
  ``last_duration``, ``sample_offset``, ``sample_count``, ``key_frame_count``, init Object), in
  time order, in batches.
- Objects' bytes are copied into the target's storage under the same ids (``object_ids`` in the
  storage request); an Object the target already has is not copied again (Objects shared by
  several Flows, edits by reference); init Objects too. Where the target will not take a given
  id, it allocates one and the mapping is kept in the state file.
- Resumable and idempotent: what the target already holds (a segment with the same timerange)
  is skipped, so a killed sync run again goes on where it stopped, and a second run changes
  nothing. The state file keeps the id mapping and what is done.
- ``by_reference``: instead of copying bytes, each media Object is registered on the target as an
  uncontrolled instance at a lasting URL of the source (tamstore's ``/x-tamstore/objects/{id}``
  redirect, else a URL the source gives with ``presigned=false``); presigned URLs expire, so
  they are never registered. Init Objects are small and are copied all the same: the target
  only takes init Objects it holds.
- ``follow``: after catching up, the source's event stream (where it advertises one) says which
  Flows changed, and they are copied within moments; a full look follows every ``FULL_LOOK``
  seconds all the same. Without a stream, every ``interval`` seconds.
- ``verify`` compares the two sides' segment listings and Object sizes and reports every
  difference; with ``compare_bytes`` it also reads every Object on both sides and compares
  SHA-256 digests (the checksum headers of AppNote 0048 are not compared: few servers give them).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from tamstore.client import AsyncTamsClient, ObjectTooLarge, TamsApiError, best_url
from tamstore.domain.timerange import TimeRange

__all__ = ["SyncOptions", "SyncProgress", "select_flows", "sync", "verify"]

BATCH = 100  # segments registered per POST
FULL_LOOK = 60.0  # seconds between full looks at the source when its event stream says what changed
RETENTION_TAGS = ("segment_retention_offset", "flow_retention_offset")  # AppNote 0019
FOLLOWED_EVENTS = ["flows/updated", "flows/segments_added"]
EXTENSIONS = {"video/mp2t": "ts", "video/mp4": "m4s", "audio/mp4": "m4s"}  # as tamstore's playback names them
SEGMENT_FIELDS = (
    "timerange",
    "ts_offset",
    "object_timerange",
    "last_duration",
    "sample_offset",
    "sample_count",
    "key_frame_count",
)
# Flow properties the target sets itself, or that are applied separately.
SERVER_MANAGED = {
    "created",
    "metadata_updated",
    "segments_updated",
    "created_by",
    "updated_by",
    "collected_by",
    "timerange",
    "read_only",
    "metadata_version",
}
SOURCE_PROPERTIES = ("label", "description")


@dataclass(frozen=True)
class SyncOptions:
    timerange: TimeRange | None = None
    jobs: int = 4
    dry_run: bool = False
    state: Path | None = None
    follow: bool = False  # after catching up, keep copying what appears, until stopped
    interval: float = 2.0  # seconds between looks at the source when following
    by_reference: bool = False  # register the source's lasting URLs instead of copying bytes
    label: str = "synced"  # the label of those URLs on the target
    compare_bytes: bool = False  # verify: read every Object on both sides and compare digests
    copy_retention: bool = False  # copy the source's retention tags too (the copy ages out with it)


@dataclass
class SyncProgress:
    flows: int = 0
    segments: int = 0
    skipped: int = 0
    objects: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    failures: list[str] = field(default_factory=list)  # one line per Flow that could not be copied
    flows_total: int = 0
    done_ns: int = 0  # media time copied (or found there already), of ...
    total_ns: int = 0  # ... the selected Flows' timelines: an estimate (gaps count too)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def eta(self) -> float | None:
        """Seconds to go, at the pace so far (None: unknown)."""
        if not self.total_ns or not self.done_ns:
            return None
        return self.elapsed * max(0, self.total_ns - self.done_ns) / self.done_ns


class _State:
    """What a sync has done, kept in a JSON file so that a run stopped anywhere goes on."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"object_ids": {}, "flows_done": []}
        if path is not None and path.exists():
            self.data = json.loads(path.read_text())

    def target_id(self, object_id: str) -> str:
        return str(self.data["object_ids"].get(object_id, object_id))

    def map(self, source: str, target: str) -> None:
        if source != target:
            self.data["object_ids"][source] = target

    def save(self) -> None:
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data))
            tmp.replace(self.path)


async def select_flows(
    source: AsyncTamsClient,
    flow_ids: list[str],
    source_ids: list[str],
    everything: bool,
    known: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The Flows to copy, each once, collected members before the Flows collecting them; those
    in ``known`` (already chosen by an earlier look) are left out."""
    chosen: dict[str, dict[str, Any]] = {}
    pending = list(flow_ids)
    if everything:
        pending += [f["id"] async for f in source.flows()]
    for source_id in source_ids:
        pending += [f["id"] async for f in source.flows(source_id=source_id)]
    while pending:
        flow_id = pending.pop()
        if flow_id in chosen or flow_id in known:
            continue
        flow = await source.get_flow(flow_id)
        if flow is None:
            raise ValueError(f"Flow {flow_id} does not exist on {source.server}")
        chosen[flow_id] = flow
        pending += [m["id"] for m in flow.get("flow_collection") or []]
    return sorted(chosen.values(), key=lambda f: f.get("format") == "urn:x-nmos:format:multi")


def _flow_body(flow: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flow.items() if k not in SERVER_MANAGED}


def _copy_of(flow: dict[str, Any], existing: dict[str, Any] | None, options: SyncOptions) -> dict[str, Any]:
    """What the target's copy of ``flow`` should be: the source's properties, except that the
    copy keeps its own retention tags (``existing``'s) unless ``copy_retention``. A copy is
    usually made to outlive the source's (an archive of an edge store's loop recorder), and
    retention copied with it would delete on the target what the source ages out."""
    body = _flow_body(flow)
    if options.copy_retention:
        return body
    tags = {k: v for k, v in (body.get("tags") or {}).items() if k not in RETENTION_TAGS}
    tags |= {k: v for k, v in ((existing or {}).get("tags") or {}).items() if k in RETENTION_TAGS}
    if tags or "tags" in body:
        body["tags"] = tags
    return body


@dataclass
class _Run:
    """One sync: both sides, what was asked, and what it has done."""

    source: AsyncTamsClient
    target: AsyncTamsClient
    options: SyncOptions
    state: _State
    progress: SyncProgress
    report: Callable[[SyncProgress], None] | None
    source_is_tamstore: bool = False  # its Objects have lasting URLs at /x-tamstore/objects/


# The Flows a selection holds now, less those given (the Flows chosen so far): all of them, or
# (given the Flows made since, with their Sources) only among those.
Reselect = Callable[[frozenset[str], dict[str, str | None] | None], Awaitable[list[dict[str, Any]]]]


async def sync(
    source: AsyncTamsClient,
    target: AsyncTamsClient,
    flows: list[dict[str, Any]],
    options: SyncOptions,
    report: Callable[[SyncProgress], None] | None = None,
    stop: asyncio.Event | None = None,
    reselect: Reselect | None = None,
) -> SyncProgress:
    """Copy ``flows``; with ``options.follow``, then keep copying new segments and changed
    properties (from where each Flow's copy ended) until ``stop`` is set. ``reselect`` gives the
    Flows the selection holds now besides those it is given (the Flows chosen so far): while
    following, Flows made on the source after the sync began (a new recording, under ``--all``
    or a followed Source) are copied and followed too."""
    run = _Run(source, target, options, _State(options.state), SyncProgress(flows_total=len(flows)), report)
    if options.by_reference:
        run.source_is_tamstore = str((await source.service()).get("service_version", "")).startswith("tamstore")
    run.progress.total_ns = sum(_span(flow, options.timerange) for flow in flows)
    ends: dict[str, int | None] = {}
    await _copy_flows(run, flows, options, ends)
    if options.follow:
        await _follow(run, flows, ends, stop or asyncio.Event(), reselect)
    return run.progress


async def _copy_flows(
    run: _Run, flows: list[dict[str, Any]], options: SyncOptions, ends: dict[str, int | None]
) -> None:
    """Copy each of ``flows`` whole, noting where its copy ends."""
    for flow in flows:
        try:
            ends[flow["id"]] = await _sync_flow(run, flow, options)
        except (TamsApiError, ValueError, httpx.HTTPError, ObjectTooLarge) as exc:
            # This Flow stops here (what it registered stays: segments go in whole batches,
            # each after its Objects); the others go on. Listed at the end.
            run.progress.failures.append(_naming(flow["id"], exc))
            continue
        finally:
            run.state.save()
        run.progress.flows += 1


def _span(flow: dict[str, Any], timerange: TimeRange | None) -> int:
    """How much of the timeline a Flow's copy covers (0 when unbounded or empty)."""
    if not flow.get("container") or not flow.get("timerange"):
        return 0
    return _length(TimeRange.from_str(flow["timerange"]), timerange)


def _length(span: TimeRange, timerange: TimeRange | None) -> int:
    """Nanoseconds of ``span`` inside ``timerange`` (0 when unbounded or empty)."""
    if timerange is not None:
        span = span.intersect(timerange)
    if span.start is None or span.end is None or span.end <= span.start:
        return 0
    return span.end - span.start


@dataclass
class _Watch:
    """What the follow loop and the listener to the source's event stream share: the Flows
    followed (which grow as Flows join the selection), those events named since the last pass,
    the Flows made since the last look for new ones (with their Sources), whether the selection
    must be looked at whole (the stream opened: what it missed is unknown), and the wake-up."""

    followed: set[str]
    changed: set[str] = field(default_factory=set)
    made: dict[str, str | None] = field(default_factory=dict)
    rescan: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


async def _follow(
    run: _Run, flows: list[dict[str, Any]], ends: dict[str, int | None], stop: asyncio.Event, reselect: Reselect | None
) -> None:
    """Copy what changes on the source until ``stop``: the Flows its event stream names, as
    they change, or all of them every ``interval`` seconds where it has no stream. Flows that
    join the selection are looked for when the stream says a Flow was made, and at every full
    look (at most every ``FULL_LOOK`` seconds)."""
    ids = [f["id"] for f in flows]
    watch = _Watch(set(ids))
    url = await run.source.event_stream_url()
    listener = None if url is None else asyncio.ensure_future(_listen(run.source, url, watch, reselect is not None))
    looked = time.monotonic()
    try:
        while not stop.is_set():
            await _first_of(stop, watch.wake, FULL_LOOK if listener is not None else run.options.interval)
            if stop.is_set():
                break
            if reselect is not None and (watch.rescan or time.monotonic() - looked >= FULL_LOOK):
                watch.rescan, watch.made = False, {}
                looked = time.monotonic()
                ids += await _join(run, reselect(frozenset(watch.followed), None), watch, ends)
            elif reselect is not None and watch.made:  # only among the Flows made: no listing
                made, watch.made = watch.made, {}
                ids += await _join(run, reselect(frozenset(watch.followed), made), watch, ends)
            if watch.wake.is_set():  # (events arriving during this pass set it again for the next)
                watch.wake.clear()
                looking = set(watch.changed)
                watch.changed.clear()
            else:
                looking = set(ids)
            for flow_id in ids:
                if flow_id in looking:
                    await _follow_flow(run, flow_id, ends)
            run.state.save()
    finally:
        if listener is not None:
            listener.cancel()


async def _join(
    run: _Run, looking: Awaitable[list[dict[str, Any]]], watch: _Watch, ends: dict[str, int | None]
) -> list[str]:
    """Copy the Flows that have joined the selection (what ``looking`` finds), and follow them
    from now on; returns their ids."""
    try:
        joined = await looking
    except (TamsApiError, ValueError, httpx.HTTPError) as exc:
        run.progress.failures.append(f"looking for new Flows: {exc}")
        return []
    run.progress.flows_total += len(joined)
    await _copy_flows(run, joined, run.options, ends)
    ids = [f["id"] for f in joined]
    watch.followed.update(ids)
    # Their events until now went unheeded (they were not followed): look once more.
    watch.changed.update(ids)
    if ids:
        watch.wake.set()
    return ids


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _listen(source: AsyncTamsClient, url: str, watch: _Watch, growing: bool) -> None:
    """Mark the Flows the source's events name as changed. Each time the stream opens, all of
    them: what happened before it opened was not seen. With ``growing``, a Flow made on the
    source is noted in ``made``: it may belong to the selection."""
    params: dict[str, Any] = {"events": [*FOLLOWED_EVENTS, "flows/created"] if growing else FOLLOWED_EVENTS}
    if len(watch.followed) <= 100 and not growing:  # (beyond, the query string grows too long: matched here)
        params["flow_ids"] = sorted(watch.followed)

    def everything() -> None:
        watch.changed.update(watch.followed)
        watch.rescan = growing
        watch.wake.set()

    while True:
        try:
            async for event in source.events(url, opened=everything, **params):
                subject = event.get("event") or {}
                flow_id = subject.get("flow_id") or (subject.get("flow") or {}).get("id")
                if event.get("event_type") == "flows/created":
                    flow = subject.get("flow") or {}
                    watch.made[str(flow.get("id"))] = flow.get("source_id")
                    watch.wake.set()
                elif flow_id in watch.followed:
                    watch.changed.add(flow_id)
                    watch.wake.set()
        except (httpx.HTTPError, TamsApiError):
            pass
        await asyncio.sleep(1.0)  # the stream ended or failed: open it again


async def _follow_flow(run: _Run, flow_id: str, ends: dict[str, int | None]) -> None:
    """Copy what is new in one followed Flow: its properties, and segments after its copy's end."""
    try:
        current = await run.source.get_flow(flow_id)
        if current is None:
            return
        end = ends.get(flow_id)
        later = replace(run.options, timerange=TimeRange(end, None) if end is not None else run.options.timerange)
        ends[flow_id] = await _sync_flow(run, current, later) or end
    except (TamsApiError, ValueError, httpx.HTTPError, ObjectTooLarge) as exc:
        run.progress.failures.append(_naming(flow_id, exc))


def _naming(flow_id: str, exc: Exception) -> str:
    """A failure's line, naming the Flow once."""
    text = str(exc)
    return text if text.startswith(f"Flow {flow_id}") else f"Flow {flow_id}: {text}"


async def _sync_flow(run: _Run, flow: dict[str, Any], options: SyncOptions) -> int | None:
    """Copy one Flow (its segments in ``options.timerange``); returns where its last segment
    seen on the source ends."""
    target = run.target
    existing = await target.get_flow(flow["id"])
    body = _copy_of(flow, existing, options)
    if not options.dry_run and (existing is None or _flow_body(existing) != body):
        if existing is not None and existing.get("read_only"):
            await target.set_flow_property(flow["id"], "read_only", False)
        await target.put_flow(body)
    await _sync_source(run.source, target, flow["source_id"], options)
    end = None
    if flow.get("container"):
        end = await _sync_segments(run, flow, options)
    if flow.get("read_only") and not options.dry_run:
        await target.set_flow_property(flow["id"], "read_only", True)
    return end


async def _sync_source(source: AsyncTamsClient, target: AsyncTamsClient, source_id: str, options: SyncOptions) -> None:
    """The Source's label, description and tags (it was created with its first Flow)."""
    theirs, ours = await source.get_source(source_id), await target.get_source(source_id)
    if theirs is None or ours is None or options.dry_run:
        return
    for name in SOURCE_PROPERTIES:
        if theirs.get(name) != ours.get(name):
            if theirs.get(name) is None:
                await target.request("DELETE", f"/sources/{source_id}/{name}")
            else:
                await target.request("PUT", f"/sources/{source_id}/{name}", json=theirs[name])
    for name, value in (theirs.get("tags") or {}).items():
        if (ours.get("tags") or {}).get(name) != value:
            await target.request("PUT", f"/sources/{source_id}/tags/{name}", json=value)


async def _sync_segments(run: _Run, flow: dict[str, Any], options: SyncOptions) -> int | None:
    source, target, state, progress = run.source, run.target, run.state, run.progress
    flow_id = flow["id"]
    last_end: int | None = None
    there = {s["timerange"] async for s in _timeranges(target, flow_id, options.timerange)}
    # Segments waiting for their Objects, registered BATCH at a time in time order.
    batch: list[tuple[dict[str, Any], asyncio.Task[_Placed], asyncio.Task[_Placed] | None]] = []
    placing: dict[str, asyncio.Task[_Placed]] = {}  # source Object id -> where it is on the target, once
    slots = asyncio.Semaphore(options.jobs)

    async def copy(object_id: str, urls: list[dict[str, Any]]) -> _Placed:
        async with slots:
            return _Placed(await _copy_object(source, target, flow_id, object_id, urls, state, progress))

    async def refer(object_id: str, urls: list[dict[str, Any]]) -> _Placed:
        async with slots:
            if await target.get_object(object_id) is not None:
                return _Placed(object_id)
            return _Placed(object_id, [{"url": _lasting_url(run, flow, object_id, urls), "label": options.label}])

    async def flush() -> None:
        if not batch:
            return
        ready = []
        for seg, object_task, init_task in batch:
            placed = await object_task
            seg["object_id"] = placed.object_id
            if placed.get_urls:  # an uncontrolled instance, registered with the Object's first segment
                seg["get_urls"], placed.get_urls = placed.get_urls, None
            if init_task is not None:
                seg["init_object_id"] = (await init_task).object_id
            ready.append(seg)
        batch.clear()
        failed = await target.post_segments(flow_id, ready)
        if failed:
            first = failed[0]
            summary = first.get("error", {}).get("summary", "refused")
            raise ValueError(f"Flow {flow_id}: the target refused segment {first.get('timerange')}: {summary}")
        progress.segments += len(ready)
        if run.report is not None:
            run.report(progress)

    try:
        # With what each Object holds: the first segment registered on the target fixes that, and
        # an edit using part of an Object may be copied before the Flow that uses all of it.
        async for seg in source.segments(flow_id, options.timerange, include_object_timerange="true"):
            timerange = TimeRange.from_str(seg["timerange"])
            last_end = timerange.end
            progress.done_ns += _length(timerange, options.timerange)
            if seg["timerange"] in there:
                progress.skipped += 1
                continue
            if options.dry_run:
                progress.segments += 1
                continue
            out = {k: seg[k] for k in SEGMENT_FIELDS if seg.get(k) is not None}
            oid = seg["object_id"]
            if oid not in placing:
                how = refer if options.by_reference else copy
                placing[oid] = asyncio.ensure_future(how(oid, seg.get("get_urls") or []))
            init_task = None
            init = seg.get("init_object")
            if init:
                iid = init["object_id"]
                if iid not in placing:  # (init Objects are copied even by reference: see above)
                    placing[iid] = asyncio.ensure_future(copy(iid, init.get("get_urls") or []))
                init_task = placing[iid]
            batch.append((out, placing[oid], init_task))
            if len(batch) >= BATCH:
                await flush()
        await flush()
    finally:
        for task in placing.values():
            if not task.done():
                task.cancel()
        state.save()
    return last_end


@dataclass
class _Placed:
    """Where a source Object is on the target: its id there, and the uncontrolled URLs its
    first segment registers it with (by reference)."""

    object_id: str
    get_urls: list[dict[str, str]] | None = None


def _lasting_url(run: _Run, flow: dict[str, Any], object_id: str, urls: list[dict[str, Any]]) -> str:
    """A URL of the Object on the source that does not expire."""
    if run.source_is_tamstore:
        ext = EXTENSIONS.get(flow.get("container") or "", "bin")
        return f"{run.source.server}/x-tamstore/objects/{object_id}.{ext}"
    for url in urls:
        if url.get("presigned") is False:
            return str(url["url"])
    raise ValueError(
        f"Object {object_id} has only presigned URLs on the source, which expire: copy it without --by-reference"
    )


async def _timeranges(client: AsyncTamsClient, flow_id: str, timerange: TimeRange | None) -> Any:
    async for seg in client.segments(flow_id, timerange, accept_get_urls=""):
        yield seg


async def _copy_object(
    source: AsyncTamsClient,
    target: AsyncTamsClient,
    flow_id: str,
    object_id: str,
    urls: list[dict[str, Any]],
    state: _State,
    progress: SyncProgress,
) -> str:
    """The Object's id on the target, its bytes copied there unless it has them already."""
    mapped = state.target_id(object_id)
    if await target.get_object(mapped) is not None:
        return mapped
    url = best_url(urls)
    if url is None:
        raise ValueError(f"Object {object_id} has no URL to copy it from")
    try:
        data = await source.download(url)
    except (TamsApiError, httpx.HTTPError, ObjectTooLarge) as exc:
        raise ValueError(f"Object {object_id}: its bytes could not be fetched from the source: {exc}") from exc
    try:
        [allocated] = await target.allocate(flow_id, 1, object_ids=[object_id])
    except TamsApiError as exc:
        if exc.status != 400:
            raise
        [allocated] = await target.allocate(flow_id, 1)  # the target picks ids itself
    await target.upload(allocated["put_url"], data)
    state.map(object_id, str(allocated["object_id"]))
    progress.objects += 1
    progress.bytes += len(data)
    return str(allocated["object_id"])


async def verify(
    source: AsyncTamsClient, target: AsyncTamsClient, flows: list[dict[str, Any]], options: SyncOptions
) -> list[str]:
    """Differences between the two sides, one line each (empty: they agree)."""
    state = _State(options.state)
    out: list[str] = []
    urls = {"include_object_timerange": "true"} | ({} if options.compare_bytes else {"accept_get_urls": ""})
    digests: dict[tuple[int, str], str] = {}  # (side, Object id) -> SHA-256 of its bytes, read once

    async def digest(side: int, client: AsyncTamsClient, doc: dict[str, Any]) -> str:
        key = (side, doc["object_id"])
        if key not in digests:
            url = best_url(doc.get("get_urls") or [])
            digests[key] = "" if url is None else hashlib.sha256(await client.download(url)).hexdigest()
        return digests[key]

    for flow in flows:
        flow_id = flow["id"]
        theirs = await target.get_flow(flow_id)
        if theirs is None:
            out.append(f"Flow {flow_id}: missing on the target")
            continue
        for name, value in _copy_of(flow, theirs, options).items():
            if theirs.get(name) != value:
                out.append(f"Flow {flow_id}: {name} differs")
        a = [s async for s in source.segments(flow_id, options.timerange, **urls)]
        b = {s["timerange"]: s async for s in target.segments(flow_id, options.timerange, **urls)}
        for seg in a:
            where = f"Flow {flow_id}: segment {seg['timerange']}"
            other = b.pop(seg["timerange"], None)
            if other is None:
                out.append(f"{where} missing on the target")
                continue
            for name in SEGMENT_FIELDS:
                if name == "object_timerange" and None in (seg.get(name), other.get(name)):
                    continue  # a server that does not give it (include_object_timerange is newer)
                if seg.get(name) != other.get(name):
                    out.append(f"{where}: {name} differs")
            if state.target_id(seg["object_id"]) != other["object_id"]:
                out.append(f"{where}: another Object")
            elif not await _same_size(source, target, seg["object_id"], other["object_id"]):
                out.append(f"{where}: its Object's size differs")
            elif options.compare_bytes:
                pairs = [(seg, other, "Object")]
                if seg.get("init_object") and other.get("init_object"):
                    pairs.append((seg["init_object"], other["init_object"], "init Object"))
                for x, y, what in pairs:
                    if await digest(0, source, x) != await digest(1, target, y):
                        out.append(f"{where}: its {what}'s bytes differ")
        for timerange in b:
            out.append(f"Flow {flow_id}: segment {timerange} only on the target")
    return out


async def _same_size(source: AsyncTamsClient, target: AsyncTamsClient, a: str, b: str) -> bool:
    one, other = await source.get_object(a), await target.get_object(b)
    if one is None or other is None:
        return False
    size_a = one.get("size")
    size_b = other.get("size")
    return size_a is None or size_b is None or size_a == size_b

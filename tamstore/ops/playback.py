"""Playback: HLS playlists and DASH manifests of any time range of a Flow (tamstore extension).

On demand (a range closed at both ends, or a Flow not written to lately): every segment of the
range, read a page at a time and sent as it is read. Live (an open end, or no range on a Flow
whose segments changed in the last ``LIVE_IDLE``): a window at the Flow's end, numbered from the
Flow's counters so that a player reloading it sees each segment under one number
(``tables.flows``: seg_removed, seg_breaks).

Segment URIs are the segments' own ``get_urls``, chosen with the same storage filters as the
segments listing. FFmpeg (8 and later) plays an HLS segment only if its URL's path ends with an
extension of its format, so tamstore's own media URLs get one (the media route accepts it), and a
URL without one (an S3 key is the Object id) is reached through ``/x-tamstore/objects/{id}.ts``,
which redirects to it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tamstore.domain.errors import BadRequest, NotFound
from tamstore.domain.objects import UrlFilter
from tamstore.domain.paging import PageRequest
from tamstore.domain.playlists import (
    DashTrack,
    HlsMediaPlaylist,
    PlayItem,
    Rendition,
    SegmentTimeline,
    avc_codecs,
    dash_adaptation_close,
    dash_adaptation_open,
    dash_mpd_head,
    dash_mpd_tail,
    dash_segment_url,
    dash_timeline,
    hls_multivariant,
    is_break,
    target_duration,
)
from tamstore.domain.tai import NS, is_wall_clock, now_tai
from tamstore.domain.timerange import TimeRange
from tamstore.ops import access
from tamstore.ops.context import Context, now_us
from tamstore.ops.flows import require_flow
from tamstore.ops.objects import UrlRenderer
from tamstore.store.media.filesystem import MEDIA_PREFIX
from tamstore.store.metadata.objects import instances_of
from tamstore.store.metadata.rows import FlowRow
from tamstore.store.metadata.sql import Tx

__all__ = ["PlayRequest", "dash", "hls", "object_redirect", "EXTENSIONS"]

PAGE = 1000  # segments read per query of an on-demand playlist
LIVE_IDLE = 60 * 1_000_000  # µs: a Flow without a range is live if its segments changed this recently
DEFAULT_WINDOW_TARGETS = 6  # a live window's default length, in target durations
MAX_WINDOW = 3600 * NS  # the longest live window asked for (the window is read whole)

# Segment containers tamstore plays, and the extension FFmpeg's HLS reader wants for each.
EXTENSIONS = {"video/mp2t": "ts", "video/mp4": "m4s", "audio/mp4": "m4s"}
INIT_EXTENSION = "mp4"
PLAYABLE_FORMATS = ("urn:x-nmos:format:video", "urn:x-nmos:format:audio")
MULTI = "urn:x-nmos:format:multi"


@dataclass(frozen=True)
class PlayRequest:
    flow_id: str
    timerange: TimeRange | None
    window_ns: int | None
    urls: UrlFilter
    base_url: str
    passthrough: dict[str, str]  # query parameters carried into every URL tamstore serves (access_token, filters)


def _doc(flow: FlowRow) -> dict[str, Any]:
    return json.loads(flow.doc)  # type: ignore[no-any-return]


def _playable(flow: FlowRow, what: str) -> str:
    """The segment extension of a mono-essence Flow that plays, else a 400 saying why not."""
    if flow.format not in PLAYABLE_FORMATS:
        raise BadRequest(f"Flow {flow.id} is {flow.format}: only video, audio and multi-essence Flows play")
    ext = EXTENSIONS.get(flow.container or "")
    if ext is None:
        raise BadRequest(
            f"Flow {flow.id}'s container {flow.container or '(none)'} does not play as {what}: "
            f"one of {', '.join(EXTENSIONS)}"
        )
    return ext


def _is_live(flow: FlowRow, timerange: TimeRange | None) -> bool:
    if timerange is not None:
        return timerange.end is None
    return flow.segments_updated is not None and now_us() - flow.segments_updated < LIVE_IDLE


def _bounds(timerange: TimeRange | None) -> tuple[int | None, int | None]:
    return (None, None) if timerange is None else (timerange.start, timerange.end)


class _Uris:
    """Playable URIs for segment rows: each Object's first ``get_url`` under the request's
    filters, with the extension FFmpeg wants."""

    def __init__(self, ctx: Context, req: PlayRequest) -> None:
        self.renderer = UrlRenderer(ctx, req.urls, req.base_url)
        self.req = req
        self.own_media = req.base_url + MEDIA_PREFIX + "/"

    def uri(self, object_id: str, instances: Sequence[Any], ext: str) -> str | None:
        url = _fetchable(self.renderer.render(object_id, instances))
        if url is None:
            return None
        if url.startswith(self.own_media):  # tamstore's own signed URL: path, then the query
            path, mark, query = url.partition("?")
            return f"{path}.{ext}{mark}{query}"
        if urlsplit(url).path.lower().endswith("." + ext):
            return url
        return self.redirect(object_id, ext)

    def redirect(self, object_id: str, ext: str) -> str:
        query = urlencode(self.req.passthrough)
        return f"{self.req.base_url}/x-tamstore/objects/{quote(object_id, safe='')}.{ext}" + (
            f"?{query}" if query else ""
        )


async def _items(
    ctx: Context, flow_id: str, lo: int | None, hi: int | None, uris: _Uris, ext: str
) -> AsyncIterator[list[PlayItem]]:
    """The Flow's segments overlapping [lo, hi) as playlist items, a page at a time, each page
    in a read transaction of its own (a playlist sent slowly holds no snapshot or connection
    meanwhile). Segments whose Object has no URL under the request's filters are left out: a
    hole, to the player."""
    after: tuple[Any, ...] | None = None
    while True:
        async with ctx.store.read() as tx:
            page = await tx.list_segments(flow_id, PageRequest(PAGE, after), lo=lo, hi=hi, object_id=None)
            items = _page_items(page.items, page.extra["instances"], uris, ext)
        yield [item for _, item in items if item is not None]
        if page.next_key is None:
            return
        after = page.next_key


def _page_items(
    rows: list[Any], instances: dict[str, list[Any]], uris: _Uris, ext: str
) -> list[tuple[Any, PlayItem | None]]:
    """Each segment row with its playlist item (None: no URL under the filters), given the
    page's ``extra["instances"]``."""
    out: list[tuple[Any, PlayItem | None]] = []
    for r in rows:
        uri = uris.uri(r.object_id, instances_of(r, instances), ext)
        item = None
        if uri is not None:
            init_uri = None
            if r.init_object_id:
                init_uri = uris.uri(r.init_object_id, instances.get(r.init_object_id, []), INIT_EXTENSION)
            item = PlayItem(r.ts_start, r.ts_end, r.ts_offset or 0, uri, r.init_object_id, init_uri)
        out.append((r, item))
    return out


# -- HLS ------------------------------------------------------------------------------------------


async def hls(ctx: Context, req: PlayRequest) -> str | AsyncIterator[str]:
    """The playlist of ``req``: text, or (on demand) an iterator of its parts as they are read."""
    async with ctx.store.read() as tx:
        flow = await require_flow(tx, req.flow_id)
        if flow.format == MULTI:
            return await _multivariant(tx, flow, req)
        ext = _playable(flow, "HLS")
        if _is_live(flow, req.timerange):
            return await _live_media_playlist(ctx, tx, flow, req, ext)
        lo, hi = _bounds(req.timerange)
        longest = await tx.longest_segment(flow.id, lo, hi)
    return _vod_media_playlist(ctx, flow, req, ext, longest or NS)


async def _vod_media_playlist(
    ctx: Context, flow: FlowRow, req: PlayRequest, ext: str, longest: int
) -> AsyncIterator[str]:
    playlist: HlsMediaPlaylist | None = None
    lo, hi = _bounds(req.timerange)
    async for items in _items(ctx, flow.id, lo, hi, _Uris(ctx, req), ext):
        if playlist is None:
            wall = bool(items) and is_wall_clock(items[0].start)
            playlist = HlsMediaPlaylist(target=target_duration(longest), vod=True, wall_clock=wall)
            yield playlist.head()
        yield "".join(playlist.segment(item) for item in items)
    if playlist is None:
        playlist = HlsMediaPlaylist(target=target_duration(longest), vod=True, wall_clock=False)
        yield playlist.head()
    yield playlist.tail()


async def _window(tx: Tx, flow: FlowRow, req: PlayRequest, uris: _Uris, ext: str) -> tuple[list[PlayItem], int, int]:
    """The live window's items, its length in segments as stored (items left out included), and
    the number of breaks inside it."""
    lo, hi = _bounds(req.timerange)
    last = await tx.list_segments(flow.id, PageRequest(1, None, True), lo=lo, hi=hi, object_id=None)
    if not last.items:
        return [], 0, 0
    end = last.items[0].ts_end
    window = req.window_ns
    if window is None:
        # the target duration of the range's last 10 s sets the default window's length
        recent = end - 10 * NS if lo is None else max(lo, end - 10 * NS)
        longest = await tx.longest_segment(flow.id, recent, hi)
        window = DEFAULT_WINDOW_TARGETS * target_duration(longest or NS) * NS
    start = end - window if lo is None else max(lo, end - window)
    items: list[PlayItem] = []
    stored = breaks = 0
    previous: tuple[int, int, str | None] | None = None
    after: tuple[Any, ...] | None = None
    while True:
        page = await tx.list_segments(flow.id, PageRequest(PAGE, after), lo=start, hi=hi, object_id=None)
        for r, item in _page_items(page.items, page.extra["instances"], uris, ext):
            stored += 1
            offset = r.ts_offset or 0
            if previous is not None and is_break(*previous, r.ts_start, offset, r.init_object_id):
                breaks += 1
            previous = (r.ts_end, offset, r.init_object_id)
            if item is not None:
                items.append(item)
        if page.next_key is None:
            break
        after = page.next_key
    return items, stored, breaks


async def _live_media_playlist(ctx: Context, tx: Tx, flow: FlowRow, req: PlayRequest, ext: str) -> str:
    items, stored, breaks = await _window(tx, flow, req, _Uris(ctx, req), ext)
    # Numbered from the Flow's counters, read in the same transaction as the window.
    sequence = max(0, flow.seg_count + flow.seg_removed - stored)
    playlist = HlsMediaPlaylist(
        target=target_duration(max((i.end - i.start for i in items), default=NS)),
        sequence=sequence,
        discontinuity_sequence=max(0, flow.seg_breaks - breaks),
        vod=False,
        wall_clock=bool(items) and is_wall_clock(items[0].start),
    )
    return playlist.head() + "".join(playlist.segment(i) for i in items)


def _rendition(flow: FlowRow, uri: str, name: str) -> Rendition:
    doc = _doc(flow)
    params = doc.get("essence_parameters") or {}
    bit_rate = doc.get("max_bit_rate") or doc.get("avg_bit_rate")
    bandwidth = int(bit_rate) * 1000 if isinstance(bit_rate, int) else None
    if bandwidth is None and flow.seg_duration > 0:
        bandwidth = flow.seg_bytes * 8 * NS // flow.seg_duration  # measured from what is stored
    rate = params.get("frame_rate")
    frame_rate = None
    if isinstance(rate, dict) and isinstance(rate.get("numerator"), int):
        frame_rate = Fraction(rate["numerator"], rate.get("denominator") or 1)
    kind = "video" if flow.format.endswith(":video") else "audio"
    return Rendition(
        kind=kind,
        flow_id=flow.id,
        uri=uri,
        name=name,
        bandwidth=bandwidth,
        codecs=avc_codecs(flow.codec, params),
        width=params.get("frame_width"),
        height=params.get("frame_height"),
        frame_rate=frame_rate,
        sample_rate=params.get("sample_rate"),
        channels=params.get("channels"),
        transfer=transfer if isinstance(transfer := params.get("transfer_characteristic"), str) else None,
    )


async def _members(tx: Tx, flow: FlowRow, what: str) -> list[tuple[FlowRow, str]]:
    """The playable mono-essence Flows a multi-essence Flow collects, with their names."""
    collection = _doc(flow).get("flow_collection") or []
    rows = await tx.get_flows(item["id"] for item in collection)
    members = []
    for item in collection:
        member = rows.get(item["id"])
        if member is None or member.format not in PLAYABLE_FORMATS or member.container not in EXTENSIONS:
            continue
        if not access.allows(member):
            continue  # a member hidden from the caller is left out, as a missing one is
        members.append((member, item.get("role") or member.label or member.id))
    if not members:
        raise BadRequest(f"Flow {flow.id} collects no video or audio Flow that plays as {what}")
    return members


def _child_uri(req: PlayRequest, flow_id: str, suffix: str) -> str:
    query: dict[str, str] = dict(req.passthrough)
    if req.timerange is not None:
        query["timerange"] = req.timerange.to_str()
    if req.window_ns is not None:
        query["window"] = str(Fraction(req.window_ns, NS))
    encoded = urlencode(query)
    return f"{req.base_url}/x-tamstore/hls/{quote(flow_id, safe='')}{suffix}" + (f"?{encoded}" if encoded else "")


async def _multivariant(tx: Tx, flow: FlowRow, req: PlayRequest) -> str:
    members = await _members(tx, flow, "HLS")
    renditions = [_rendition(m, _child_uri(req, m.id, ".m3u8"), name) for m, name in members]
    videos = [r for r in renditions if r.kind == "video"]
    audios = [r for r in renditions if r.kind == "audio"]
    return hls_multivariant(videos, audios)


# -- DASH -----------------------------------------------------------------------------------------


async def dash(ctx: Context, req: PlayRequest) -> AsyncIterator[str]:
    """The MPD of ``req``: static for a closed range, dynamic for live (same rule as HLS). What
    can be refused is refused before the first byte; the segments then follow a page at a time."""
    async with ctx.store.read() as tx:
        flow = await require_flow(tx, req.flow_id)
        if flow.format == MULTI:
            members = await _members(tx, flow, "DASH")
        else:
            _playable(flow, "DASH")
            members = [(flow, flow.label or flow.id)]
        for member, _ in members:
            if not member.init_segments or not (member.container or "").endswith("/mp4"):
                raise BadRequest(
                    f"Flow {member.id} does not play as DASH: DASH needs fragmented MP4 segments with "
                    "init segments (ingest with --container cmaf); its HLS playlist plays"
                )
        live = any(_is_live(member, req.timerange) for member, _ in members)  # a multi Flow has no segments
        plan = await _dash_plan(tx, req, members, _Uris(ctx, req), live)
    return _dash_text(ctx, req, plan)


@dataclass
class _DashPlan:
    members: list[tuple[FlowRow, str]]
    live: bool
    uris: _Uris
    windows: dict[str, list[PlayItem]]  # live: each member's window
    firsts: dict[str, PlayItem]  # each member's first segment in the range
    origin: int
    end: int


async def _dash_plan(
    tx: Tx, req: PlayRequest, members: list[tuple[FlowRow, str]], uris: _Uris, live: bool
) -> _DashPlan:
    lo, hi = _bounds(req.timerange)
    windows: dict[str, list[PlayItem]] = {}
    firsts: dict[str, PlayItem] = {}
    ends: list[int] = []
    for member, _ in members:
        ext = EXTENSIONS[member.container or ""]
        if live:
            items, _, _ = await _window(tx, member, req, uris, ext)
            windows[member.id] = items
            if items:
                firsts[member.id] = items[0]
                ends.append(items[-1].end - items[-1].ts_offset)
            continue
        head = await tx.list_segments(member.id, PageRequest(1), lo=lo, hi=hi, object_id=None)
        last = await tx.list_segments(member.id, PageRequest(1, None, True), lo=lo, hi=hi, object_id=None)
        if head.items and last.items:
            _, first = _page_items(head.items, head.extra["instances"], uris, ext)[0]
            if first is not None and first.init_uri is not None:
                firsts[member.id] = first
                ends.append(last.items[0].ts_end)
    if not firsts:
        raise NotFound(f"no segments to play in {req.timerange.to_str() if req.timerange else 'the Flow'}")
    return _DashPlan(members, live, uris, windows, firsts, min(f.start for f in firsts.values()), max(ends))


async def _dash_text(ctx: Context, req: PlayRequest, plan: _DashPlan) -> AsyncIterator[str]:
    lo, hi = _bounds(req.timerange)
    longest = max((i.end - i.start for w in plan.windows.values() for i in w), default=2 * NS)
    target = target_duration(longest) * NS
    yield dash_mpd_head(
        dynamic=plan.live,
        first_ns=plan.origin,
        end_ns=plan.end,
        window_ns=req.window_ns or DEFAULT_WINDOW_TARGETS * target,
        target_ns=target,
        published_tai=now_tai(),
    )
    for index, (member, name) in enumerate(plan.members):
        first = plan.firsts.get(member.id)
        if first is None or first.init_uri is None:
            continue
        kind = "video" if member.format.endswith(":video") else "audio"
        track = DashTrack(
            rendition=_rendition(member, "", name),
            mime=f"{kind}/mp4",
            init_uri=first.init_uri,
            # Static: the range's start is the Period's start; live: media times as they are.
            presentation_offset=0 if plan.live else plan.origin - first.ts_offset,
        )
        yield dash_adaptation_open(track, index)
        if plan.live:
            items = plan.windows[member.id]
            yield dash_timeline(items)
            yield "".join(dash_segment_url(i) for i in items)
        else:  # two passes over the range, a page at a time: the timeline, then the URLs
            ext = EXTENSIONS[member.container or ""]
            timeline = SegmentTimeline()
            yield timeline.head()
            async for items in _items(ctx, member.id, lo, hi, plan.uris, ext):
                yield "".join(timeline.add(i) for i in items)
            yield timeline.tail()
            async for items in _items(ctx, member.id, lo, hi, plan.uris, ext):
                yield "".join(dash_segment_url(i) for i in items)
        yield dash_adaptation_close()
    yield dash_mpd_tail()


# -- redirects to extension-less URLs ---------------------------------------------------------------


async def object_redirect(ctx: Context, object_id: str, urls: UrlFilter, base_url: str) -> str:
    """The URL an ``/x-tamstore/objects/{id}.{ext}`` request redirects to."""
    async with ctx.store.read() as tx:
        obj = await tx.get_object(object_id)
        if obj is None or not await tx.object_visible(object_id, access.current()):
            raise NotFound(f"Object {object_id} does not exist")
        instances = (await tx.instances([object_id])).get(object_id, [])
    url = _fetchable(UrlRenderer(ctx, urls, base_url).render(object_id, instances))
    if url is None:
        raise NotFound(f"Object {object_id} has no http(s) URL under the given filters")
    return url


def _fetchable(urls: Sequence[Any]) -> str | None:
    """The first http(s) one of an Object's get_urls. The others are whatever a writer
    registered ("file:///etc/passwd.ts", "javascript:..."): a playlist is opened by players and
    transcoders that may follow any URL in it, so those stay out (the segment is a gap)."""
    for entry in urls:
        url = str(entry["url"])
        if urlsplit(url).scheme.lower() in ("http", "https"):
            return url
    return None

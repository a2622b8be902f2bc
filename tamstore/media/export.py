"""``tamstore export``: any time range of a Flow from any TAMS 8.2 server, as one media file.

A mono-essence Flow gives one stream; a multi-essence Flow gives one stream per Flow it collects
(video and audio muxed in sync). The file's container follows the output's extension (.ts,
.mp4, .mkv, .mov). Packets are remuxed as they are, so the file is cut at segment boundaries: it holds
every segment that overlaps the range, whole. With ``exact`` it holds the range itself: video
is re-encoded in the (at most two) segments a cut falls inside, audio cut at packets
(``trim``).

A segment with an init Object (CMAF, AppNote 0024) is read as its init segment followed by its
own object. Each segment's packets are placed on the Flow's timeline: its object's timestamps plus the
segment's ``ts_offset`` (so Flows made by reference, whose segments reuse other Flows' Objects,
come out right). Downloads run ahead of the muxing, which runs in a thread.

A segment may use only part of its object (an edit by reference; its ``object_timerange`` is
wider than its own range less ``ts_offset``, AppNote 0036). Only that part is written: audio
packets that start inside it; video pictures copied when they are whole groups of pictures, and
otherwise decoded and re-encoded as ``--exact`` does at a cut, for nothing else can drop them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from tamstore.client.api import AsyncTamsClient, best_url
from tamstore.domain.timerange import TimeRange, format_timestamp, parse_timestamp
from tamstore.media.essence import pcm_frame_bytes
from tamstore.media.segmenter import NS, MediaError, to_ns
from tamstore.media.trim import Cut, ReEncoder, copyable, frames_in

__all__ = ["ExportResult", "export"]

PREFETCH = 4  # segments downloaded ahead of the one being muxed
# Muxers that take PCM and yet cannot write it: MPEG-TS keeps it as an opaque data stream (only
# SMPTE 302M is audio there), and MP4 fails at its end (its PCM is experimental in FFmpeg).
NO_PCM = {"mpegts", "mp4"}


@dataclass
class ExportResult:
    segments: int = 0
    bytes: int = 0
    gaps: list[str] = field(default_factory=list)  # timeranges of a Flow with no segment
    streams: int = 0


@dataclass(frozen=True)
class _Piece:
    flow: int  # index of the mono-essence Flow (and output stream)
    start: int
    end: int
    url: str
    ts_offset: int
    where: str  # "segment [a_b) of Flow X", for messages
    init: tuple[str, str] | None = None  # (id, URL) of the init Object its object follows
    # The segment uses part of its object, which spans this on the Flow's timeline (None: not
    # known, as when only the deprecated sample_offset or sample_count says so).
    partial: bool = False
    span: tuple[int, int] | None = None

    def keep(self, cut: Cut | None) -> Cut | None:
        """What of its object this piece writes (None: all of it)."""
        if not self.partial:
            return cut
        if cut is None:
            return Cut(self.start, self.end)
        lo, hi = self.start, self.end
        return Cut(lo if cut.start is None else max(lo, cut.start), hi if cut.end is None else min(hi, cut.end))

    def whole_in(self, keep: Cut) -> bool:
        """Every picture of its object is inside ``keep``."""
        if self.partial:
            return self.span is not None and keep.inside(*self.span)
        return keep.inside(self.start, self.end)


async def export(
    client: AsyncTamsClient, flow_id: str, output: Path, timerange: TimeRange | None = None, *, exact: bool = False
) -> ExportResult:
    """Write ``timerange`` of the Flow to ``output``: whole segments, or with ``exact`` the
    range itself (video re-encoded only in the segments a cut falls inside; see ``trim``)."""
    flow = await client.get_flow(flow_id)
    if flow is None:
        raise MediaError(f"Flow {flow_id} does not exist on {client.server}")
    members = [flow]
    if flow.get("format") == "urn:x-nmos:format:multi":
        members = []
        for item in flow.get("flow_collection", []):
            member = await client.get_flow(item["id"])
            if member is not None and member.get("format") in ("urn:x-nmos:format:video", "urn:x-nmos:format:audio"):
                members.append(member)
    result = ExportResult()
    pieces: list[_Piece] = []
    for index, member in enumerate(members):
        previous: TimeRange | None = None
        async for seg in client.segments(member["id"], timerange, include_object_timerange="true"):
            tr = TimeRange.from_str(seg["timerange"])
            assert tr.start is not None and tr.end is not None
            url = best_url(seg.get("get_urls") or [])
            if url is None:
                raise MediaError(f"segment {seg['timerange']} of Flow {member['id']} has no URL to read it from")
            offset = parse_timestamp(seg["ts_offset"]) if seg.get("ts_offset") else 0
            where = f"segment {seg['timerange']} of Flow {member['id']}"
            init = _init_of(seg, where)
            partial, span = _part_used(seg, tr, offset)
            pieces.append(_Piece(index, tr.start, tr.end, url, offset, where, init, partial, span))
            if previous is not None and previous.end is not None and previous.end < tr.start:
                result.gaps.append(TimeRange(previous.end, tr.start).to_str())
            previous = tr
    if not pieces:
        raise MediaError(f"Flow {flow_id} has no segments in {timerange or 'its timeline'}")
    pieces.sort(key=lambda p: (p.start, p.flow))
    cut = Cut(timerange.start, timerange.end) if exact and timerange is not None else None
    # Written beside the output and renamed over it once whole: an export that fails leaves no
    # broken file, and a file already there as it was. (The same extension: FFmpeg picks the
    # container by it.)
    unfinished = output.with_name(f".{output.stem}.partial{output.suffix}")
    writer = await asyncio.to_thread(_Writer, unfinished, output, len({p.flow for p in pieces}), cut)
    # At most PREFETCH downloads in flight or waiting; each segment's bytes are let go once muxed.
    ahead: collections.deque[asyncio.Task[bytes]] = collections.deque()
    upcoming = iter(pieces)
    inits: dict[str, asyncio.Task[bytes]] = {}  # each init Object downloaded once

    async def fetch(piece: _Piece) -> bytes:
        if piece.init is None:
            return await client.download(piece.url)
        init_id, init_url = piece.init
        if init_id not in inits:
            inits[init_id] = asyncio.ensure_future(client.download(init_url))
        # An init segment and a media segment after it make one fragmented MP4 file.
        media = await client.download(piece.url)
        return await asyncio.shield(inits[init_id]) + media

    try:
        for piece in pieces:
            while len(ahead) < PREFETCH and (following := next(upcoming, None)) is not None:
                ahead.append(asyncio.create_task(fetch(following)))
            data = await ahead.popleft()
            await asyncio.to_thread(writer.add, piece, data)
            result.segments += 1
            result.bytes += len(data)
        await asyncio.to_thread(writer.close)
        unfinished.replace(output)
    except BaseException:
        await asyncio.to_thread(writer.abandon)
        unfinished.unlink(missing_ok=True)
        raise
    finally:
        for task in [*ahead, *inits.values()]:
            task.cancel()
    result.streams = len(writer.streams)
    return result


def _part_used(seg: dict[str, Any], tr: TimeRange, offset: int) -> tuple[bool, tuple[int, int] | None]:
    """Whether the segment uses only part of its object, and the object's span on the Flow's
    timeline when the server says what it is (``object_timerange``)."""
    whole = seg.get("object_timerange")
    if whole is None:  # a server that does not say; a sample_count alone is commonly all of it
        return seg.get("sample_offset") not in (None, 0), None
    held = TimeRange.from_str(whole).shift(offset)
    if held.start is None or held.end is None:
        return True, None
    return (held.start, held.end) != (tr.start, tr.end), (held.start, held.end)


def _init_of(segment: dict[str, Any], where: str) -> tuple[str, str] | None:
    init = segment.get("init_object")
    if init is None:
        return None
    url = best_url(init.get("get_urls") or [])
    if url is None:
        raise MediaError(f"{where}: its init Object {init['object_id']} has no URL to read it from")
    return init["object_id"], url


class _Writer:
    """The output file; one output stream per Flow, made from its first segment's stream."""

    def __init__(self, path: Path, output: Path, flows: int, cut: Cut | None = None) -> None:
        try:
            self.out = av.open(str(path), "w")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(f"{output}: cannot write it ({exc})") from None
        self.output = output  # the name the file will have, for messages
        self.started = False  # the header written
        self.streams: dict[int, Any] = {}
        self.pending: dict[int, list[tuple[_Piece, bytes]]] = {}
        self.flows = flows
        self.cut = cut
        self.reencoders: dict[int, ReEncoder] = {}

    def add(self, piece: _Piece, data: bytes) -> None:
        self.pending.setdefault(piece.flow, []).append((piece, data))
        self._flush(closing=False)

    def _flush(self, closing: bool) -> None:
        """Streams must all exist before the first packet is written: segments are held back
        until every Flow has given its first one (or, at the end, until no more will come)."""
        for flow, held in self.pending.items():
            if flow not in self.streams:
                self.streams[flow] = self._stream_like(*held[0])
        if len(self.streams) < self.flows and not closing:
            return
        if self.streams and not self.started:
            self._start()
        for held in self.pending.values():
            for piece, data in held:
                self._mux(piece, data)
        self.pending.clear()

    def _stream_like(self, piece: _Piece, data: bytes) -> Any:
        with _opened(piece, data) as (_, stream):
            codec = stream.codec_context.name
            try:
                made = self.out.add_stream_from_template(stream)
            except (av.FFmpegError, ValueError) as exc:
                raise self._cannot_hold(codec, str(exc)) from None
            if codec.startswith("pcm_") and self.out.format.name in NO_PCM:
                raise self._cannot_hold(codec, "uncompressed audio")
            return made

    def _start(self) -> None:
        """The file's header, once every stream is there: where a muxer refuses a codec."""
        try:
            self.out.start_encoding()
        except av.FFmpegError as exc:
            codecs = ", ".join(sorted({s.codec_context.name for s in self.streams.values()}))
            raise self._cannot_hold(codecs, exc.strerror or str(exc)) from None
        self.started = True

    def _cannot_hold(self, codecs: str, why: str) -> MediaError:
        return MediaError(
            f"{self.output}: a {self.output.suffix} file cannot hold {codecs} ({why}); "
            "export to .mov or .mkv, which hold every codec tamstore ingests"
        )

    def _mux(self, piece: _Piece, data: bytes) -> None:
        target = self.streams[piece.flow]
        with _opened(piece, data) as (source, stream):
            base = Fraction(stream.time_base)
            shift = piece.ts_offset * base.denominator // (base.numerator * NS)
            keep = piece.keep(self.cut)
            packets = []
            for packet in source.demux(stream):
                if packet.size == 0:
                    continue
                if shift:
                    packet.pts = None if packet.pts is None else packet.pts + shift
                    packet.dts = None if packet.dts is None else packet.dts + shift
                packets.append(packet)
            read = len(packets)
            if keep is not None and stream.type == "video" and not piece.whole_in(keep):
                packets = self._pictures(piece, stream, packets, keep, target)
            elif keep is not None:
                packets = [p for p in packets if p.pts is None or _audio_kept(piece, keep, p, base)]
                if stream.codec_context.name.startswith("pcm_"):
                    packets = [t for p in packets if (t := _pcm_within(p, keep, stream)) is not None]
            if read and not packets and piece.partial and (self.cut is None or self.cut.inside(piece.start, piece.end)):
                raise MediaError(
                    f"{piece.where}: none of its object's media falls inside it, placed by its ts_offset "
                    f"({format_timestamp(piece.ts_offset)})"
                )
            for packet in packets:
                packet.stream = target
                try:
                    self.out.mux(packet)
                except av.FFmpegError as exc:
                    if exc.errno != errno.EINVAL:  # the disk, say: not the media
                        raise MediaError(f"{self.output}: cannot write it ({exc.strerror})") from None
                    at = "?" if packet.pts is None else format_timestamp(to_ns(packet.pts, base))
                    raise MediaError(
                        f"{piece.where}: its packet at {at} cannot follow the ones before it in {self.output.name} "
                        f"({exc.strerror}); do segments of the Flow overlap in their media?"
                    ) from None

    def _pictures(self, piece: _Piece, stream: Any, packets: list[Any], keep: Cut, target: Any) -> list[Any]:
        """The packets of the video pictures ``keep`` holds: copied when they make whole groups
        of pictures, else decoded and re-encoded (see ``trim``)."""
        run = copyable(packets, Fraction(stream.time_base), keep)
        if run is not None:
            return run
        if piece.flow not in self.reencoders:
            instead = (
                "export without --exact (cut at segment boundaries)"
                if not piece.partial
                else "the segment uses part of its object, and only re-encoding can cut it there"
            )
            self.reencoders[piece.flow] = ReEncoder(stream, piece.where, instead)
        delay = next((p.pts - p.dts for p in packets if p.pts is not None and p.dts is not None), 0)
        return self.reencoders[piece.flow].encode(frames_in(packets, stream, keep), delay, target)

    def close(self) -> None:
        self._flush(closing=True)
        try:
            self.out.close()
        except av.FFmpegError as exc:
            raise MediaError(f"{self.output}: cannot finish writing it ({exc.strerror})") from None

    def abandon(self) -> None:
        """Let the file go unfinished (it is deleted): whatever closing it says is moot."""
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.out.close()


def _audio_kept(piece: _Piece, keep: Cut, packet: Any, base: Fraction) -> bool:
    """An audio packet (or a video one wholly inside) is written when it starts inside the
    piece's part of its object, and overlaps the export's range: audio is cut at the packet that
    holds the range's edge, never re-encoded."""
    start = to_ns(packet.pts, base)
    if piece.partial and not (piece.start <= start < piece.end):
        return False  # neighbouring pieces never both hold one instant
    return keep.keeps(start, start + to_ns(packet.duration or 0, base))


def _pcm_within(packet: Any, keep: Cut, stream: Any) -> Any | None:
    """A PCM packet cut to the samples ``keep`` holds: uncompressed audio is cut at the sample,
    not at the packet (its packets are only byte runs of whole samples)."""
    ctx, base = stream.codec_context, Fraction(stream.time_base)
    frame = pcm_frame_bytes(ctx)
    data = bytes(packet)
    count, rate = len(data) // frame, int(ctx.sample_rate)
    start = int(packet.pts) * base  # seconds, exact

    def samples_before(ns: int | None, default: int) -> int:  # of the packet's samples, those before ns
        if ns is None:
            return default
        return min(count, max(0, math.ceil((Fraction(ns, NS) - start) * rate)))

    first, last = samples_before(keep.start, 0), samples_before(keep.end, count)
    if (first, last) == (0, count):
        return packet
    if first >= last:
        return None
    cut = av.Packet(data[first * frame : last * frame])
    cut.pts = packet.pts + int(Fraction(first, rate) / base)
    cut.dts = cut.pts
    cut.duration = int(Fraction(last - first, rate) / base)
    cut.time_base = packet.time_base
    return cut


@contextlib.contextmanager
def _opened(piece: _Piece, data: bytes) -> Iterator[tuple[Any, Any]]:
    """A segment's object opened for reading, with its (one) video or audio stream; what FFmpeg
    cannot read is a MediaError naming the segment."""
    try:
        source: Any = av.open(io.BytesIO(data))
    except av.FFmpegError as exc:
        raise MediaError(f"{piece.where}: its object holds no media FFmpeg can read ({exc.strerror})") from None
    try:
        stream = next((s for s in source.streams if s.type in ("video", "audio")), None)
        if stream is None:
            raise MediaError(f"{piece.where}: its object holds no video or audio stream")
        yield source, stream
    finally:
        source.close()

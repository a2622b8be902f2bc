"""Cutting media into TAMS segments without re-encoding (PyAV: FFmpeg's libraries, no ffmpeg
binary).

The input is demuxed once; each video and audio stream's packets are gathered into segments and
each segment is remuxed on its own into an MPEG-TS object, or a fragmented MP4 (CMAF) media
segment with its stream's init segment beside it (its packets, their timestamps kept).
A video segment starts at a key frame and is cut at the first key frame at least
``target_ns`` after its start, so it is never shorter than a GOP (but the last); an audio
segment is cut at the first packet at least ``target_ns`` after its start. Times are integer
nanoseconds from the packets' timestamps and the stream's rational time base (floor). A segment
runs from the earliest presentation time of its packets to the next segment's, so consecutive
segments leave no gap and no overlap, and each covers exactly the pictures its object holds,
open GOPs included (pictures shown before a key frame but decoded after it).

This is CPU work: callers run it in a thread (``ingest`` does), never on an event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from tamstore.domain.tai import now_tai
from tamstore.domain.timerange import format_timestamp
from tamstore.media.essence import audio_parameters, pcm_frame_bytes, video_parameters
from tamstore.media.fmp4 import CmafRemuxer, mux_packets

__all__ = ["CONTAINERS", "WAV", "CutSegment", "Essence", "MediaError", "Segmenter", "to_ns"]

NS = 1_000_000_000
SHIFT_STEP = 10_000_000  # 10 ms: a whole number of ticks of every usual time base
# FFmpeg's options for a second, further look at a file whose streams it did not all describe.
DEEP_PROBE = {"probesize": str(512 * 2**20), "analyzeduration": str(600 * 10**6)}  # bytes; microseconds
HEAD_PACKETS = 512  # packets read before deciding the shift (the first of every stream, usually)
# Where the input's timestamps go back (two recordings joined, an encoder restarted), what comes
# after is placed this long after the latest media before it: room for the other streams' packets
# still to come on the old timeline (a muxer interleaves streams within well under a second).
REJOIN_GAP = NS

# Codecs tamstore can describe as TAMS Flows, by FFmpeg codec name: the MIME type the spec uses.
CODECS = {
    "h264": "video/h264",
    "hevc": "video/h265",
    "mpeg2video": "video/mp2v",
    "aac": "audio/aac",
    "mp2": "audio/mpeg",
    "mp3": "audio/mpeg",
    "ac3": "audio/ac3",
    "eac3": "audio/eac3",
    "pcm_s16le": "audio/x-raw-int",
    "pcm_s24le": "audio/x-raw-int",
    "pcm_s32le": "audio/x-raw-int",
}
# Uncompressed audio (broadcast's usual kind, as in MXF) is segmented as WAV files, whatever the
# container of the other Flows: as the spec's own example of such a Flow is. A WAV file has no
# timestamps of its own (its samples start at 0), so each segment says where it goes with its
# ``ts_offset``.
WAV = "audio/wav"


# The containers a segment's object may be in, by name: the MIME type the Flow records, per kind.
CONTAINERS = {
    "mp2t": {"video": "video/mp2t", "audio": "video/mp2t"},
    "cmaf": {"video": "video/mp4", "audio": "audio/mp4"},
}


class MediaError(Exception):
    """The input cannot be read as media, or holds nothing tamstore can segment."""


def to_ns(ticks: int, time_base: Fraction) -> int:
    """``ticks`` of ``time_base`` as integer nanoseconds (floor): exact for every time base
    whose tick is a whole number of nanoseconds, and the same answer for the same tick always."""
    return ticks * time_base.numerator * NS // time_base.denominator


@dataclass(frozen=True)
class Essence:
    """One stream of the input as a TAMS Flow would describe it."""

    index: int
    kind: str  # "video" or "audio"
    codec: str  # MIME type (flow "codec")
    essence_parameters: dict[str, Any]
    time_base: Fraction
    bit_rate: int | None  # bits per second, when the input says

    @property
    def container(self) -> str | None:
        """The container its objects are in whatever the ingest's (None: the ingest's)."""
        return WAV if self.codec == "audio/x-raw-int" else None


@dataclass
class CutSegment:
    """One segment of one stream: its object's bytes and what TAMS records of it."""

    stream: int
    start_ns: int
    end_ns: int
    data: bytes
    packets: int
    key_frames: int
    samples: int | None = None  # audio: samples in the segment
    init: bytes | None = None  # CMAF: the init segment the object is decoded after
    media_start_ns: int | None = None  # the object's own first timestamp, when not ``start_ns`` (WAV: 0)


@dataclass
class _Pending:
    packets: list[Any] = field(default_factory=list)
    start: int = 0  # pts of the first presented packet, in stream ticks (once there are packets)
    settled: bool = False  # no later packet can be presented before ``start``

    def add(self, packet: Any) -> None:
        if not self.packets or (packet.pts < self.start and not self.settled):
            self.start = packet.pts
        self.packets.append(packet)

    def settles(self, packet: Any, kind: str) -> bool:
        """Whether ``start`` is final once ``packet`` (just added) is in. Audio is presented in
        the order it is decoded. A video segment begins at a key frame; in an open GOP (MPEG-2's
        and HEVC's usual kind) pictures shown before that key frame follow it in decode order,
        up to the first picture shown after it: all leading pictures come before any trailing
        one in decode order (HEVC requires it of every stream; MPEG-2 and H.264 encoders place
        them so)."""
        self.settled = self.settled or kind == "audio" or packet.pts > self.packets[0].pts
        return self.settled


@dataclass
class _Rejoin:
    """Where the input's timestamps have gone back: the ticks each stream has been moved by since,
    and the amount (ns) of the break every stream is yet to reach. The first stream to go back
    sets it; each other moves by the same once it goes back too; a stream going back a second
    time is a new break."""

    by: dict[int, int] = field(default_factory=dict)
    ns: int = 0
    reached: set[int] = field(default_factory=set)
    awaiting_key: set[int] = field(default_factory=set)

    def move(self, packet: Any, ticks: int) -> None:
        if ticks:
            packet.pts += ticks
            if packet.dts is not None:
                packet.dts += ticks

    def went_back(self, stream: int, resume_ns: int, at_ns: int) -> int:
        """How far (ns) to move ``stream``, whose decode time ``at_ns`` went back below the
        latest media of any stream: a new break's, a whole number of ``SHIFT_STEP``s that puts
        it at ``resume_ns`` or just after; or the break the other streams have already made.
        The stream then waits for a key frame (``awaiting_key``)."""
        if not self.reached or stream in self.reached:
            self.ns = -((at_ns - resume_ns) // SHIFT_STEP) * SHIFT_STEP
            self.reached = set()
        self.reached.add(stream)
        self.awaiting_key.add(stream)
        return self.ns


class Segmenter:
    def __init__(
        self,
        source: str,
        target_ns: int = 2 * NS,
        *,
        follow: bool = False,
        container: str = "mp2t",
        live_edge: bool = False,
    ) -> None:
        if container not in CONTAINERS:
            raise ValueError(f"container {container!r}: one of {', '.join(CONTAINERS)}")
        self.cmaf = container == "cmaf"
        options: dict[str, str] = {}
        if "://" in source:
            options["rw_timeout"] = "30000000"  # microseconds: a stalled server is an error, not a hang
        if follow:
            # A live HLS playlist is read from its first segment (``live_edge``: its last), and
            # reloaded until it ends (EXT-X-ENDLIST); a growing file (MPEG-TS) is read on as it
            # grows, until stopped. (FFmpeg estimates a file's duration by reading its end: a
            # followed file has none.)
            growing = {"follow": "1", "skip_estimate_duration_from_pts": "1"}
            options.update({"live_start_index": "-1" if live_edge else "0"} if ".m3u8" in source else growing)
        self.container = _open(source, options)
        if not follow and not all(_known(s) for s in self.container.streams if CODECS.get(s.codec_context.name)):
            # A stream FFmpeg's first look (5 s) did not reach: audio muxed far from its video,
            # say. A file is looked at again, further; a live input cannot wait, and leaves it out.
            self.container.close()
            self.container = _open(source, options | DEEP_PROBE)
        self.stopped = threading.Event()  # set to end the input here, the segments in hand cut
        self.source = source
        self.target_ns = target_ns
        self.shift_ns = 0  # known once reading starts (segments())
        self._first_ns = 0
        self.first_read_tai = 0  # when the input's first packets were read (TAI ns), likewise
        # The current time on the input's own timeline, for a recording on the wall clock (the
        # ingest sets it once the input is placed): what follows a break is placed no earlier.
        self.clock: Callable[[], int] | None = None
        self.essences = [e for e in (self._describe(s) for s in self.container.streams) if e is not None]
        described = {e.index for e in self.essences}
        # What the input holds that no Flow will: said, so that a track is never lost unseen.
        self.left_out = [
            f"stream {s.index} ({s.type} {s.codec_context.name if s.codec_context else 'unknown'})"
            for s in self.container.streams
            if s.index not in described
        ]
        self.rejoined: list[str] = []  # where the timestamps went back, and where what followed went
        if not self.essences:
            raise MediaError(f"{source}: no video or audio stream of a codec tamstore can segment")
        self._streams = {e.index: self.container.streams[e.index] for e in self.essences}
        wav = {e.index for e in self.essences if e.container == WAV}
        self._cmaf = {i: CmafRemuxer(s) for i, s in self._streams.items() if i not in wav} if self.cmaf else {}

    def close(self) -> None:
        for remuxer in self._cmaf.values():
            remuxer.close()
        self.container.close()

    def duration_ns(self) -> int | None:
        """The input's duration, when the container says (not for live input)."""
        duration = self.container.duration  # microseconds (AV_TIME_BASE)
        return int(duration) * 1000 if duration else None

    def first_ns(self) -> int:
        """The earliest presentation time of the input's first packets, as the segments give it
        (after ``shift_ns``), in nanoseconds: known once the first segment has been cut."""
        return self._first_ns

    def _describe(self, stream: Any) -> Essence | None:
        kind = stream.type
        codec = CODECS.get(stream.codec_context.name)
        if kind not in ("video", "audio") or codec is None or stream.time_base is None or not _known(stream):
            return None
        ctx = stream.codec_context
        params = video_parameters(stream) if kind == "video" else audio_parameters(stream)
        return Essence(stream.index, kind, codec, params, Fraction(stream.time_base), ctx.bit_rate or None)

    def segments(self) -> Iterator[CutSegment]:
        """Every segment of every stream, in the order they complete.

        A segment ends where the next one's media starts: the earliest presentation time of its
        packets, known only once that segment has its first packet shown after its key frame
        (``_Pending.settles``). Until then the finished segment waits in ``closing``. With
        closed GOPs that is the key frame itself; with open ones, the pictures before it that
        follow it in decode order: each object then holds exactly its segment's pictures.

        Where a stream's decode times go back (two recordings joined, an encoder restarted in a
        live input), its segments so far are finished, and what follows is placed on the Flows'
        timeline ``REJOIN_GAP`` after the latest media before it, or where ``clock`` says the
        wall clock is if later (``_Rejoin``): every stream by the same amount, so they stay in
        step. Video resumes at its next key frame."""
        pending = {i: _Pending() for i in self._streams}
        closing: dict[int, _Pending] = {}  # cut, its end the next segment's start once settled
        essences = {e.index: e for e in self.essences}
        last_end: dict[int, int] = {}
        last_dts: dict[int, int] = {}
        rejoin = _Rejoin()
        try:
            for packet in self._shifted(self.container.demux(*self._streams.values())):
                if self.stopped.is_set():
                    break
                i = packet.stream.index
                e = essences[i]
                rejoin.move(packet, rejoin.by.get(i, 0))
                if packet.dts is not None:
                    if packet.dts < last_dts.get(i, packet.dts):
                        latest = max(to_ns(t, essences[j].time_base) for j, t in last_end.items())
                        self._rejoin(rejoin, e, packet, to_ns(last_dts[i], e.time_base), latest)
                        if packet.dts < last_dts[i]:  # its own packets ran on past the break's place
                            raise self._went_back(e, last_dts[i], packet.dts)
                        yield from self._finish(e, pending[i], closing, last_end[i])
                        pending[i] = _Pending()
                    last_dts[i] = packet.dts
                if i in rejoin.awaiting_key:
                    if e.kind == "video" and not packet.is_keyframe:
                        continue  # pictures that need the ones before the break: not decodable
                    rejoin.awaiting_key.discard(i)
                p = pending[i]
                if p.packets and self._due(e, packet, p.packets[0].pts):
                    if i in closing:  # a segment of one picture (intra-only video): not settled yet
                        p.settled = True
                        yield self._cut(e, closing.pop(i), p.start)
                    closing[i] = p
                    pending[i] = p = _Pending()
                p.add(packet)
                if i in closing and p.settles(packet, e.kind):
                    yield self._cut(e, closing.pop(i), p.start)
                end = packet.pts + (packet.duration or 0)
                last_end[i] = max(last_end.get(i, end), end)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.source}: cannot be read to the end ({exc})") from None
        for i, p in pending.items():
            if i in last_end:
                yield from self._finish(essences[i], p, closing, last_end[i])

    def _rejoin(self, rejoin: _Rejoin, essence: Essence, packet: Any, was_ns: int, latest_ns: int) -> None:
        """Move ``packet``, whose decode time went back from ``was_ns``, and the rest of its
        stream after the latest media before it (``_Rejoin``), and say so."""
        at_ns = to_ns(packet.dts, essence.time_base)
        resume_ns = latest_ns + REJOIN_GAP
        if self.clock is not None:  # a recording on the wall clock goes on where the clock is
            resume_ns = max(resume_ns, self.clock())
        ns = rejoin.went_back(essence.index, resume_ns, at_ns)
        ticks = self._ticks(self._streams[essence.index], ns)
        rejoin.by[essence.index] = rejoin.by.get(essence.index, 0) + ticks
        rejoin.move(packet, ticks)
        self.rejoined.append(
            f"stream {essence.index}: timestamps went back from {format_timestamp(was_ns)} to "
            f"{format_timestamp(at_ns)}; what follows is placed from {format_timestamp(at_ns + ns)} on"
        )

    def _finish(
        self, essence: Essence, pending: _Pending, closing: dict[int, _Pending], end: int
    ) -> Iterator[CutSegment]:
        """The last segments of a stream (at the end of the input, or before its timestamps go
        back): the one waiting to be closed, ended where the next begins, and that one, ended
        at ``end``, the end of the stream's last packet."""
        i = essence.index
        if i in closing:  # (the segment after it has its first packet: it was cut at one)
            yield self._cut(essence, closing.pop(i), pending.start)
        if pending.packets:
            yield self._cut(essence, pending, end)

    def _went_back(self, essence: Essence, before: int, dts: int) -> MediaError:
        """The input's decode times go back, and placing what follows later did not mend it:
        this stream's packets before the break ran on more than ``REJOIN_GAP`` past the others'."""
        was, now = (format_timestamp(max(0, to_ns(t, essence.time_base))) for t in (before, dts))
        return MediaError(
            f"{self.source}: stream {essence.index}'s timestamps go back from {was} to {now}, further than "
            "the other streams' at the same break; ingest the parts one at a time, each with its own --name "
            "and --start"
        )

    def _shifted(self, packets: Iterator[Any]) -> Iterator[Any]:
        """The packets, all moved later by ``shift_ns`` when the input starts before zero.

        Inputs often do: decoding starts before the first picture is shown (B-frames), and AAC
        starts with priming samples. An MPEG-TS muxer moves negative timestamps to zero on its
        own, which would put the first segment's object on another timeline than the next's; so
        the whole input moves instead, by the smallest whole number of ``SHIFT_STEP``s that
        makes every timestamp of its first packets non-negative, and the objects' timestamps are
        the Flows' timeline exactly (no ``ts_offset``)."""
        head: list[Any] = []
        untimed = 0
        for packet in packets:
            if packet.size == 0:
                continue  # flushing packets carry nothing
            if packet.pts is None:
                untimed += 1
                if untimed >= HEAD_PACKETS and not head:
                    break
                continue
            head.append(packet)
            if len(head) >= HEAD_PACKETS or {p.stream.index for p in head} >= set(self._streams):
                break
        if untimed and not head:  # no Flow timeline can be read from it
            raise MediaError(
                f"{self.source}: its packets carry no timestamps (a raw elementary stream?); "
                "put it in a container that has them (MPEG-TS, MP4) first"
            )
        lowest = min(
            (to_ns(min(p.pts, p.dts if p.dts is not None else p.pts), Fraction(p.time_base)) for p in head),
            default=0,
        )
        self.shift_ns = -(lowest // SHIFT_STEP) * SHIFT_STEP if lowest < 0 else 0
        ticks = {i: self._ticks(s, self.shift_ns) for i, s in self._streams.items()}

        def moved(packet: Any) -> Any:
            shift = ticks[packet.stream.index]
            if shift:
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
            return packet

        head = [moved(p) for p in head]
        self._first_ns = min((to_ns(p.pts, Fraction(p.time_base)) for p in head), default=0)
        self.first_read_tai = now_tai()
        yield from head
        for packet in packets:
            if packet.pts is not None and packet.size:
                yield moved(packet)

    def _ticks(self, stream: Any, ns: int) -> int:
        base = Fraction(stream.time_base)
        ticks = Fraction(ns, NS) / base
        if ticks.denominator != 1:
            raise MediaError(f"{self.source}: stream {stream.index}'s time base {base} cannot be shifted exactly")
        return int(ticks)

    def _due(self, essence: Essence, packet: Any, first: int) -> bool:
        """Whether ``packet`` begins the next segment. Lengths are measured from key frame to key
        frame (``first`` is the pts of the segment's first packet, its key frame): in an open
        GOP a segment starts and ends before its key frames, by about as much at either end."""
        tb = essence.time_base
        long_enough = to_ns(packet.pts, tb) - to_ns(first, tb) >= self.target_ns
        return long_enough and (essence.kind == "audio" or bool(packet.is_keyframe))

    def _cut(self, essence: Essence, pending: _Pending, end_pts: int) -> CutSegment:
        index, tb = essence.index, essence.time_base
        stream: Any = self._streams[index]
        init, media_start = None, None
        samples = None
        if essence.container == WAV:
            data, media_start = mux_packets(stream, pending.packets, "wav")[0], 0
            samples = sum(p.size for p in pending.packets) // pcm_frame_bytes(stream.codec_context)
        elif self.cmaf:
            init, data = self._cmaf[index].remux(pending.packets)
        else:
            data = remux_ts(stream, pending.packets)
        if essence.kind == "audio" and samples is None:
            frame = stream.codec_context.frame_size or 0
            samples = frame * len(pending.packets) if frame else None
        return CutSegment(
            stream=index,
            start_ns=to_ns(pending.start, tb),
            end_ns=to_ns(end_pts, tb),
            data=data,
            packets=len(pending.packets),
            key_frames=sum(1 for p in pending.packets if p.is_keyframe),
            samples=samples,
            init=init,
            media_start_ns=media_start,
        )


def _open(source: str, options: dict[str, str]) -> Any:
    try:
        return av.open(source, options=options or None)
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"{source}: cannot read it as media ({exc})") from None


def _known(stream: Any) -> bool:
    """Whether FFmpeg found what a Flow must say of the stream (a picture size; a sample rate
    and channels): a stream it has not yet seen a packet of has zeros there."""
    ctx = stream.codec_context
    if stream.type == "video":
        return bool(ctx.width and ctx.height)
    if stream.type == "audio":
        return bool(ctx.sample_rate and ctx.channels)
    return True


def remux_ts(stream: Any, packets: list[Any]) -> bytes:
    """The packets of one stream as an MPEG-TS file of their own, timestamps as they are."""
    return mux_packets(stream, packets, "mpegts")[0]

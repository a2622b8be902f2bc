"""Fragmented MP4 (CMAF) objects: one stream's packets as an init segment and a media segment.

FFmpeg's MP4 muxer, run once per segment, writes the same init segment (``ftyp`` + ``moov``,
no creation time, no edit list) every time, and a media segment (``moof`` +
``mdat`` pairs) whose decode times start at zero: it puts each file's first decode time at its
timeline's origin. A TAMS segment must carry its own place on the timeline, so every track
fragment's ``tfdt`` (base media decode time, always written as 64 bits by FFmpeg) is moved by
the segment's first decode time in the track's timescale. The boxes keep their sizes; nothing
else is rewritten.

Only the few boxes on the way to ``tfdt`` are walked (``moof`` > ``traf`` > ``tfdt``), so a
segment of any size costs a handful of header reads.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import Any

import av
from av.bitstream import BitStreamFilterContext

__all__ = ["MOVFLAGS", "CmafRemuxer", "mux_packets", "split_init"]

# Fragments at key frames; the moov written first, empty of samples; data offsets from each moof
# (so a media segment stands alone after any init segment); no trailing index (it would point
# into this one file).
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof+skip_trailer+skip_sidx"


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The boxes from ``start`` to ``end``: (type, offset, size), 64-bit sizes understood."""
    found = []
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
        elif size == 0:
            size = end - offset
        if size < 8 or offset + size > end:
            raise ValueError(f"a {kind!r} box at {offset} runs past its parent")
        found.append((kind, offset, size))
        offset += size
    return found


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """A fragmented MP4 file's init segment (everything before the first ``moof``) and the rest."""
    for kind, offset, _ in _boxes(data, 0, len(data)):
        if kind == b"moof":
            return data[:offset], data[offset:]
    raise ValueError("no movie fragment (moof) in the file")


def _place_decode_times(media: bytes, first: int) -> bytes:
    """``media`` with its track fragments' base media decode times moved together so that the
    first is ``first``."""
    out = bytearray(media)
    ticks: int | None = None
    for kind, moof, size in _boxes(out, 0, len(out)):
        if kind != b"moof":
            continue
        for kind, traf, traf_size in _boxes(out, moof + 8, moof + size):
            if kind != b"traf":
                continue
            for kind, tfdt, _ in _boxes(out, traf + 8, traf + traf_size):
                if kind != b"tfdt":
                    continue
                layout = ">Q" if out[tfdt + 8] == 1 else ">I"
                (time,) = struct.unpack_from(layout, out, tfdt + 12)
                if ticks is None:
                    ticks = first - time
                struct.pack_into(layout, out, tfdt + 12, time + ticks)
    return bytes(out)


def _rescale(ticks: int, source: Fraction, target: Fraction) -> int:
    """``ticks`` of ``source`` in ticks of ``target``, rounded to nearest (halves away from
    zero) as FFmpeg's ``av_rescale_q`` does when a packet is muxed."""
    numerator = ticks * source.numerator * target.denominator
    denominator = source.denominator * target.numerator
    half = denominator // 2
    return (numerator + half) // denominator if numerator >= 0 else -((-numerator + half) // denominator)


def mux_packets(
    template: Any, packets: list[Any], fmt: str, options: dict[str, str] | None = None
) -> tuple[bytes, Fraction]:
    """One stream's packets as a file of their own in ``fmt``, timestamps as they are, and the
    time base its stream was written in (for MP4, its track's timescale tick)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt, options=options) as out:
        target = out.add_stream_from_template(template)
        for packet in packets:
            packet.stream = target
            out.mux(packet)
        written = Fraction(target.time_base)
    return buffer.getvalue(), written


def _mux(template: Any, packets: list[Any], movflags: str) -> tuple[bytes, Fraction]:
    return mux_packets(template, packets, "mp4", {"movflags": movflags, "use_editlist": "0"})


class CmafRemuxer:
    """One stream's segments as fragmented MP4, each with the same init segment.

    The init segment is written before any packet (``empty_moov``), from the stream's
    parameters alone, so it cannot vary with a segment's content. AAC from MPEG-TS comes in
    ADTS frames, without the decoder configuration MP4 needs up front: its frames are unwrapped
    (``aac_adtstoasc``) and, once, a small MP4 of the first segment is written with the
    configuration found in them, to serve as the parameters of every init segment after."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.template: Any = stream
        self.adts: bool | None = None  # known at the first segment
        self._holder: Any = None  # the container ``template`` lives in, when it is not the input

    def remux(self, packets: list[Any]) -> tuple[bytes, bytes]:
        """The packets as (init segment, media segment), decode times as they are."""
        if self.adts is None:
            self.adts = self.stream.codec_context.name == "aac" and bytes(packets[0])[:2] in (b"\xff\xf1", b"\xff\xf9")
        first_dts = packets[0].dts if packets[0].dts is not None else packets[0].pts
        source_base = Fraction(packets[0].time_base)
        if self.adts:
            unwrap = BitStreamFilterContext("aac_adtstoasc", self.stream)
            packets = [raw for packet in packets for raw in unwrap.filter(packet)]
            if self._holder is None:
                configured, _ = _mux(self.stream, packets, MOVFLAGS.replace("empty_moov", "delay_moov"))
                self._holder = av.open(io.BytesIO(configured))
                self.template = self._holder.streams.audio[0]
        data, track_base = _mux(self.template, packets, MOVFLAGS)
        init, media = split_init(data)
        return init, _place_decode_times(media, _rescale(first_dts, source_base, track_base))

    def close(self) -> None:
        if self._holder is not None:
            self._holder.close()

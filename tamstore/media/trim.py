"""Exact cuts for ``tamstore export --exact``: only what a cut falls inside is re-encoded.

A segment of video starts at a key frame, so a range that starts or ends inside a segment
cannot be cut there by copying packets: the pictures before the cut are needed to decode the
ones after it. Those boundary segments (at most two per video Flow, whatever the range's
length) are decoded and the frames inside the range re-encoded (H.264, libx264); every other
segment is copied as it is, and so is a boundary segment cut at one of its key frames (whole
groups of pictures: ``copyable``). Audio packets decode on their own, so audio is cut at packet
boundaries, never re-encoded: it ends within one packet (about 21 ms of AAC) of the range.
(Uncompressed PCM is cut at the sample: its packets are only runs of samples; see ``export``.)
The same cuts serve the segments of an edit that use part of their objects (``export``).

The re-encoded pictures join copied ones in the same output stream, so they are made to fit:
- no B-frames, and decode times set before presentation times by the copied stream's own
  delay, so decode times still rise where the two meet;
- parameter sets with ids (31) the input's encoder does not use, carried in band, so the
  copied pictures after them still find their own;
- NAL units framed as the copied packets are (length-prefixed when the stream's configuration
  is MP4's ``avcC``, start codes otherwise), for the muxer treats a stream's packets alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from tamstore.media.segmenter import MediaError, to_ns

__all__ = ["Cut", "ReEncoder", "copyable", "frames_in"]

REENCODABLE = {"h264"}  # codecs whose boundary segments can be re-encoded here
PARAMETER_SET_ID = "31"  # the highest SPS/PPS id: an encoder's defaults start at 0


@dataclass(frozen=True)
class Cut:
    """The exact range of an export, in nanoseconds on the Flow's timeline (None: open)."""

    start: int | None
    end: int | None

    def inside(self, start_ns: int, end_ns: int) -> bool:
        """[start_ns, end_ns) needs no cut: it lies wholly inside the range."""
        return (self.start is None or start_ns >= self.start) and (self.end is None or end_ns <= self.end)

    def keeps(self, start_ns: int, end_ns: int) -> bool:
        """[start_ns, end_ns) overlaps the range."""
        return (self.start is None or end_ns > self.start) and (self.end is None or start_ns < self.end)

    def holds(self, ns: int) -> bool:
        return (self.start is None or ns >= self.start) and (self.end is None or ns < self.end)


def _annexb_to_lengths(data: bytes, size: int) -> bytes:
    """H.264 NAL units with start codes, as length-prefixed units (``size`` bytes each)."""
    units: list[bytes] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        start = i + 3
        following = data.find(b"\x00\x00\x01", start)
        end = len(data) if following < 0 else following
        unit = data[start:end]
        if following >= 0 and unit.endswith(b"\x00"):  # the next unit's four-byte start code
            unit = unit.rstrip(b"\x00")
        units.append(len(unit).to_bytes(size, "big") + unit)
        i = following
    return b"".join(units)


class ReEncoder:
    """Re-encodes the frames of boundary segments of one video stream into its packets' form."""

    def __init__(self, stream: Any, where: str, instead: str) -> None:
        codec = stream.codec_context.name
        if codec not in REENCODABLE:
            raise MediaError(
                f"{where}: a cut inside its group of pictures needs its {codec} re-encoded, "
                f"and tamstore re-encodes only H.264; {instead}"
            )
        extradata = stream.codec_context.extradata or b""
        # avcC starts with version 1; its fifth byte's low bits are the length size less one.
        self.length_size = (extradata[4] & 3) + 1 if extradata[:1] == b"\x01" else None
        self.time_base = Fraction(stream.time_base)

    def encode(self, frames: list[Any], delay: int, target: Any) -> list[Any]:
        """Packets for ``frames`` (decoded, their pts on the output's timeline, in ticks of the
        stream's time base), each decode time ``delay`` ticks before its presentation time."""
        if not frames:
            return []
        encoder: Any = av.CodecContext.create("libx264", "w")
        first = frames[0]
        encoder.width, encoder.height, encoder.pix_fmt = first.width, first.height, "yuv420p"
        encoder.time_base = self.time_base
        encoder.options = {
            "bf": "0",
            "preset": "veryfast",
            "crf": "16",  # a few pictures: quality over size
            "x264-params": f"sps-id={PARAMETER_SET_ID}:repeat-headers=1",
        }
        packets: list[Any] = []
        for frame in frames:
            picture = frame.reformat(format="yuv420p") if frame.format.name != "yuv420p" else frame
            picture.pict_type = av.video.frame.PictureType.NONE
            packets.extend(encoder.encode(picture))
        packets.extend(encoder.encode(None))
        made = []
        for packet in packets:
            if self.length_size is not None:
                framed = av.Packet(_annexb_to_lengths(bytes(packet), self.length_size))
                framed.pts, framed.duration, framed.is_keyframe = packet.pts, packet.duration, packet.is_keyframe
                packet = framed
            packet.dts = packet.pts - delay
            packet.time_base = self.time_base
            packet.stream = target
            made.append(packet)
        return made


def frames_in(packets: list[Any], stream: Any, keep: Cut) -> list[Any]:
    """The decoded frames of ``stream`` whose presentation time ``keep`` holds, from its
    ``packets`` (in decode order, their times already on the Flow's timeline)."""
    base = Fraction(stream.time_base)
    decoded = [frame for packet in packets for frame in packet.decode()]
    decoded += stream.codec_context.decode(None)  # the pictures the decoder still holds back
    return [frame for frame in decoded if frame.pts is not None and keep.holds(to_ns(frame.pts, base))]


def copyable(packets: list[Any], base: Fraction, keep: Cut) -> list[Any] | None:
    """The packets of the pictures ``keep`` holds, when they can be copied as they are: a run of
    the object's packets in decode order that starts at a key frame and needs no picture outside
    it. The only packets the run may pass over are the key frame's leading pictures (shown before
    it, decoded after it: an open GOP's B-frames), which nothing after them refers to. None when
    the pictures must be decoded and re-encoded; ``packets`` are in decode order, their times on
    the Flow's timeline."""
    inside = [i for i, p in enumerate(packets) if p.pts is not None and keep.holds(to_ns(p.pts, base))]
    if not inside:
        return []
    head = packets[inside[0]]
    if not head.is_keyframe:
        return None
    kept = set(inside)
    for i in range(inside[0], inside[-1] + 1):
        leading = packets[i].pts is not None and packets[i].pts < head.pts
        if leading == (i in kept):  # a leading picture kept (it needs the group before), or a later one left out
            return None
    return [packets[i] for i in inside]

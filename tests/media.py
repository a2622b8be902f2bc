"""Test media made in the run with PyAV: H.264 video whose frames carry their own number, and
AAC audio, in any container FFmpeg writes. A decoded frame's number is read back from its
picture, so a test can tell exactly which frames an export holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av

from tamstore.domain.timerange import TimeRange, format_timestamp

WIDTH, HEIGHT, BITS, CELL = 320, 240, 12, 16  # the number: 12 black/white cells of 16x16 in the top rows


def _picture(number: int, width: int = WIDTH, height: int = HEIGHT, noise: bytes = b"") -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    size = frame.planes[0].line_size * height
    if noise:  # a different stretch of noise each frame: a bit rate like real pictures'
        at = (number * 7919) % (len(noise) - size)
        y = bytearray(noise[at : at + size])
    else:
        y = bytearray(b"\x80" * size)
    stride = frame.planes[0].line_size
    for bit in range(BITS):
        value = 235 if number >> bit & 1 else 16
        for row in range(CELL):
            start = row * stride + bit * CELL
            y[start : start + CELL] = bytes([value]) * CELL
    frame.planes[0].update(bytes(y))
    for plane in frame.planes[1:]:
        plane.update(b"\x80" * (plane.line_size * plane.height))
    return frame


def frame_number(frame: av.VideoFrame) -> int:
    """The number drawn into a decoded frame by ``make_media``."""
    plane = frame.planes[0]
    data = bytes(plane)
    number = 0
    for bit in range(BITS):
        centre = (CELL // 2) * plane.line_size + bit * CELL + CELL // 2
        if data[centre] > 128:
            number |= 1 << bit
    return number


def make_media(
    path: Path,
    seconds: int = 20,
    fps: int = 25,
    audio: bool = True,
    gop: int = 25,
    width: int = WIDTH,
    height: int = HEIGHT,
    noise: bool = False,
    codec: str = "libx264",
    more_audio: tuple[str, ...] = (),
    pix_fmt: str = "yuv420p",
    x264_params: str = "",
    audio_codec: str = "aac",
) -> Path:
    """``seconds`` of numbered H.264 frames (B-frames, a key frame every ``gop``) and AAC stereo
    silence at 48 kHz, in the container ``path``'s extension names. ``noise`` fills the pictures
    with noise, for a realistic bit rate (benchmarks). ``codec`` "mpeg2video": MPEG-2 video
    instead, in open GOPs (B-frames shown before each key frame but decoded after it), as
    broadcast MPEG-2 usually is. ``more_audio``: further audio streams after the AAC one, of
    these FFmpeg encoders (``eac3``, ``flac`` ...), silent too. ``pix_fmt`` and ``x264_params``
    (libx264's own settings: colour, fields, aspect) describe the pictures otherwise.
    ``audio_codec`` "pcm_s24le": uncompressed audio instead of AAC (as MXF carries it)."""
    grain = os.urandom(width * height * 2) if noise else b""
    out = av.open(str(path), "w")
    video = out.add_stream(codec, rate=fps)
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    if codec == "libx264":
        video.options = {"g": str(gop), "bf": "2", "preset": "ultrafast", "sc_threshold": "0"}
        if x264_params:
            video.options = {**video.options, "x264-params": x264_params}
    else:
        video.options = {"g": str(gop), "bf": "2", "b": "2M"}
    sounds = []
    for name in (audio_codec, *more_audio) if audio else ():
        sound = out.add_stream(name, rate=48000)
        sound.layout = "stereo"
        sounds.append(sound)
    for i in range(seconds * fps):
        picture = _picture(i, width, height, grain)
        if pix_fmt != "yuv420p":
            picture = picture.reformat(format=pix_fmt)
        picture.pts = i
        for packet in video.encode(picture):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    for sound in sounds:
        size = sound.codec_context.frame_size or 1024
        for n in range(seconds * 48000 // size + 1):
            frame = av.AudioFrame(format=sound.codec_context.format.name, layout="stereo", samples=size)
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate, frame.pts = 48000, n * size
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    out.close()
    return path


def make_hls(directory: Path, seconds: int = 8) -> list[str]:
    """An HLS rendition of ``make_media`` (1 s MPEG-TS segments) in ``directory``; returns the
    finished playlist's lines (``index.m3u8`` is written with all of them)."""
    directory.mkdir(parents=True, exist_ok=True)
    source = make_media(directory / "source.mp4", seconds=seconds)
    playlist = directory / "index.m3u8"
    options = {"hls_time": "1", "hls_list_size": "0", "hls_segment_filename": str(directory / "seg%03d.ts")}
    with av.open(str(source)) as src, av.open(str(playlist), "w", format="hls", options=options) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return playlist.read_text().splitlines()


def write_live_playlist(directory: Path, lines: list[str], segments: int, ended: bool = False, first: int = 0) -> Path:
    """``live.m3u8``: the entries ``first`` to ``segments`` of a finished playlist, as a live one
    that is still growing (no EXT-X-ENDLIST) unless ``ended``, whose window has slid past the
    ``first`` entries; replaced atomically."""
    skip = ("#EXTINF", "#EXT-X-ENDLIST", "#EXT-X-MEDIA-SEQUENCE")
    head = [line for line in lines if line.startswith("#") and not line.startswith(skip)]
    entries = [(lines[i], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXTINF")]
    body = [*head, f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    body += [line for entry in entries[first:segments] for line in entry] + (["#EXT-X-ENDLIST"] if ended else [])
    scratch = directory / "live.m3u8.tmp"
    scratch.write_text("\n".join(body) + "\n")
    return scratch.replace(directory / "live.m3u8")


def placed_at(segments: list[dict[str, Any]], at: int, **extra: Any) -> list[dict[str, Any]]:
    """Segments of another Flow placed from ``at`` ns on, by reference: the same Objects, a
    ``ts_offset`` (how edits, e.g. BBC's simple_edit, are made). ``extra`` fields go in each."""
    first = TimeRange.from_str(segments[0]["timerange"]).start
    assert first is not None
    offset = at - first
    out = []
    for seg in segments:
        tr = TimeRange.from_str(seg["timerange"])
        assert tr.start is not None and tr.end is not None
        placed = {"object_id": seg["object_id"], "timerange": TimeRange(tr.start + offset, tr.end + offset).to_str()}
        if offset:
            placed["ts_offset"] = format_timestamp(offset)
        out.append({**placed, **extra})
    return out

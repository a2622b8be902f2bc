"""Media in and out (issue 18): ``tamstore ingest`` and ``tamstore export`` as a user runs them,
against a real server on each backend pairing, with media made in the run (numbered H.264
frames and AAC). Exports are decoded and every frame is checked by the number drawn into it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tamstore.client import TamsApiError, TamsClient
from tamstore.config import Settings
from tamstore.domain.timerange import TimeRange, format_timestamp, parse_timestamp
from tamstore.media.segmenter import to_ns
from tamstore.testing import SpecSchemas
from tests.live import LiveServer
from tests.media import frame_number, make_media, placed_at

FRAMES = 500  # 20 s at 25 fps
AUDIO_PACKETS = 939  # 20 s of 48 kHz AAC, 1,024 samples a packet, with priming


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "numbered.mp4")


def tamstore(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tamstore", *args], capture_output=True, text=True, timeout=timeout, env=os.environ
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def ingest(server: LiveServer, media: Path, *extra: str) -> dict[str, Any]:
    done = tamstore("ingest", str(media), "--server", server.url, "--json", *extra)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def decoded(path: Path) -> tuple[list[int], list[int], int]:
    """The frame numbers, their presentation times (in the stream's ticks) and the audio
    samples of a media file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(audio=0)) if any(s.type == "audio" for s in c.streams) else 0
    return [frame_number(f) for f in frames], [int(f.pts) for f in frames], samples


def test_ingest_describes_the_input_and_covers_it(server: LiveServer, media: Path, schemas: SpecSchemas) -> None:
    ids = ingest(server, media)
    assert ids["segments"] == 20 and ids["skipped"] == 0
    with TamsClient(server.url) as tams:
        multi = tams.get_flow(ids["flow_id"])
        schemas.check("flow-get.json", multi)
        assert multi["format"] == "urn:x-nmos:format:multi"
        assert {m["id"] for m in multi["flow_collection"]} == set(ids["flows"].values())
        video, audio = tams.get_flow(ids["flows"]["video"]), tams.get_flow(ids["flows"]["audio"])
        for flow in (video, audio):
            schemas.check("flow-get.json", flow)
            assert flow["container"] == "video/mp2t" and flow["avg_bit_rate"] > 0
        assert video["codec"] == "video/h264" and audio["codec"] == "audio/aac"
        assert video["essence_parameters"] == {
            "frame_width": 320,
            "frame_height": 240,
            "frame_rate": {"numerator": 25, "denominator": 1},
            "interlace_mode": "progressive",
            "bit_depth": 8,
            "component_type": "YCbCr",
            "horiz_chroma_subs": 2,
            "vert_chroma_subs": 2,
            "avc_parameters": {"profile": 77, "flags": 64, "level": 13},  # Main, level 1.3: avc1.4d400d
        }
        assert audio["essence_parameters"] == {
            "sample_rate": 48000,
            "channels": 2,
            "codec_parameters": {"coded_frame_size": 1024, "mp4_oti": 2},  # AAC-LC
        }
        multi_source = tams.get_source(ids["source_id"])
        schemas.check("source.json", multi_source)
        assert {s["id"] for s in multi_source["source_collection"]} == set(ids["sources"].values())
        for role, packets in (("video", FRAMES), ("audio", AUDIO_PACKETS)):
            segments = list(tams.segments(ids["flows"][role]))
            ranges = [TimeRange.from_str(s["timerange"]) for s in segments]
            assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False)), role  # no gap, no overlap
            assert len(segments) == 10
            if role == "video":
                assert all(s["key_frame_count"] >= 1 for s in segments)
                assert ranges[0].start == 80_000_000 and ranges[-1].end == 20_080_000_000  # B-frame delay moved
            else:
                assert sum(s["sample_count"] for s in segments) == packets * 1024


def test_a_flow_says_what_its_pictures_are(server: LiveServer, tmp_path: Path, schemas: SpecSchemas) -> None:
    """Broadcast pictures: 10-bit HLG HDR, interlaced top field first, 16:15 pixels (as
    625-line SD's are). The Flow says so in TAMS's terms, and HLS and DASH tell players it is
    HLG; what an input leaves unspecified (the test media's colour) is left out."""
    settings = "colorprim=bt2020:transfer=arib-std-b67:colormatrix=bt2020nc:tff=1:sar=16/15"
    source = make_media(tmp_path / "hdr.ts", seconds=4, pix_fmt="yuv420p10le", x264_params=settings)
    ids = ingest(server, source, "--container", "cmaf")
    with TamsClient(server.url) as tams:
        video = tams.get_flow(ids["flows"]["video"])
    schemas.check("flow-get.json", video)
    params = video["essence_parameters"]
    assert {k: params[k] for k in params if k not in ("frame_width", "frame_height", "frame_rate")} == {
        "interlace_mode": "interlaced_tff",
        "colorspace": "BT2100",
        "transfer_characteristic": "HLG",
        "bit_depth": 10,
        "component_type": "YCbCr",
        "horiz_chroma_subs": 2,
        "vert_chroma_subs": 2,
        "pixel_aspect_ratio": {"numerator": 16, "denominator": 15},
        "aspect_ratio": {"numerator": 64, "denominator": 45},  # 320x240 of 16:15 pixels
        "avc_parameters": {"profile": 110, "flags": 0, "level": 21},  # High 10, level 2.1 (interlaced)
        "init_segments": True,
    }
    hls = httpx.get(f"{server.url}/x-tamstore/hls/{ids['flow_id']}.m3u8").text
    assert "VIDEO-RANGE=HLG" in hls, hls
    mpd = httpx.get(f"{server.url}/x-tamstore/dash/{ids['flow_id']}.mpd").text
    assert '<SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:TransferCharacteristics" value="18"/>' in mpd


def test_uncompressed_audio_becomes_a_flow_of_wav_segments(
    server: LiveServer, tmp_path: Path, schemas: SpecSchemas
) -> None:
    """Broadcast's usual file: MXF with MPEG-2 video and 24-bit PCM audio. The PCM becomes an
    audio/x-raw-int Flow of WAV segments (as the spec's own example of such a Flow), each placed
    by its ts_offset (WAV has no timestamps of its own); it was left out as not ingested. It
    exports with every sample to a file that holds PCM, and a file that cannot is one line."""
    source = make_media(tmp_path / "broadcast.mxf", seconds=4, codec="mpeg2video", audio_codec="pcm_s24le")
    with av.open(str(source)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    ids = ingest(server, source, "--container", "cmaf")  # PCM is WAV whatever the other Flows' container
    assert ids["not_ingested"] == []
    with TamsClient(server.url) as tams:
        audio = tams.get_flow(ids["flows"]["audio"])
        schemas.check("flow-get.json", audio)
        assert (audio["codec"], audio["container"]) == ("audio/x-raw-int", "audio/wav")
        assert audio["essence_parameters"] == {
            "sample_rate": 48000,
            "channels": 2,
            "bit_depth": 24,
            "unc_parameters": {"unc_type": "interleaved"},
        }
        segments = list(tams.segments(ids["flows"]["audio"]))
        assert sum(s["sample_count"] for s in segments) == samples
        for segment in segments:
            # a WAV object's samples start at 0: its ts_offset is where the segment starts
            assert parse_timestamp(segment["ts_offset"]) == TimeRange.from_str(segment["timerange"]).start
            assert "init_object" not in segment
        assert tams.download(segments[1]["get_urls"][0]["url"])[:4] == b"RIFF"
    out = tmp_path / "out.mov"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
    numbers, pts, exported = decoded(out)
    assert numbers == list(range(100)) and exported == samples
    with av.open(str(out)) as c:  # in step: the audio starts where the video does, as in the input
        starts = {s.type: float(s.start_time * s.time_base) for s in c.streams}
    with av.open(str(source)) as c:
        given = {s.type: float(s.start_time * s.time_base) for s in c.streams}
    assert abs((starts["audio"] - starts["video"]) - (given["audio"] - given["video"])) < 0.001, (starts, given)
    # --exact cuts PCM at the sample: what [first + 1.0123 s, first + 2.5 s) holds, not whole packets
    first = TimeRange.from_str(segments[0]["timerange"]).start
    assert first is not None
    lo, hi = first + 1_012_300_000, first + 2_500_000_000
    cut = tmp_path / "cut.wav"
    args = ["--flow-id", ids["flows"]["audio"], "--timerange", TimeRange(lo, hi).to_str(), "--exact", "-o", str(cut)]
    tamstore("export", "--server", server.url, *args)
    with av.open(str(cut)) as c:
        held = sum(f.samples for f in c.decode(audio=0))
    assert held == -(-(hi - first) * 48000 // 10**9) + (-(lo - first) * 48000 // 10**9)  # ceil less ceil
    for refused in ("x.mp4", "x.ts"):  # MPEG-TS kept PCM silently as a data stream, MP4 failed at its end
        out = tmp_path / refused
        done = tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out), check=False)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and "cannot hold pcm_s24le" in lines[0], done.stderr
        assert not out.exists()
    playlist = httpx.get(f"{server.url}/x-tamstore/hls/{ids['flow_id']}.m3u8").text  # the video plays
    assert playlist.count("#EXT-X-STREAM-INF") == 1 and "TYPE=AUDIO" not in playlist, playlist


def test_export_of_all_and_of_a_range_holds_exactly_the_frames(server: LiveServer, media: Path, tmp_path: Path) -> None:
    ids = ingest(server, media)
    for ext in ("ts", "mp4", "mkv"):
        out = tmp_path / f"all.{ext}"
        tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
        numbers, pts, samples = decoded(out)
        assert numbers == list(range(FRAMES)), ext  # none dropped or doubled at the joins
        assert samples == AUDIO_PACKETS * 1024, ext
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), ext
    # [4 s, 8 s) overlaps the segments [2.08, 4.08), [4.08, 6.08) and [6.08, 8.08): frames 50-199
    part = tmp_path / "part.mp4"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "--timerange", "[4:0_8:0)", "-o", str(part))
    numbers, _, samples = decoded(part)
    assert numbers == list(range(50, 200))
    assert abs(samples - 6 * 48000) < 3 * 1024  # three audio segments: within a packet or so
    video_only = tmp_path / "video.ts"
    tamstore("export", "--server", server.url, "--flow-id", ids["flows"]["video"], "-o", str(video_only))
    assert decoded(video_only)[0] == list(range(FRAMES))


def test_open_gop_media_is_cut_where_each_object_s_pictures_begin(server: LiveServer, tmp_path: Path) -> None:
    """MPEG-2 in open GOPs (broadcast's usual kind): the B-frames shown just before a key frame
    are decoded after it, so they travel in the key frame's object. Each segment covers exactly
    the pictures its object holds, from the first one shown, and segments meet without
    overlapping (they overlapped once, and the ingest was refused). Export holds every frame
    once, in order. An edit using an object from one of its key frames on is copied without
    that key frame's leading B-frames; one cutting inside a group of pictures is refused in one
    line (only H.264 is re-encoded)."""
    source = make_media(tmp_path / "open-gop.ts", seconds=8, gop=12, codec="mpeg2video")
    ids = ingest(server, source)
    with TamsClient(server.url) as tams:
        segments = list(tams.segments(ids["flows"]["video"]))
        assert len(segments) >= 3
        ranges = [TimeRange.from_str(s["timerange"]) for s in segments]
        assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
        for segment, timerange in zip(segments, ranges, strict=True):
            obj = tmp_path / "object.ts"
            obj.write_bytes(tams.download(segment["get_urls"][0]["url"]))
            with av.open(str(obj)) as c:
                stream = c.streams.video[0]
                packets = [p for p in c.demux(stream) if p.pts is not None]
            first, last = min(packets, key=lambda p: p.pts), max(packets, key=lambda p: p.pts)
            held = TimeRange(to_ns(first.pts, stream.time_base), to_ns(last.pts + last.duration, stream.time_base))
            assert held == timerange
            keys = [to_ns(p.pts, stream.time_base) for p in packets if p.is_keyframe]
        out = tmp_path / "all.mkv"
        tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
        assert decoded(out)[0] == list(range(8 * 25))
        # Edits of the last segment: from its second key frame on, and a few pictures inside a GOP.
        frame, origin, end = 40_000_000, ranges[0].start, ranges[-1].end
        assert origin is not None and end is not None and len(keys) >= 2
        video = tams.get_flow(ids["flows"]["video"])
        for n, used in enumerate([(keys[1], end), (keys[1] + 2 * frame, keys[1] + 5 * frame)]):
            edit = {k: video[k] for k in ("format", "codec", "container", "essence_parameters")}
            edit.update(id=f"0d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f2{n}", source_id="5d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f20")
            tams.put_flow(edit)
            assert tams.post_segments(edit["id"], [_part_of(segments[-1], used, 100 * 10**9)]) == []
            args = ["--server", server.url, "--flow-id", edit["id"], "-o", str(tmp_path / f"edit{n}.ts")]
            done = tamstore("export", *args, check=n == 0)
            if n == 0:
                assert decoded(tmp_path / "edit0.ts")[0] == list(range((keys[1] - origin) // frame, 8 * 25))
            else:
                lines = done.stderr.strip().splitlines()
                assert done.returncode != 0 and len(lines) == 1 and "re-encodes only H.264" in lines[0], done.stderr


def test_every_audio_track_becomes_a_flow_or_is_named(server: LiveServer, tmp_path: Path) -> None:
    """Broadcast files carry several audio tracks. E-AC-3 becomes a Flow beside AAC; a codec
    tamstore cannot describe (FLAC) is named as not ingested, never dropped unseen. The HLS
    playlist tells players what each audio Flow is."""
    source = make_media(tmp_path / "tracks.mkv", seconds=4, more_audio=("eac3", "flac"))
    done = tamstore("ingest", str(source), "--server", server.url, "--json")
    ids = json.loads(done.stdout)
    assert set(ids["flows"]) == {"video", "audio", "audio2"}
    assert ids["not_ingested"] == ["stream 3 (audio flac)"]
    assert "not ingested: stream 3 (audio flac): tamstore makes Flows of video/h264" in done.stderr
    with TamsClient(server.url) as tams:
        assert tams.get_flow(ids["flows"]["audio2"])["codec"] == "audio/eac3"
        assert len(list(tams.segments(ids["flows"]["audio2"]))) >= 2
    playlist = httpx.get(f"{server.url}/x-tamstore/hls/{ids['flow_id']}.m3u8").text
    assert 'CODECS="avc1.' in playlist and "ec-3" in playlist, playlist


def test_start_places_the_media_and_export_follows(server: LiveServer, media: Path, tmp_path: Path) -> None:
    ids = ingest(server, media, "--start", "1000:0", "--name", "placed")
    with TamsClient(server.url) as tams:
        first = next(iter(tams.segments(ids["flows"]["audio"])))
        assert TimeRange.from_str(first["timerange"]).start == 1000 * 10**9  # audio starts first
        video = list(tams.segments(ids["flows"]["video"]))
        assert video[0]["ts_offset"] != "0:0"
    out = tmp_path / "placed.mp4"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
    assert decoded(out)[0] == list(range(FRAMES))


def test_start_now_records_on_the_wall_clock(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """``--start now`` puts the input on the TAI wall clock (so retention and playlists' dates
    work), each run after what the Flows already hold; a live HLS playlist is then read from
    its live edge, not from the past its window holds."""
    from tamstore.domain.tai import now_tai
    from tests.media import make_hls, write_live_playlist

    before = now_tai()
    first = ingest(server, media, "--start", "now", "--name", "recorder")
    assert before - 10**7 <= parse_timestamp(first["start"]) <= now_tai()
    again = ingest(server, media, "--start", "now", "--name", "recorder")  # a 20 s input, in under 20 s
    assert again["segments"] == 20 and again["skipped"] == 0
    start = parse_timestamp(first["start"])
    with TamsClient(server.url) as tams:
        for role, flow_id in first["flows"].items():
            ranges = [TimeRange.from_str(s["timerange"]) for s in tams.segments(flow_id)]
            assert len(ranges) == 20 and all(a.end <= b.start for a, b in zip(ranges, ranges[1:], strict=False))
            assert ranges[0].start == start if role == "audio" else ranges[0].start > start  # audio starts first
            assert ranges[10].start >= ranges[9].end >= start + 19 * 10**9  # the second run after the first
        playlist = tams.request("GET", f"/x-tamstore/hls/{first['flows']['video']}.m3u8").text
        assert "#EXT-X-PROGRAM-DATE-TIME:" in playlist
    lines = make_hls(tmp_path / "hls", seconds=8)
    live = write_live_playlist(tmp_path / "hls", lines, 4)  # entries 0-3 so far, [3 s, 4 s) the last
    proc = subprocess.Popen(
        [sys.executable, "-m", "tamstore", "ingest", str(live), "--server", server.url, "--follow", "--json"]
        + ["--start", "now", "--segment-duration", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    write_live_playlist(tmp_path / "hls", lines, 8, ended=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    clip = tmp_path / "live-edge.mp4"
    tamstore("export", "--server", server.url, "--flow-id", json.loads(out)["flow_id"], "-o", str(clip))
    assert decoded(clip)[0] == list(range(75, 200))


def test_a_range_may_be_given_in_utc() -> None:
    """For a wall-clock recording, as the Web UI shows it: a bound that is a UTC date-time is
    taken to TAI (``iso_to_tai``, tested with the domain), the rest of the grammar as it is."""
    from tamstore.media.commands import _timerange

    assert _timerange(None) is None
    assert _timerange("[0:0_10:0)") == TimeRange(0, 10 * 10**9)
    new_year = (1483228800 + 37) * 10**9  # 2017-01-01T00:00:00Z in TAI
    assert _timerange("[2017-01-01T00:00:00Z_2017-01-01T01:00:00.000001+01:00]") == TimeRange.from_bounds(
        new_year, new_year + 1000, end_inclusive=True
    )
    assert _timerange("(2017-01-01T00:00:00Z_)") == TimeRange.from_bounds(new_year, None, start_inclusive=False)


def test_running_again_skips_and_a_killed_ingest_completes(server: LiveServer, media: Path, tmp_path: Path) -> None:
    again = ingest(server, media)
    assert again["segments"] == 20
    assert ingest(server, media)["skipped"] == 20
    # kill -9 part-way, then run again: complete, nothing twice
    slow = make_media(tmp_path / "long.mp4", seconds=60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tamstore", "ingest", str(slow), "--server", server.url, "--jobs", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with TamsClient(server.url) as tams:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            flows = [f for f in tams.flows(label="long.mp4 (video)")]
            if flows and len(list(tams.segments(flows[0]["id"]))) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = json.loads(tamstore("ingest", str(slow), "--server", server.url, "--json").stdout)
        assert done["skipped"] >= 5 and done["skipped"] + done["segments"] == 60
        for flow_id in done["flows"].values():
            ranges = [TimeRange.from_str(s["timerange"]) for s in tams.segments(flow_id)]
            assert len(ranges) == 30
            assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))


def test_timestamps_that_go_back_continue_later_on_the_timeline(server: LiveServer, tmp_path: Path) -> None:
    """Two recordings joined end to end (or a live encoder restarted): where the timestamps go
    back, what follows is placed a second after the latest media before it, every stream by the
    same amount, and the ingest says so. It was refused, which stopped a live ingest for good."""
    part = make_media(tmp_path / "part.ts", seconds=3)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(part.read_bytes() * 2)
    done = tamstore("ingest", str(joined), "--server", server.url, "--json")
    ids = json.loads(done.stdout)
    assert len(ids["rejoined"]) == 2 and "rejoined: stream 0: timestamps went back" in done.stderr
    with TamsClient(server.url) as tams:
        starts = {}
        for role in ("video", "audio"):
            ranges = [TimeRange.from_str(s["timerange"]) for s in tams.segments(ids["flows"][role])]
            [break_at] = [n for n, (a, b) in enumerate(zip(ranges, ranges[1:], strict=False), 1) if a.end != b.start]
            before, after = ranges[break_at - 1], ranges[break_at]
            assert before.end is not None and after.start is not None
            assert 10**9 <= after.start - before.end <= 2 * 10**9, role  # REJOIN_GAP on from the latest
            starts[role] = (ranges[0].start, after.start)
        # both streams moved by the same: their offsets from each other are the first part's
        (v0, v1), (a0, a1) = starts["video"], starts["audio"]
        assert v0 is not None and a0 is not None and v1 - v0 == a1 - a0
    out = tmp_path / "joined.mkv"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
    numbers, _, samples = decoded(out)
    assert numbers == [*range(75), *range(75)] and samples == 2 * decoded(part)[2]  # every frame and sample
    again = json.loads(tamstore("ingest", str(joined), "--server", server.url, "--json").stdout)
    assert again["segments"] == 0 and again["skipped"] == 8  # the same placement: nothing twice


def test_a_wall_clock_recording_goes_on_where_the_clock_is_after_a_break(server: LiveServer, tmp_path: Path) -> None:
    """A live encoder restarted, recorded with ``--start now``: what follows its break is placed
    where the wall clock is, not a second after the media before it, which would put the rest
    of the recording behind the clock by however long the encoder was away."""
    from tamstore.domain.tai import now_tai

    part = make_media(tmp_path / "part.ts", seconds=3)
    growing = tmp_path / "restarted.ts"
    growing.write_bytes(part.read_bytes())
    proc = _follow(server, growing, "--start", "now")
    time.sleep(6)  # the encoder is away
    restarted = now_tai()
    with growing.open("ab") as f:
        f.write(part.read_bytes())  # back, its timestamps from zero again
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ids = json.loads(out)
    assert len(ids["rejoined"]) == 2
    with TamsClient(server.url) as tams:
        ranges = [TimeRange.from_str(s["timerange"]) for s in tams.segments(ids["flows"]["video"])]
    [after] = [b for a, b in zip(ranges, ranges[1:], strict=False) if a.end != b.start]
    assert after.start is not None and after.start >= restarted - 10**8  # on the clock, not 2 s behind it


def test_bad_input_and_refusals_are_one_line(server: LiveServer, tmp_path: Path, media: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not media at all" * 100)
    part = make_media(tmp_path / "part.ts", seconds=3)
    raw = tmp_path / "raw.h264"  # an elementary stream: no timestamps at all
    with av.open(str(part)) as src, av.open(str(raw), "w", format="h264") as out:
        copy = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.size:
                packet.stream = copy
                out.mux(packet)
    for args in (
        ["ingest", str(junk), "--server", server.url],
        ["ingest", str(raw), "--server", server.url],
        ["ingest", str(tmp_path / "missing.mp4"), "--server", server.url],
        ["ingest", str(media), "--server", "http://127.0.0.1:9"],
        ["export", "--server", server.url, "--flow-id", "0b5c3a57-3d24-4d6b-a7b0-2f8c6fd0e5a1", "-o", "x.mp4"],
        ["ingest", str(media), "--server", server.url, "--segment-duration", "0"],
    ):
        done = tamstore(*args, check=False, timeout=120)
        assert done.returncode != 0, args
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tamstore: error:"), (args, done.stderr[-2000:])
        assert (str(raw) not in args) or "carry no timestamps" in lines[0], lines
    with TamsClient(server.url) as tams:  # an input refused before its first segment leaves no Flow
        assert [f["label"] for f in tams.flows() if f.get("label", "").startswith("raw.h264")] == []


def test_an_ingest_failing_part_way_keeps_its_flows_and_what_they_hold(tmp_path: Path) -> None:
    """Only a run refused before any segment takes its Flows away: one refused part way (here an
    embedded server's upload limit, met by a later, busier part of the input) keeps the Flows it
    made and the segments registered. (The test media has its audio after all its video, 25 s
    on: FFmpeg's first look at the file does not reach it, and the audio Flow was once put with a
    sample rate of 0, refused; a file is now looked at further.)"""
    size = {"width": 1280, "height": 720}
    quiet = make_media(tmp_path / "quiet.ts", seconds=25, **size)  # more than a batch of 20 registered
    busy = make_media(tmp_path / "busy.ts", seconds=4, noise=True, **size)  # segments of megabytes
    source = tmp_path / "both.ts"
    source.write_bytes(quiet.read_bytes() + busy.read_bytes())
    server = LiveServer(tmp_path / "data", TAMSTORE_MAX_OBJECT_MIB="1").start()
    try:
        args = ["ingest", str(source), "--server", server.url, "--segment-duration", "1"]
        done = tamstore(*args, check=False)
        assert done.returncode == 1 and "413" in done.stderr, done.stderr
        with TamsClient(server.url) as tams:
            flows = list(tams.flows())
            assert len(flows) == 3  # video, audio and the Flow collecting them
            video = next(f for f in flows if f["format"] == "urn:x-nmos:format:video")
            assert len(list(tams.segments(video["id"]))) >= 20  # the quiet part's first batch
    finally:
        server.stop()


def test_client_pages_retries_and_raises_with_the_error_body(server: LiveServer) -> None:
    with TamsClient(server.url) as tams:
        for i in range(7):
            tams.put_flow(
                {
                    "id": f"00000000-0000-4000-8000-00000000000{i}",
                    "source_id": f"00000000-0000-4000-8000-10000000000{i}",
                    "format": "urn:x-nmos:format:data",
                    "codec": "text/plain",
                    "container": "text/plain",
                    "essence_parameters": {},
                }
            )
        assert len(list(tams.flows(limit=2))) == 7  # four pages, followed through Link
        with pytest.raises(TamsApiError) as caught:
            tams.put_flow({"id": "00000000-0000-4000-8000-000000000000", "source_id": "x", "format": "nope"})
        assert caught.value.status == 400 and caught.value.body["type"] and caught.value.summary
        assert tams.get_flow("00000000-0000-4000-8000-0000000000ff") is None


def test_client_retries_503_honouring_retry_after() -> None:
    """A real server that is unavailable twice (503 with Retry-After), then answers."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: list[float] = []

    class Flaky(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            calls.append(time.monotonic())
            status = 503 if len(calls) <= 2 else 200
            body = b'{"type":"unavailable","summary":"busy","time":"x"}' if status == 503 else b"{}"
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if status == 503:
                self.send_header("retry-after", "1")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        with TamsClient(f"http://127.0.0.1:{http.server_address[1]}") as tams:
            assert tams.service() == {}
        assert len(calls) == 3 and calls[1] - calls[0] >= 0.9  # waited as told
    finally:
        http.shutdown()


class _DroppingProxy:
    """A real TCP proxy in front of a server that, for the first request of each listed kind,
    lets the server carry it out and then closes the client's connection instead of passing
    the answer on: a server going away mid-request, as the client sees it."""

    def __init__(self, upstream_port: int, drop: list[bytes]) -> None:
        import socket
        import threading

        self.upstream, self.drop, self.dropped = upstream_port, list(drop), []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()

    def _pipe(self, client: Any, server: Any) -> None:
        import select

        dropping = False
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        kind = next((k for k in self.drop if data.startswith(k)), None)
                        if kind is not None:  # the first of its kind: its answer goes nowhere
                            self.drop.remove(kind)
                            self.dropped.append(kind)
                            dropping = True
                        server.sendall(data)
                    elif dropping:  # the server has answered: it carried the request out
                        return
                    else:
                        client.sendall(data)
        finally:
            client.close()
            server.close()

    def close(self) -> None:
        self.listener.close()


def test_client_requests_the_server_dropped_unanswered(server: LiveServer, media: Path) -> None:
    """A GET whose answer was lost is sent again; so is a segment POST that the server carried
    out before the connection dropped, and the overlap its second sending meets is the first's
    own registration, not a refusal. Before, both ended the command (a live ingest, a sync)."""
    ids = ingest(server, media, "--name", "dropped")
    video = ids["flows"]["video"]
    proxy = _DroppingProxy(server.port, [b"GET /flows/", b"POST /flows/" + video.encode() + b"/segments"])
    try:
        with TamsClient(server.url) as direct, TamsClient(f"http://127.0.0.1:{proxy.port}") as tams:
            last = list(direct.segments(video))[-1]
            end = TimeRange.from_str(last["timerange"]).end
            assert end is not None
            assert tams.get_flow(video)["id"] == video  # its first answer dropped
            more = placed_at([last], end)
            assert tams.post_segments(video, more) == []  # carried out, its answer dropped, sent again
            assert len(proxy.dropped) == 2
            assert [s["timerange"] for s in direct.segments(video)][-1] == more[0]["timerange"]
    finally:
        proxy.close()


def test_client_oauth2_fetches_and_renews_its_token(settings: Settings, tmp_path: Path) -> None:
    from tamstore.auth import hash_secret
    from tamstore.client import ClientCredentials

    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(
        f'[[clients]]\nclient_id = "ingest"\nclient_secret = "{hash_secret("s3")}"\n'
        'scopes = ["tams-api/read", "tams-api/write"]\n'
    )
    live = LiveServer.serving(
        settings, TAMSTORE_AUTH="bearer", TAMSTORE_AUTH_FILE=str(auth_file), TAMSTORE_TOKEN_LIFETIME="31"
    )
    try:
        auth = ClientCredentials(live.url + "/x-tamstore/oauth2/token", "ingest", "s3")
        with TamsClient(live.url, auth=auth) as tams:
            assert list(tams.flows()) == []
            first = auth._token
            time.sleep(1.2)  # 31 s tokens are renewed 30 s before they expire: at once
            assert list(tams.flows()) == []
            assert auth._token != first
        with pytest.raises(TamsApiError) as caught, TamsClient(live.url) as anonymous:
            list(anonymous.flows())
        assert caught.value.status == 401
    finally:
        live.stop()


def test_readmes_media_commands_work_as_written(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """README's "Using it" path: ingest a file, export a clip (the server, file and id substituted)."""
    import re
    import shlex

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)\n```", text, flags=re.S) if "tamstore ingest" in b)
    ingest_line, export_line, exact_line = block.splitlines()
    (tmp_path / "programme.mp4").write_bytes(media.read_bytes())

    def run(line: str) -> str:
        args = shlex.split(line.replace("http://127.0.0.1:8000", server.url))
        assert args[0] == "tamstore"
        done = subprocess.run(
            [sys.executable, "-m", "tamstore", *args[1:]], cwd=tmp_path, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    flow_id = re.search(r"multi-essence Flow (\S+)", run(ingest_line)).group(1)  # type: ignore[union-attr]
    run(export_line.replace("FLOW_ID", flow_id))
    # [10 s, 20 s) overlaps the video segments from [8.08, 10.08) to [18.08, 20.08): frames 200-499
    assert decoded(tmp_path / "clip.mp4")[0] == list(range(200, 500))
    run(exact_line.replace("FLOW_ID", flow_id))
    # exactly: frame n is shown at 0.08 s + n * 0.04 s
    assert decoded(tmp_path / "exact.mp4")[0] == list(range(248, 498))


def _follow(server: LiveServer, playlist: Path, *extra: str) -> subprocess.Popen[str]:
    args = ["ingest", str(playlist), "--server", server.url, "--follow", "--json", "--segment-duration", "1", *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "tamstore", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _contiguous(server: LiveServer, flow_id: str) -> list[TimeRange]:
    with TamsClient(server.url) as tams:
        ranges = [TimeRange.from_str(s["timerange"]) for s in tams.segments(flow_id)]
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    return ranges


def test_an_hls_playlist_and_a_live_one_followed_to_its_end(server: LiveServer, tmp_path: Path) -> None:
    from tests.media import make_hls, write_live_playlist

    lines = make_hls(tmp_path / "hls", seconds=8)
    finished = ingest(server, tmp_path / "hls" / "index.m3u8", "--segment-duration", "1")
    assert len(_contiguous(server, finished["flows"]["video"])) == 8
    live = write_live_playlist(tmp_path / "hls", lines, 3)
    proc = _follow(server, live)
    for n in range(4, 9):  # the playlist grows while the ingest follows it
        time.sleep(0.7)
        write_live_playlist(tmp_path / "hls", lines, n)
    time.sleep(0.7)
    write_live_playlist(tmp_path / "hls", lines, 8, ended=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    ids = json.loads(out)
    assert len(_contiguous(server, ids["flows"]["video"])) == 8
    clip = tmp_path / "live.mp4"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(clip))
    assert decoded(clip)[0] == list(range(200))


def test_ctrl_c_ends_a_followed_input_cleanly(server: LiveServer, tmp_path: Path) -> None:
    from tests.media import make_hls, write_live_playlist

    lines = make_hls(tmp_path / "hls", seconds=8)
    live = write_live_playlist(tmp_path / "hls", lines, 4)  # never ends
    proc = _follow(server, live)
    with TamsClient(server.url) as tams:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            flows = list(tams.flows(label="live.m3u8 (video)"))
            if flows and list(tams.segments(flows[0]["id"])):
                break
            time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    ids = json.loads(out)
    assert len(_contiguous(server, ids["flows"]["video"])) >= 3  # what was read is all registered


def test_export_of_a_flow_made_by_reference(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """An edit that reuses another Flow's Objects, placed at 100 s with ts_offset (as BBC's
    simple_edit makes them), exports the frames those Objects hold."""
    ids = ingest(server, media)
    with TamsClient(server.url) as tams:
        source = tams.get_flow(ids["flows"]["video"])
        edit = {**{k: source[k] for k in ("format", "codec", "container", "essence_parameters")}}
        edit.update(id="0d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10", source_id="5d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10")
        tams.put_flow(edit)
        used = list(tams.segments(ids["flows"]["video"]))[2:5]  # [4.08 s, 10.08 s): frames 100-249
        placed = placed_at(used, 100 * 10**9)
        assert tams.post_segments(edit["id"], placed) == []
    out = tmp_path / "edit.mp4"
    tamstore("export", "--server", server.url, "--flow-id", edit["id"], "-o", str(out))
    numbers, pts, _ = decoded(out)
    assert numbers == list(range(100, 250))


def _part_of(seg: dict[str, Any], used: tuple[int, int], at: int) -> dict[str, Any]:
    """A segment at ``at`` ns using ``used`` (ns on the Object's own timeline) of ``seg``'s Object."""
    lo, hi = used
    return {
        "object_id": seg["object_id"],
        "timerange": TimeRange(at, at + hi - lo).to_str(),
        "ts_offset": format_timestamp(at - lo),
    }


def test_export_of_an_edit_that_uses_parts_of_objects(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """An edit by reference that uses part of an Object writes only that part (AppNote 0036):
    video cut at a key frame is copied, video cut inside a group of pictures re-encoded, audio
    cut at packets. Exported whole, the Objects' unused pictures overlapped the next segment's."""
    ids = ingest(server, media)
    frame = 40_000_000  # the input's frame n is at 80 ms + n frames
    with TamsClient(server.url) as tams:
        video, audio = (list(tams.segments(ids["flows"][role])) for role in ("video", "audio"))
        edit: dict[str, str] = {}
        for role, uid in (("video", "1"), ("audio", "2"), ("multi", "3")):
            flow = tams.get_flow(ids["flows"][role] if role != "multi" else ids["flow_id"])
            doc = {k: flow[k] for k in ("format", "codec", "container", "essence_parameters") if k in flow}
            edit[role] = f"0d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f1{uid}"
            if role == "multi":
                doc["flow_collection"] = [
                    {"id": edit["video"], "role": "video"},
                    {"id": edit["audio"], "role": "audio"},
                ]
            tams.put_flow({**doc, "id": edit[role], "source_id": f"5d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f1{uid}"})
        s = 10**9
        v = 80_000_000
        pieces = [
            _part_of(video[2], (v + 100 * frame, v + 150 * frame), 100 * s),  # all of frames 100-149
            _part_of(video[4], (v + 225 * frame, v + 250 * frame), 102 * s),  # from the key frame of 225
            _part_of(video[6], (v + 310 * frame, v + 340 * frame), 103 * s),  # inside both its GOPs
        ]
        assert tams.post_segments(edit["video"], pieces) == []
        a = TimeRange.from_str(audio[3]["timerange"])
        assert a.start is not None and a.end is not None
        used = (a.start + s // 2, a.end - s // 2)
        assert tams.post_segments(edit["audio"], [_part_of(audio[3], used, 100 * s)]) == []
    for ext in ("mp4", "ts"):
        out = tmp_path / f"edit.{ext}"
        tamstore("export", "--server", server.url, "--flow-id", edit["multi"], "-o", str(out))
        numbers, pts, samples = decoded(out)
        assert numbers == [*range(100, 150), *range(225, 250), *range(310, 340)], (ext, numbers)
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), ext
        assert abs(samples - (used[1] - used[0]) * 48000 // s) <= 2 * 1024, (ext, samples)
    # A writer that registered an Object on its own clock, not the media's timestamps: an edit of
    # part of it holds none of its pictures where it says, and is refused in one line.
    with TamsClient(server.url) as tams:
        [obj] = tams.allocate(edit["video"], 1)
        tams.upload(obj["put_url"], tams.download(video[2]["get_urls"][0]["url"]))  # media at 4.08 s
        clock = {"object_id": obj["object_id"], "timerange": "[50:0_52:0)"}
        assert (
            tams.post_segments(edit["video"], [clock, {**clock, "timerange": "[60:0_61:0)", "ts_offset": "9:0"}]) == []
        )
    done = tamstore(
        "export", "--server", server.url, "--flow-id", edit["video"], "-o", str(tmp_path / "x.ts"), check=False
    )
    assert done.returncode == 1 and "segment [60:0_61:0)" in done.stderr and "none of its object's media" in done.stderr
    # Within the edit, --exact cuts as ever: [101 s, 103.5 s) is frames 125-149, 225-249, 310-322.
    out = tmp_path / "exact.mp4"
    args = ["--flow-id", edit["video"], "--timerange", "[101:0_103:500000000)", "--exact", "-o", str(out)]
    tamstore("export", "--server", server.url, *args)
    assert decoded(out)[0] == [*range(125, 150), *range(225, 250), *range(310, 323)]


def test_an_ingest_cut_otherwise_registers_nothing_twice(server: LiveServer, media: Path) -> None:
    """The same input again with another segment duration: its segments fall differently from
    those the Flows hold, but the media is all there, so nothing is registered (the server
    would refuse it as overlapping)."""
    first = ingest(server, media, "--name", "recut")
    again = ingest(server, media, "--name", "recut", "--segment-duration", "3")
    assert again["segments"] == 0 and again["skipped"] > 0
    with TamsClient(server.url) as tams:
        for flow_id in first["flows"].values():
            assert len(list(tams.segments(flow_id))) == 10


def test_a_live_input_followed_again_from_elsewhere_adds_what_the_flows_lack(
    server: LiveServer, tmp_path: Path
) -> None:
    """A live ingest restarted on an HLS playlist whose window has moved on reads from another
    point than the run before, so its segments are cut elsewhere: one straddles the end of what
    the Flow holds. Only the part the Flow lacks is registered, as a segment using part of its
    Object (``object_timerange``, AppNote 0036); before, the server refused the whole segment
    as overlapping and the ingest stopped."""
    from tests.media import make_hls, write_live_playlist

    lines = make_hls(tmp_path / "hls", seconds=8)
    whole = ingest(server, tmp_path / "hls" / "index.m3u8", "--name", "reference")
    live = write_live_playlist(tmp_path / "hls", lines, 3, ended=True)
    ingest(server, live, "--name", "restarted")  # cut at 2 s: [0, 2) and [2, 3)
    write_live_playlist(tmp_path / "hls", lines, 8, ended=True, first=2)
    ids = ingest(server, live, "--name", "restarted")  # cut from 2 s on: [2, 4) straddles 3 s
    with TamsClient(server.url) as tams:
        for flow_id in ids["flows"].values():
            segments = list(tams.segments(flow_id, include_object_timerange="true"))
            ranges = [TimeRange.from_str(s["timerange"]) for s in segments]
            assert all(a.end == b.start for a, b in zip(ranges, ranges[1:], strict=False))
            partial = [s for s in segments if s["object_timerange"] != s["timerange"]]
            assert len(partial) == 1
            used, held = TimeRange.from_str(partial[0]["timerange"]), TimeRange.from_str(partial[0]["object_timerange"])
            assert held.contains(used) and held.start < used.start and held.end == used.end
    for name, flow_id in (("restarted", ids["flow_id"]), ("reference", whole["flow_id"])):
        tamstore("export", "--server", server.url, "--flow-id", flow_id, "-o", str(tmp_path / f"{name}.mp4"))
    frames, _, samples = decoded(tmp_path / "restarted.mp4")
    assert frames == list(range(200))
    assert samples == decoded(tmp_path / "reference.mp4")[2]


def test_export_to_a_full_disk_is_one_line(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """And it leaves no half-written file behind, nor harms the file it would have replaced."""
    ids = ingest(server, media)
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (disk / "out.ts").write_bytes(b"an earlier export")
        done = tamstore(
            "export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(disk / "out.ts"), check=False
        )
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tamstore: error:"), done.stderr[-2000:]
        assert "No space left" in lines[0] and "overlap" not in lines[0], lines[0]
        assert [p.name for p in disk.iterdir()] == ["out.ts"]
        assert (disk / "out.ts").read_bytes() == b"an earlier export"
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_client_object_instances(server: LiveServer, media: Path) -> None:
    ids = ingest(server, media, "--name", "instances")
    with TamsClient(server.url) as tams:
        object_id = next(iter(tams.segments(ids["flows"]["video"])))["object_id"]
        tams.add_instance(object_id, {"url": "https://cdn.example/copy.ts", "label": "cdn"})
        labels = {u.get("label") for u in tams.get_object(object_id)["get_urls"]}
        assert "cdn" in labels
        tams.delete_instance(object_id, label="cdn")
        assert "cdn" not in {u.get("label") for u in tams.get_object(object_id)["get_urls"]}


def test_readmes_client_example_runs(server: LiveServer, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    ingest(server, media, "--name", "readme-client")
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    [example] = re.findall(r"```python\n(.*?)\n```", text, flags=re.S)
    exec(compile(example.replace("http://127.0.0.1:8000", server.url), "README.md", "exec"), {})
    assert "numbered.mp4 (video)" in capsys.readouterr().out


async def test_running_again_reads_only_the_window_the_input_covers(server: LiveServer, media: Path) -> None:
    """The same media placed twice, 100,000 s apart, in the same Flows: looking up what is
    registered around the first placement reads that window, not the other placement."""
    from tamstore.client import AsyncTamsClient
    from tamstore.media.ingest import _Registered

    first = ingest(server, media, "--name", "far-apart", "--start", "0:0")
    ingest(server, media, "--name", "far-apart", "--start", "100000:0")
    async with AsyncTamsClient(server.url) as client:
        video = first["flows"]["video"]
        placed = [TimeRange.from_str(s["timerange"]) async for s in client.segments(video)]
        assert len(placed) == 20
        look = _Registered(client, video)
        start, end = placed[0].start, placed[0].end
        assert start is not None and end is not None
        assert await look.uncovered(start, end) == []
        assert len(look.spans) == 10  # the first placement's window only
        assert await look.uncovered(start - 5, end) == [(start - 5, start)]
        assert await look.uncovered(start, placed[2].end) == []  # type: ignore[arg-type]


def test_export_of_a_range_only_one_member_covers(server: LiveServer, media: Path, tmp_path: Path) -> None:
    """Audio starts at 58.67 ms, video at 80 ms: a range before the video holds audio alone,
    and the file has that one stream (the absent video holds nothing back)."""
    ids = ingest(server, media)
    out = tmp_path / "audio-only.mp4"
    before_video = ["--timerange", "[0:0_0:70000000)"]
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], *before_video, "-o", str(out))
    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["audio"]
        assert sum(f.samples for f in c.decode(audio=0)) == 94 * 1024  # the first audio segment


def test_cli_credentials_every_kind(settings: Settings, media: Path, tmp_path: Path) -> None:
    """Basic, a Bearer token and OAuth2 client credentials, as options and from the environment;
    two kinds at once, or none against a server that wants one, is one line."""
    from tamstore.auth import hash_secret

    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(
        f'[[users]]\nname = "editor"\npassword = "{hash_secret("pw")}"\n'
        f'[[clients]]\nclient_id = "ingest"\nclient_secret = "{hash_secret("s3")}"\n'
    )
    live = LiveServer.serving(settings, TAMSTORE_AUTH="basic,bearer", TAMSTORE_AUTH_FILE=str(auth_file))
    try:
        basic = ingest(live, media, "--username", "editor", "--password", "pw", "--name", "creds")
        token = httpx.post(
            live.url + "/x-tamstore/oauth2/token", data={"grant_type": "client_credentials"}, auth=("ingest", "s3")
        ).json()["access_token"]
        out = tmp_path / "with-token.ts"
        tamstore("export", "--server", live.url, "--token", token, "--flow-id", basic["flow_id"], "-o", str(out))
        assert decoded(out)[0] == list(range(FRAMES))
        oauth2 = [
            "--oauth2-url",
            live.url + "/x-tamstore/oauth2/token",
            "--client-id",
            "ingest",
            "--client-secret",
            "s3",
        ]
        assert ingest(live, media, *oauth2, "--name", "creds")["skipped"] == 20
        environment = {**os.environ, "TAMSTORE_SERVER": live.url, "TAMSTORE_TOKEN": token}
        done = subprocess.run(
            [sys.executable, "-m", "tamstore", "ingest", str(media), "--name", "creds", "--json"],
            capture_output=True,
            text=True,
            env=environment,
        )
        assert done.returncode == 0 and json.loads(done.stdout)["skipped"] == 20, done.stderr
        for wrong in (["--token", token, "--username", "editor"], []):
            refused = tamstore("ingest", str(media), "--server", live.url, *wrong, check=False)
            lines = refused.stderr.strip().splitlines()
            assert refused.returncode != 0 and len(lines) == 1 and lines[0].startswith("tamstore: error:"), lines
    finally:
        live.stop()


def test_client_waits_for_a_deletion_the_server_runs_in_the_background(settings: Settings, media: Path) -> None:
    live = LiveServer.serving(settings, TAMSTORE_INLINE_DELETE_LIMIT="5")
    try:
        ids = ingest(live, media)
        with TamsClient(live.url) as tams:
            assert tams.http is not None  # the same client throughout
            tams.delete_flow(ids["flows"]["video"])  # 10 segments: a 202 and a delete request
            assert tams.get_flow(ids["flows"]["video"]) is None
    finally:
        live.stop()


def test_export_of_junk_or_a_bad_range_is_one_line(server: LiveServer, tmp_path: Path) -> None:
    """A Flow whose Object holds no media, and a range that is no TAMS timerange."""
    flow_id = "1e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10"
    with TamsClient(server.url) as tams:
        tams.put_flow(
            {
                "id": flow_id,
                "source_id": "2e5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10",
                "format": "urn:x-nmos:format:video",
                "codec": "video/h264",
                "container": "video/mp2t",
                "essence_parameters": {
                    "frame_width": 320,
                    "frame_height": 240,
                    "frame_rate": {"numerator": 25, "denominator": 1},
                },
            }
        )
        [obj] = tams.allocate(flow_id, 1)
        tams.upload(obj["put_url"], os.urandom(4096))
        assert tams.post_segments(flow_id, [{"object_id": obj["object_id"], "timerange": "[0:0_2:0)"}]) == []
    for extra, says in (
        ([], "segment [0:0_2:0) of Flow"),
        (["--timerange", "[nonsense)"], "--timerange"),
        (["--timerange", "[2026-12-07T10:00:00_)"], "needs its zone"),  # a date-time, but whose?
        (["--timerange", "[2026-13-07T10:00:00Z_)"], "month must be in 1..12"),
    ):
        done = tamstore(
            "export", "--server", server.url, "--flow-id", flow_id, *extra, "-o", str(tmp_path / "x.mp4"), check=False
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and lines[0].startswith("tamstore: error:"), done.stderr[-2000:]
        assert says in lines[0], lines[0]


def test_follow_a_growing_mpegts_file_then_ctrl_c(server: LiveServer, tmp_path: Path) -> None:
    from tests.media import make_hls

    make_hls(tmp_path / "hls", seconds=8)
    pieces = [(tmp_path / "hls" / f"seg{i:03d}.ts").read_bytes() for i in range(8)]
    growing = tmp_path / "recording.ts"
    growing.write_bytes(b"".join(pieces[:3]))
    proc = _follow(server, growing)
    with TamsClient(server.url) as tams:

        def registered() -> int:
            flows = list(tams.flows(label="recording.ts (video)"))
            return len(list(tams.segments(flows[0]["id"]))) if flows else 0

        with growing.open("ab") as f:
            for piece in pieces[3:]:  # written while the ingest reads on
                time.sleep(0.5)
                f.write(piece)
                f.flush()
        deadline = time.monotonic() + 60
        while registered() < 7 and time.monotonic() < deadline:  # the 8th waits for a key frame after it
            time.sleep(0.1)
        assert registered() == 7
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(_contiguous(server, json.loads(out)["flows"]["video"])) == 7


def test_a_live_ingest_waits_out_its_server_and_loses_nothing(settings: Settings, tmp_path: Path) -> None:
    """A live recording whose server goes away for a while (a restart, a failover) reads on,
    holding what it cuts, and registers it all once the server is back. Before, the ingest gave
    up after about 7 s of refused connections, and the rest of the recording was lost."""
    from tests.media import make_hls

    make_hls(tmp_path / "hls", seconds=8)
    pieces = [(tmp_path / "hls" / f"seg{i:03d}.ts").read_bytes() for i in range(8)]
    growing = tmp_path / "recording.ts"
    growing.write_bytes(b"".join(pieces[:2]))
    live = LiveServer.serving(settings)
    try:
        proc = _follow(live, growing)
        with TamsClient(live.url) as tams:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(tams.flows(label="recording.ts (video)")):
                time.sleep(0.1)
        live.kill()
        with growing.open("ab") as f:
            for piece in pieces[2:]:  # the recording goes on while the server is away
                f.write(piece)
                f.flush()
                time.sleep(1.5)
        live.start()
        with TamsClient(live.url) as tams:
            [video] = [f["id"] for f in tams.flows(label="recording.ts (video)")]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and len(list(tams.segments(video))) < 7:
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        ids = json.loads(out)
        clip = tmp_path / "whole.mp4"
        tamstore("export", "--server", live.url, "--flow-id", ids["flow_id"], "-o", str(clip))
        assert decoded(clip)[0] == list(range(7 * 25))  # the 8th segment waits for a key frame after it
    finally:
        live.stop()


@pytest.mark.parametrize("kind", ["mp4", "ts"])
def test_cmaf_round_trip(server: LiveServer, media: Path, tmp_path: Path, schemas: SpecSchemas, kind: str) -> None:
    """``--container cmaf``: fragmented MP4 segments after one init Object per Flow (AppNote
    0024), from MP4 input and from MPEG-TS input (whose AAC comes in ADTS frames); an export
    reads each segment after its init segment and holds exactly the frames."""
    source = media
    if kind == "ts":
        source = tmp_path / "numbered.ts"
        with av.open(str(media)) as inp, av.open(str(source), "w") as out:
            streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
            for packet in inp.demux():
                if packet.size:
                    packet.stream = streams[packet.stream.index]
                    out.mux(packet)
    ids = ingest(server, source, "--container", "cmaf")
    assert ids["segments"] == 20
    with TamsClient(server.url) as tams:
        for role, container in (("video", "video/mp4"), ("audio", "audio/mp4")):
            flow = tams.get_flow(ids["flows"][role])
            schemas.check("flow-get.json", flow)
            assert flow["container"] == container and flow["essence_parameters"]["init_segments"] is True
            segments = list(tams.segments(ids["flows"][role], presigned="true"))
            for seg in segments:
                schemas.check("flow-segment.json", seg)
            assert len({s["init_object"]["object_id"] for s in segments}) == 1  # one init Object per Flow
            init = tams.download(segments[0]["init_object"]["get_urls"][0]["url"])
            assert init[4:8] == b"ftyp" and b"moov" in init and b"moof" not in init
            assert tams.download(segments[0]["get_urls"][0]["url"])[4:8] == b"moof"
    for ext in ("mp4", "ts"):
        out = tmp_path / f"all.{ext}"
        tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "-o", str(out))
        numbers, pts, samples = decoded(out)
        assert numbers == list(range(FRAMES)), ext
        assert samples == AUDIO_PACKETS * 1024, ext
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), ext
    part = tmp_path / "part.mp4"
    tamstore("export", "--server", server.url, "--flow-id", ids["flow_id"], "--timerange", "[4:0_8:0)", "-o", str(part))
    assert decoded(part)[0] == list(range(50, 200))


@pytest.mark.parametrize("container", ["mp2t", "cmaf"])
def test_exact_export_holds_the_range_and_nothing_else(
    server: LiveServer, media: Path, tmp_path: Path, container: str
) -> None:
    """``--exact`` cuts inside segments: [4.5 s, 7.3 s) is frames 111-180 (the input's first
    frame is at 0.08 s), re-encoded at the two cuts and copied between them; audio ends
    within a packet of each cut."""
    ids = ingest(server, media, "--container", container)
    for ext in ("mp4", "ts", "mkv"):
        out = tmp_path / f"exact.{ext}"
        args = ["--flow-id", ids["flow_id"], "--timerange", "[4:500000000_7:300000000)", "-o", str(out), "--exact"]
        tamstore("export", "--server", server.url, *args)
        numbers, pts, samples = decoded(out)
        assert numbers == list(range(111, 181)), (ext, numbers[:3], numbers[-3:])
        assert all(b > a for a, b in zip(pts, pts[1:], strict=False)), ext
        assert abs(samples - 2.8 * 48000) <= 2 * 1024, (ext, samples)
    # a range inside one segment: both cuts in it
    one = tmp_path / "one.mp4"
    tamstore(
        "export",
        "--server",
        server.url,
        "--flow-id",
        ids["flows"]["video"],
        "--timerange",
        "[4:500000000_5:0)",
        "-o",
        str(one),
        "--exact",
    )
    assert decoded(one)[0] == list(range(111, 123))


def test_client_downloads_are_bounded(server: LiveServer, media: Path) -> None:
    """A media URL is any server's: more bytes than the client accepts is an ObjectTooLarge,
    whether the size is declared up front or the body just keeps coming."""
    import http.server
    import threading

    from tamstore.client import ObjectTooLarge

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(1024):  # 64 MiB at most, should the client not stop
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass

        def log_message(self, *args: object) -> None:
            pass

    endless = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=endless.serve_forever, daemon=True).start()
    ids = ingest(server, media, "--name", "bounded")
    try:
        with TamsClient(server.url, max_download=1000) as tams:
            segment = next(iter(tams.segments(ids["flows"]["video"], presigned="true")))
            with pytest.raises(ObjectTooLarge):  # declared in Content-Length
                tams.download(segment["get_urls"][0]["url"])
            with pytest.raises(ObjectTooLarge):  # chunked, no length
                tams.download(f"http://127.0.0.1:{endless.server_address[1]}/object")
            assert len(tams.download(segment["get_urls"][0]["url"], limit=10**8)) > 1000
    finally:
        endless.shutdown()


def test_client_downloads_refuse_metadata_and_link_local_addresses(server: LiveServer, media: Path) -> None:
    """get_urls are whatever a store's writers registered, and the client fetches them wherever
    it runs (``tamstore sync`` would copy the answer into the target store): a cloud metadata
    service's address is refused, directly or through a redirect from an allowed host, before
    any connection is made. Loopback and the store's own URLs are fetched as before."""
    import http.server
    import threading

    from tamstore.client import RefusedMediaUrl

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/iam/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirect.serve_forever, daemon=True).start()
    ids = ingest(server, media, "--name", "refused")
    try:
        with TamsClient(server.url) as tams:
            for url in (
                "http://169.254.169.254/latest/meta-data/",
                "http://[fd00:ec2::254]/latest/meta-data/",
                f"http://127.0.0.1:{redirect.server_address[1]}/object",
            ):
                with pytest.raises(RefusedMediaUrl, match="never request targets"):
                    tams.download(url)
            segment = next(iter(tams.segments(ids["flows"]["video"], presigned="true")))
            assert len(tams.download(segment["get_urls"][0]["url"])) > 1000
    finally:
        redirect.shutdown()


def test_the_read_ahead_is_bounded_in_bytes() -> None:
    """The reading thread hands over cut segments up to the byte bound (one always goes through,
    however large) and waits past it until the loop takes some up, or the ingest ends."""
    import threading

    from tamstore.media.ingest import _Room

    room = _Room(100)
    room.take(500)  # nothing handed over yet: a segment past the bound goes through
    room.give(500)
    room.take(60)
    done = threading.Event()
    threading.Thread(target=lambda: (room.take(60), done.set()), daemon=True).start()
    assert not done.wait(0.3)  # 60 + 60 is past 100: it waits
    room.give(60)  # the loop takes the first up
    assert done.wait(5)
    blocked = threading.Event()
    threading.Thread(target=lambda: (room.take(80), blocked.set()), daemon=True).start()
    assert not blocked.wait(0.3)
    room.close()  # the ingest ends: nobody is left waiting
    assert blocked.wait(5)

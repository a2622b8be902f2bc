"""Playback (issue 19): HLS playlists and DASH manifests of Flows, played with FFmpeg (PyAV)
over HTTP from a real server on each backend pairing, with FFmpeg's default options (its HLS
reader's ``extension_picky`` included). Media are made in the run, numbered frame by frame, and
every decoded frame is checked by its number."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tamstore.auth import hash_secret
from tamstore.client import TamsClient
from tamstore.config import Settings
from tamstore.domain.timerange import TimeRange
from tests.conftest import video_flow
from tests.live import LiveServer
from tests.media import frame_number, make_media, placed_at
from tests.test_media import ingest

NS = 1_000_000_000
MPD = "{urn:mpeg:dash:schema:mpd:2011}"
# [4 s, 8 s) overlaps the video segments [2.08, 4.08), [4.08, 6.08), [6.08, 8.08): frames 50-199
RANGE = "[4:0_8:0)"
RANGE_FRAMES = list(range(50, 200))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_media(tmp_path_factory.mktemp("media") / "numbered.mp4")


def played(url: str) -> tuple[list[int], list[Fraction], int]:
    """What FFmpeg plays from a playlist: the frame numbers, their times and the audio samples."""
    with av.open(url) as c:
        frames = list(c.decode(video=0)) if c.streams.video else []
    with av.open(url) as c:
        samples = sum(f.samples for f in c.decode(audio=0)) if c.streams.audio else 0
    return [frame_number(f) for f in frames], [Fraction(f.pts) * f.time_base for f in frames], samples


def hls(server: LiveServer, flow_id: str, query: str = "") -> str:
    return f"{server.url}/x-tamstore/hls/{flow_id}.m3u8" + (f"?{query}" if query else "")


def test_hls_on_demand_of_mono_and_multi_essence_flows(server: LiveServer, media: Path) -> None:
    ids = ingest(server, media)
    video, audio = ids["flows"]["video"], ids["flows"]["audio"]
    text = httpx.get(hls(server, video, f"timerange={RANGE}")).text
    assert text.startswith("#EXTM3U\n") and "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.endswith("#EXT-X-ENDLIST\n")
    assert "#EXT-X-TARGETDURATION:2\n" in text and text.count("#EXTINF:2.0,") == 3
    assert "#EXT-X-DISCONTINUITY\n" not in text and "PROGRAM-DATE-TIME" not in text  # contiguous, not wall-clock
    numbers, times, _ = played(hls(server, video, f"timerange={RANGE}"))
    assert numbers == RANGE_FRAMES
    assert (times[0], times[-1]) == (Fraction(208, 100), Fraction(804, 100))
    _, _, samples = played(hls(server, audio, f"timerange={RANGE}"))
    assert abs(samples - 6 * 48000) < 3 * 1024  # three audio segments of about 2 s
    # the multi-essence Flow: video variant with the audio rendition, same range
    multivariant = httpx.get(hls(server, ids["flow_id"], f"timerange={RANGE}")).text
    assert '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio"' in multivariant
    stream_inf = next(line for line in multivariant.splitlines() if line.startswith("#EXT-X-STREAM-INF:"))
    assert "RESOLUTION=320x240" in stream_inf and "FRAME-RATE=25.000" in stream_inf
    assert 'CODECS="avc1.4d400d,mp4a.40.2"' in stream_inf and 'AUDIO="audio"' in stream_inf
    numbers, _, samples = played(hls(server, ids["flow_id"], f"timerange={RANGE}"))
    assert numbers == RANGE_FRAMES and abs(samples - 6 * 48000) < 3 * 1024
    # all of it, in a closed range: on demand
    whole = httpx.get(hls(server, video, "timerange=[0:0_100:0)")).text
    assert whole.count("#EXTINF:") == 10 and whole.endswith("#EXT-X-ENDLIST\n")
    assert played(hls(server, video, "timerange=[0:0_100:0)"))[0] == list(range(500))
    # no range, on a Flow written to a moment ago: live, a window at its end
    live = httpx.get(hls(server, video)).text
    assert "#EXT-X-ENDLIST" not in live and "#EXT-X-MEDIA-SEQUENCE:4\n" in live and live.count("#EXTINF:") == 6


def test_hls_head_and_refusals(server: LiveServer, media: Path) -> None:
    ids = ingest(server, media)
    head = httpx.head(hls(server, ids["flows"]["video"]))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    with TamsClient(server.url) as tams:
        tams.put_flow(
            {
                "id": "7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
                "source_id": "8b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
                "format": "urn:x-nmos:format:data",
                "codec": "text/plain",
                "container": "text/plain",
                "essence_parameters": {},
            }
        )
        tams.put_flow(
            {
                "id": "9b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
                "source_id": "ab8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e",
                "format": "urn:x-nmos:format:video",
                "codec": "video/h264",
                "container": "video/x-matroska",
                "essence_parameters": {"frame_width": 320, "frame_height": 240, "vfr": True},
            }
        )
    for path, status, words in (
        ("/x-tamstore/hls/0b5c3a57-3d24-4d6b-a7b0-2f8c6fd0e5a1.m3u8", 404, "does not exist"),
        ("/x-tamstore/hls/7b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e.m3u8", 400, "format:data"),
        ("/x-tamstore/hls/9b8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e.m3u8", 400, "video/x-matroska"),
        (f"/x-tamstore/dash/{ids['flow_id']}.mpd", 400, "init segments"),
        (f"/x-tamstore/hls/{ids['flows']['video']}.m3u8?timerange=junk", 400, "timerange"),
        (f"/x-tamstore/hls/{ids['flows']['video']}.m3u8?window=0", 400, "window"),
        (f"/x-tamstore/hls/{ids['flows']['video']}.m3u8?window=100000", 400, "window"),
        ("/x-tamstore/objects/0b5c3a57-3d24-4d6b-a7b0-2f8c6fd0e5a1.ts", 404, "does not exist"),
    ):
        answer = httpx.get(server.url + path)
        assert answer.status_code == status, (path, answer.text)
        body = answer.json()
        assert set(body) >= {"type", "summary", "time"} and words in body["summary"], (path, body)


def _dash_play(mpd_url: str) -> dict[str, tuple[list[Any], Fraction]]:
    """A small DASH client (FFmpeg's DASH reader needs libxml2, which PyAV's wheels leave out):
    each AdaptationSet's init segment and SegmentURLs fetched and decoded, after the MPD's
    structure is checked. Per content type: the decoded frames and where the first is
    presented on the MPD's timeline (S@t less presentationTimeOffset)."""
    root = ET.fromstring(httpx.get(mpd_url).text)
    assert root.tag == MPD + "MPD" and root.get("type") == "static"
    assert root.get("profiles") == "urn:mpeg:dash:profile:isoff-live:2011"
    out = {}
    for adaptation in root.iter(MPD + "AdaptationSet"):
        kind = adaptation.get("contentType")
        representation = adaptation.find(MPD + "Representation")
        assert representation is not None and int(representation.get("bandwidth", "0")) > 0
        seglist = representation.find(MPD + "SegmentList")
        assert seglist is not None
        timescale = int(seglist.get("timescale", "1"))
        offset = int(seglist.get("presentationTimeOffset", "0"))
        init = seglist.find(MPD + "Initialization")
        assert init is not None
        entries = list(seglist.iter(MPD + "S"))
        count = sum(1 + int(s.get("r", "0")) for s in entries)
        urls = [u.get("media") for u in seglist.iter(MPD + "SegmentURL")]
        assert count == len(urls) and all(urls)
        data = httpx.get(str(init.get("sourceURL")), follow_redirects=True).content
        data += b"".join(httpx.get(str(u), follow_redirects=True).content for u in urls)
        with av.open(io.BytesIO(data)) as c:
            frames = list(c.decode(video=0) if kind == "video" else c.decode(audio=0))
        first = Fraction(int(entries[0].get("t", "0")) - offset, timescale)
        out[str(kind)] = (frames, first)
    return out


def test_init_segment_flows_play_as_hls_and_dash(server: LiveServer, media: Path) -> None:
    ids = ingest(server, media, "--container", "cmaf")
    text = httpx.get(hls(server, ids["flows"]["video"], f"timerange={RANGE}")).text
    assert text.count("#EXT-X-MAP:URI=") == 1  # one init Object for the Flow
    numbers, times, _ = played(hls(server, ids["flows"]["video"], f"timerange={RANGE}"))
    assert numbers == RANGE_FRAMES and times[0] == Fraction(208, 100)
    numbers, _, samples = played(hls(server, ids["flow_id"], f"timerange={RANGE}"))
    assert numbers == RANGE_FRAMES and samples > 0
    tracks = _dash_play(f"{server.url}/x-tamstore/dash/{ids['flow_id']}.mpd?timerange={RANGE}")
    frames, video_first = tracks["video"]
    assert [frame_number(f) for f in frames] == RANGE_FRAMES
    samples_list, audio_first = tracks["audio"]
    assert abs(sum(f.samples for f in samples_list) - 6 * 48000) < 3 * 1024
    # the Period starts at the earliest segment (audio, at 2.064 s); video 16 ms later
    assert audio_first == 0 and video_first == Fraction(16, 1000)
    mono = _dash_play(f"{server.url}/x-tamstore/dash/{ids['flows']['video']}.mpd?timerange={RANGE}")
    assert [frame_number(f) for f in mono["video"][0]] == RANGE_FRAMES and mono["video"][1] == 0
    # no range, on Flows written a moment ago: a dynamic MPD of the window at their end
    live = ET.fromstring(httpx.get(f"{server.url}/x-tamstore/dash/{ids['flow_id']}.mpd?window=6").text)
    assert live.get("type") == "dynamic" and live.get("minimumUpdatePeriod") and live.get("timeShiftBufferDepth")
    assert live.get("availabilityStartTime", "").endswith("Z") and live.get("publishTime")
    with TamsClient(server.url) as tams:
        for representation in live.iter(MPD + "Representation"):
            seglist = representation.find(MPD + "SegmentList")
            assert seglist is not None
            entries = list(seglist.iter(MPD + "S"))
            count = sum(1 + int(e.get("r", "0")) for e in entries)
            assert 3 <= count <= 4 and count == len(list(seglist.iter(MPD + "SegmentURL")))  # ~6 s of 2 s segments
            last = entries[-1]
            end = int(last.get("t", "0")) + int(last.get("d", "0")) * (1 + int(last.get("r", "0")))
            *_, final = tams.segments(str(representation.get("id")))
            assert end == TimeRange.from_str(final["timerange"]).end  # the window ends at the Flow's end


def _edit_flow(tams: TamsClient, source: dict[str, Any], flow_id: str) -> None:
    edit = {k: source[k] for k in ("format", "codec", "container", "essence_parameters")}
    edit.update(id=flow_id, source_id="5" + flow_id[1:])
    tams.put_flow(edit)


def test_gaps_and_edits_by_reference_are_discontinuities(server: LiveServer, media: Path) -> None:
    """An edit: frames 100-249 at 100 s, a 10 s hole, then frames 350-449 at 116 s, every
    segment an Object of the ingested Flow (ts_offset). Each break is a discontinuity and the
    player gets exactly those frames."""
    ids = ingest(server, media)
    edit_id = "0d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f10"
    with TamsClient(server.url) as tams:
        video = list(tams.segments(ids["flows"]["video"]))
        _edit_flow(tams, tams.get_flow(ids["flows"]["video"]), edit_id)
        assert tams.post_segments(edit_id, placed_at(video[2:5], 100 * NS)) == []  # [4.08, 10.08): 100-249
        assert tams.post_segments(edit_id, placed_at(video[7:9], 116 * NS)) == []  # [14.08, 18.08): 350-449
    text = httpx.get(hls(server, edit_id, "timerange=[0:0_200:0)")).text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1  # the hole (its offset changes there too)
    numbers, _, _ = played(hls(server, edit_id, "timerange=[0:0_200:0)"))
    assert numbers == list(range(100, 250)) + list(range(350, 450))
    # the same Objects contiguous at 200 s but with two different offsets: a break without a hole
    with TamsClient(server.url) as tams:
        assert tams.post_segments(edit_id, placed_at(video[0:2], 200 * NS)) == []  # frames 0-99
        placed = placed_at(video[5:7], 204 * NS)  # frames 250-349 straight after
        assert tams.post_segments(edit_id, placed) == []
    text = httpx.get(hls(server, edit_id, "timerange=[200:0_300:0)")).text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 1
    assert played(hls(server, edit_id, "timerange=[200:0_300:0)"))[0] == list(range(100)) + list(range(250, 350))


def _playlist(text: str) -> tuple[int, int, list[str], bool]:
    """(media sequence, discontinuity sequence, segment URIs, ended) of a media playlist."""
    sequence = int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
    discontinuity = int(re.search(r"#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)", text).group(1))  # type: ignore[union-attr]
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    return sequence, discontinuity, uris, "#EXT-X-ENDLIST" in text


def test_live_window_numbers_hold_across_reloads(server: LiveServer, media: Path) -> None:
    """Segments appended one at a time, some old ones deleted, a hole: every reload of the
    live window shows each segment under the number it had before (by its Object), numbers
    run on without a skip, and the discontinuity sequence counts the breaks slid out."""
    ids = ingest(server, media)
    live_id = "1d5e1c3a-9f0e-4c1b-8a55-7e0c2b6d4f11"
    with TamsClient(server.url) as tams:
        video = list(tams.segments(ids["flows"]["video"]))
        _edit_flow(tams, tams.get_flow(ids["flows"]["video"]), live_id)
        placed = placed_at(video[:6], 1000 * NS) + placed_at(video[6:], 1015 * NS)  # a hole of 3 s
        numbered: dict[int, str] = {}  # media sequence number -> Object
        breaks_seen: dict[int, int] = {}  # media sequence number -> discontinuity sequence number
        url = hls(server, live_id, "timerange=[0:0_&window=6")
        for i, seg in enumerate(placed):
            assert tams.post_segments(live_id, [seg]) == []
            if i == 8:  # the oldest three go (as retention would)
                start = TimeRange.from_str(placed[2]["timerange"]).end
                tams.request("DELETE", f"/flows/{live_id}/segments", params={"timerange": f"[0:0_{start // NS}:0)"})
            text = httpx.get(url).text
            sequence, discontinuity, uris, ended = _playlist(text)
            assert not ended and "#EXT-X-PLAYLIST-TYPE" not in text
            objects = [re.sub(r"\?.*", "", u) for u in uris]
            disc = discontinuity
            for n, (obj, line) in enumerate(zip(objects, _segment_blocks(text), strict=True)):
                if "#EXT-X-DISCONTINUITY" in line.splitlines():
                    disc += 1
                assert numbered.setdefault(sequence + n, obj) == obj, (i, sequence + n)
                assert breaks_seen.setdefault(sequence + n, disc) == disc, (i, sequence + n)
        assert sorted(numbered) == list(range(min(numbered), max(numbered) + 1))  # none skipped
        assert len(set(numbered.values())) == len(numbered) == 10  # none repeated
        assert max(breaks_seen.values()) == 1
    closed = _playlist(httpx.get(hls(server, live_id, "timerange=[0:0_2000:0)")).text)
    assert closed[3] and closed[0] == 0  # a closed range is on demand


def _segment_blocks(text: str) -> list[str]:
    """The tag lines before each segment URI, one string per segment."""
    blocks, current = [], []
    for line in text.splitlines():
        if line.startswith(("#EXTINF", "#EXT-X-MAP")) or line == "#EXT-X-DISCONTINUITY":
            current.append(line)
        elif line and not line.startswith("#"):
            blocks.append("\n".join(current))
            current = []
    return blocks


def test_wall_clock_flows_carry_utc_program_date_times(server: LiveServer, media: Path) -> None:
    # 1,700,000,037 s TAI is 1,700,000,000 s UTC (37 leap seconds): 2023-11-14T22:13:20Z
    ids = ingest(server, media, "--start", "1700000037:0", "--name", "wall-clock")
    text = httpx.get(hls(server, ids["flows"]["audio"], "timerange=[1700000037:0_1700000041:0)")).text
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z" in text


def test_playlists_keep_the_access_token(settings: Settings, media: Path, tmp_path: Path) -> None:
    """With authentication on, a plain player given a URL with ``access_token`` plays: the
    playlists it leads to carry the token on."""
    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(f'[[clients]]\nclient_id = "player"\nclient_secret = "{hash_secret("s3")}"\n')
    live = LiveServer.serving(settings, TAMSTORE_AUTH="bearer", TAMSTORE_AUTH_FILE=str(auth_file))
    try:
        token = httpx.post(
            live.url + "/x-tamstore/oauth2/token", data={"grant_type": "client_credentials"}, auth=("player", "s3")
        ).json()["access_token"]
        ids = ingest(live, media, "--token", token)
        assert httpx.get(hls(live, ids["flow_id"])).status_code == 401
        url = hls(live, ids["flow_id"], f"timerange={RANGE}&access_token={token}")
        assert f"access_token={token}" in httpx.get(url).text
        numbers, _, samples = played(url)
        assert numbers == RANGE_FRAMES and samples > 0
    finally:
        live.stop()


def test_frames_on_request(server: LiveServer, media: Path) -> None:
    """A still of the Flow at any time, JPEG: the frame shown then (frame n at 0.08 s + n x 0.04 s),
    from a mono or multi-essence Flow, MPEG-TS or fragmented MP4."""
    for container in ("mp2t", "cmaf"):
        ids = ingest(server, media, "--container", container)
        for flow_id in (ids["flows"]["video"], ids["flow_id"]):
            r = httpx.get(f"{server.url}/x-tamstore/frames/{flow_id}.jpg", params={"at": "5:0"})
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
            with av.open(io.BytesIO(r.content)) as c:
                picture = next(iter(c.decode(video=0)))
            assert (picture.width, picture.height) == (320, 240)
            assert frame_number(picture) == 123, container
        small = httpx.get(
            f"{server.url}/x-tamstore/frames/{ids['flow_id']}.jpg", params={"at": "2:500000000", "width": "160"}
        )
        with av.open(io.BytesIO(small.content)) as c:
            assert next(iter(c.decode(video=0))).width == 160
    for query, status in (
        ({}, 400),
        ({"at": "junk"}, 400),
        ({"at": "1000:0"}, 404),
        ({"at": "5:0", "width": "5"}, 400),
    ):
        r = httpx.get(f"{server.url}/x-tamstore/frames/{ids['flows']['video']}.jpg", params=query)
        assert r.status_code == status and {"type", "summary", "time"} <= set(r.json()), (query, r.text)
    r = httpx.get(f"{server.url}/x-tamstore/frames/{ids['flows']['audio']}.jpg", params={"at": "5:0"})
    assert r.status_code == 400


def test_playlists_carry_only_http_urls(server: LiveServer) -> None:
    """A segment's get_urls are whatever its writer registered. A playlist is opened by players
    and transcoders that may follow any URL in it: a "file:" or "javascript:" one stays out (the
    segment becomes a gap, and its redirect a 404); the first http(s) one is used."""
    flow_id = "5d8c9d0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
    with TamsClient(server.url) as tams:
        tams.put_flow(video_flow(flow_id))
        segments = [
            {
                "object_id": "ext-a",
                "timerange": "[0:0_1:0)",
                "get_urls": [
                    {"url": "file:///etc/passwd.ts", "label": "local"},
                    {"url": "https://cdn.example/a.ts", "label": "cdn"},
                ],
            },
            {
                "object_id": "ext-b",
                "timerange": "[1:0_2:0)",
                "get_urls": [{"url": "javascript:alert(1)", "label": "js"}],
            },
        ]
        assert tams.post_segments(flow_id, segments) == []
    playlist = httpx.get(hls(server, flow_id, "timerange=[0:0_2:0)")).text
    assert "https://cdn.example/a.ts" in playlist, playlist
    assert "file:" not in playlist and "javascript:" not in playlist and "ext-b" not in playlist
    assert httpx.get(f"{server.url}/x-tamstore/objects/ext-b.ts").status_code == 404

"""The playlist writers and the TAI clock, without a server."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from tamstore.domain.playlists import (
    DashTrack,
    HlsMediaPlaylist,
    PlayItem,
    Rendition,
    SegmentTimeline,
    avc_codecs,
    dash_adaptation_open,
    hls_multivariant,
    seconds,
    target_duration,
)
from tamstore.domain.tai import NS, tai_to_utc, utc_iso, utc_to_tai


def test_durations_are_exact_decimals() -> None:
    assert seconds(2 * NS) == "2.0"
    assert seconds(2_040_000_000) == "2.04"
    assert seconds(1) == "0.000000001"
    assert seconds(-1_500_000_000) == "-1.5"
    assert target_duration(2_499_999_999) == 2 and target_duration(2_500_000_000) == 3
    assert target_duration(1) == 1


def test_leap_seconds() -> None:
    # 2017-01-01T00:00:00Z: the last leap second so far, TAI - UTC from 36 to 37 s
    utc = 1483228800 * NS
    assert utc_to_tai(utc) == utc + 37 * NS
    assert utc_to_tai(utc - 1) == utc - 1 + 36 * NS
    assert tai_to_utc(utc_to_tai(utc)) == utc and tai_to_utc(utc_to_tai(utc - NS)) == utc - NS
    assert utc_iso((1700000000 + 37) * NS + 5_000_000) == "2023-11-14T22:13:20.005Z"
    assert tai_to_utc(0) == 0  # before 1972: no offset here


def test_media_playlist_marks_breaks_maps_and_dates() -> None:
    wall = (1700000000 + 37) * NS
    playlist = HlsMediaPlaylist(target=2, sequence=7, discontinuity_sequence=1, vod=False, wall_clock=True)
    items = [
        PlayItem(wall, wall + 2 * NS, 0, "a.m4s", "i1", "i1.mp4"),
        PlayItem(wall + 2 * NS, wall + 4 * NS, 0, "b.m4s", "i1", "i1.mp4"),  # runs on
        PlayItem(wall + 5 * NS, wall + 7 * NS, 0, "c.m4s", "i1", "i1.mp4"),  # a hole
        PlayItem(wall + 7 * NS, wall + 9 * NS, 0, "d.m4s", "i2", "i2.mp4"),  # another init
        PlayItem(wall + 9 * NS, wall + 11 * NS, 5, "e.m4s", "i2", "i2.mp4"),  # another offset
    ]
    text = playlist.head() + "".join(playlist.segment(i) for i in items) + playlist.tail()
    assert "#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n" in text
    assert text.count("#EXT-X-DISCONTINUITY\n") == 3
    assert text.count("#EXT-X-MAP:") == 2 and text.count("#EXT-X-PROGRAM-DATE-TIME:") == 4
    assert "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:25.000Z\n#EXTINF:2.0,\nc.m4s" in text
    assert "ENDLIST" not in text


def test_multivariant_codecs_only_when_all_are_known() -> None:
    video = Rendition("video", "v", "v.m3u8", "video", 5_000_000, "avc1.64001f", 1280, 720, Fraction(25))
    audio = Rendition("audio", "a", "a.m3u8", "audio", 128_000, "mp4a.40.2")
    text = hls_multivariant([video], [audio])
    assert (
        'BANDWIDTH=5128000,RESOLUTION=1280x720,FRAME-RATE=25.000,CODECS="avc1.64001f,mp4a.40.2",AUDIO="audio"' in text
    )
    unknown = Rendition("video", "v", "v.m3u8", "video", None, None)
    assert "CODECS" not in hls_multivariant([unknown], [audio])
    assert hls_multivariant([], [audio]).count("#EXT-X-STREAM-INF:BANDWIDTH=128000") == 1  # audio only
    assert avc_codecs("video/h264", {"avc_parameters": {"profile": 100, "flags": 0, "level": 31}}) == "avc1.64001f"
    assert avc_codecs("video/h264", {}) is None
    he_aac = {"codec_parameters": {"coded_frame_size": 2048, "mp4_oti": 5}}
    assert avc_codecs("audio/aac", he_aac) == "mp4a.40.5"
    assert avc_codecs("audio/aac", {"codec_parameters": {"mp4_oti": True}}) == "mp4a.40.2"  # not a number: LC
    assert [avc_codecs(c, {}) for c in ("audio/aac", "audio/mpeg", "audio/ac3", "audio/eac3", "video/h265")] == [
        "mp4a.40.2",
        "mp4a.40.34",
        "ac-3",
        "ec-3",
        None,
    ]


def test_hdr_video_is_named_to_players() -> None:
    """HLS's VIDEO-RANGE for any known transfer; DASH's property only for HDR: PQ essential (a
    player that cannot show it must skip it), HLG supplemental (it shows as SDR)."""
    base = Rendition("video", "v", "v.m3u8", "video", 5_000_000, "avc1.64001f", 1280, 720, Fraction(25))
    prop = '<{} schemeIdUri="urn:mpeg:mpegB:cicp:TransferCharacteristics" value="{}"/>'
    for transfer, range_, dash in (
        ("PQ", "VIDEO-RANGE=PQ", prop.format("EssentialProperty", 16)),
        ("HLG", "VIDEO-RANGE=HLG", prop.format("SupplementalProperty", 18)),
        ("SDR", "VIDEO-RANGE=SDR", None),
        ("bogus", None, None),
    ):
        video = replace(base, transfer=transfer)
        hls = hls_multivariant([video], [])
        mpd = dash_adaptation_open(DashTrack(video, "video/mp4", "init.mp4", 0), 0)
        assert (range_ is None and "VIDEO-RANGE" not in hls) or (range_ is not None and range_ in hls), transfer
        assert (dash is None and "Property" not in mpd) or (dash is not None and dash in mpd), transfer


def test_segment_timeline_runs_and_jumps() -> None:
    timeline = SegmentTimeline()
    items = [PlayItem(i * NS, (i + 1) * NS, 0, "") for i in range(3)] + [PlayItem(10 * NS, 12 * NS, 0, "")]
    text = timeline.head() + "".join(timeline.add(i) for i in items) + timeline.tail()
    assert f'<S t="0" d="{NS}" r="2"/>' in text and f'<S t="{10 * NS}" d="{2 * NS}"/>' in text

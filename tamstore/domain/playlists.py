"""HLS playlists and DASH manifests of a Flow's segments: text only, no I/O.

Times are the Flows' integer nanoseconds throughout; durations are written as exact decimals
(``2.04``, never ``2.0399999``). Each writer is fed one segment at a time and returns the text
for it, so a playlist of a day of one-second segments is sent as it is read, never held whole.

Where a playlist has to say more than "the next segment follows": a *break* is any place where
the media's own timestamps do not simply run on from the previous segment's, so a player must
reset its timeline there (HLS ``EXT-X-DISCONTINUITY``): a hole in the timeline, a change of
``ts_offset`` (segments reused from another Flow, edits by reference), or a change of init
Object. The store counts breaks as segments are appended (``is_break`` is shared with it), so
that a live playlist's discontinuity sequence number is known without reading the Flow's past.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from xml.sax.saxutils import quoteattr

from tamstore.domain.tai import NS, is_wall_clock, tai_to_utc, utc_iso

__all__ = [
    "DashTrack",
    "HlsMediaPlaylist",
    "dash_adaptation_close",
    "dash_adaptation_open",
    "dash_mpd_tail",
    "dash_segment_url",
    "dash_timeline",
    "PlayItem",
    "Rendition",
    "SegmentTimeline",
    "avc_codecs",
    "dash_mpd_head",
    "hls_multivariant",
    "is_break",
    "seconds",
    "target_duration",
]


@dataclass(frozen=True, slots=True)
class PlayItem:
    """One segment as a playlist lists it."""

    start: int
    end: int
    ts_offset: int
    uri: str
    init_id: str | None = None
    init_uri: str | None = None


def is_break(prev_end: int, prev_offset: int, prev_init: str | None, start: int, offset: int, init: str | None) -> bool:
    """Whether a player must reset its timeline between two consecutive segments."""
    return prev_end != start or prev_offset != offset or prev_init != init


def seconds(ns: int) -> str:
    """Nanoseconds as exact decimal seconds: 2040000000 -> ``2.04``; 2000000000 -> ``2.0``."""
    sign = "-" if ns < 0 else ""
    whole, frac = divmod(abs(ns), NS)
    return f"{sign}{whole}.{(f'{frac:09d}'.rstrip('0') or '0')}"


def duration_iso(ns: int) -> str:
    """Nanoseconds as an xs:duration (``PT2.04S``), for DASH."""
    return f"PT{seconds(ns)}S"


def target_duration(longest_ns: int) -> int:
    """``EXT-X-TARGETDURATION``: every ``EXTINF``, rounded to the nearest integer, is at most it."""
    return max(1, (longest_ns + NS // 2) // NS)


class HlsMediaPlaylist:
    """A media playlist, written a segment at a time (RFC 8216)."""

    def __init__(
        self,
        *,
        target: int,
        sequence: int = 0,
        discontinuity_sequence: int = 0,
        vod: bool,
        wall_clock: bool,
    ) -> None:
        self.target, self.sequence, self.discontinuities = target, sequence, discontinuity_sequence
        self.vod, self.wall_clock = vod, wall_clock
        self.previous: PlayItem | None = None

    def head(self) -> str:
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:6",  # EXT-X-MAP in a playlist that is not I-frames only
            f"#EXT-X-TARGETDURATION:{self.target}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.sequence}",
            f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuities}",
        ]
        if self.vod:
            lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
        return "\n".join(lines) + "\n"

    def segment(self, item: PlayItem) -> str:
        out = []
        prev = self.previous
        broken = prev is not None and is_break(
            prev.end, prev.ts_offset, prev.init_id, item.start, item.ts_offset, item.init_id
        )
        if broken:
            out.append("#EXT-X-DISCONTINUITY")
        if item.init_uri is not None and (prev is None or prev.init_id != item.init_id):
            out.append(f"#EXT-X-MAP:URI={_quoted(item.init_uri)}")
        if self.wall_clock and (prev is None or broken):
            out.append(f"#EXT-X-PROGRAM-DATE-TIME:{utc_iso(item.start)}")
        out.append(f"#EXTINF:{seconds(item.end - item.start)},")
        out.append(item.uri)
        self.previous = item
        return "\n".join(out) + "\n"

    def tail(self) -> str:
        return "#EXT-X-ENDLIST\n" if self.vod else ""


def _quoted(value: str) -> str:
    """An HLS quoted-string: no double quotes or line breaks inside (URIs are percent-encoded)."""
    return '"' + value.replace('"', "%22").replace("\n", "").replace("\r", "") + '"'


@dataclass(frozen=True)
class Rendition:
    """A mono-essence Flow as one entry of a multivariant playlist or one DASH Representation."""

    kind: str  # "video" or "audio"
    flow_id: str
    uri: str
    name: str
    bandwidth: int | None  # bits per second
    codecs: str | None  # RFC 6381, e.g. avc1.64001f, mp4a.40.2
    width: int | None = None
    height: int | None = None
    frame_rate: Fraction | None = None
    sample_rate: int | None = None
    channels: int | None = None
    transfer: str | None = None  # the Flow's transfer_characteristic: SDR, HLG or PQ


# RFC 6381 codecs strings of the audio codecs whose string a Flow's codec alone settles. AAC
# whose Flow does not give its object type (``codec_parameters.mp4_oti``) is taken as AAC-LC:
# what AAC in TAMS Flows commonly is.
_AUDIO_CODECS = {"audio/aac": "mp4a.40.2", "audio/mpeg": "mp4a.40.34", "audio/ac3": "ac-3", "audio/eac3": "ec-3"}


# transfer_characteristic -> its ITU-T H.273 code and the DASH property that says it (if any).
_TRANSFERS = {"SDR": (1, ""), "HLG": (18, "SupplementalProperty"), "PQ": (16, "EssentialProperty")}


def avc_codecs(codec: str | None, params: dict[str, object]) -> str | None:
    """The RFC 6381 codecs string of a Flow, where its codec and parameters tell it."""
    if codec == "audio/aac":
        coded = params.get("codec_parameters")
        oti = coded.get("mp4_oti") if isinstance(coded, dict) else None
        if isinstance(oti, int) and not isinstance(oti, bool) and 0 < oti < 96:  # HE-AAC is mp4a.40.5
            return f"mp4a.40.{oti}"
    if codec in _AUDIO_CODECS:
        return _AUDIO_CODECS[codec]
    if codec == "video/h264":
        avc = params.get("avc_parameters")
        if isinstance(avc, dict):
            try:
                profile, flags, level = (int(avc["profile"]), int(avc["flags"]), int(avc["level"]))
            except (KeyError, TypeError, ValueError):
                return None
            if all(0 <= b <= 255 for b in (profile, flags, level)):
                return f"avc1.{profile:02x}{flags:02x}{level:02x}"
    return None


def hls_multivariant(videos: list[Rendition], audios: list[Rendition]) -> str:
    """A multivariant playlist: video Flows as variants sharing the audio Flows as renditions
    (``EXT-X-MEDIA TYPE=AUDIO``); with no video, each audio Flow is a variant of its own."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for i, audio in enumerate(audios if videos else []):
        default = "YES" if i == 0 else "NO"
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME={_quoted(audio.name)},'
            f"DEFAULT={default},AUTOSELECT=YES,URI={_quoted(audio.uri)}"
        )
    audio_bandwidth = max((a.bandwidth or 0 for a in audios), default=0)
    audio_codecs = {a.codecs for a in audios}
    for variant in videos or audios:
        attrs = [f"BANDWIDTH={max(1, (variant.bandwidth or 0) + (audio_bandwidth if videos else 0))}"]
        if variant.width and variant.height:
            attrs.append(f"RESOLUTION={variant.width}x{variant.height}")
        if variant.frame_rate:
            attrs.append(f"FRAME-RATE={float(variant.frame_rate):.3f}")
        if variant.transfer in _TRANSFERS:  # players pick HDR variants they can show by it
            attrs.append(f"VIDEO-RANGE={variant.transfer}")
        codecs = [variant.codecs] + (sorted(c for c in audio_codecs if c) if videos else [])
        # CODECS must name every format in the variant, or be left out.
        if all(codecs) and (not videos or None not in audio_codecs):
            attrs.append(f"CODECS={_quoted(','.join(c for c in codecs if c))}")
        if videos and audios:
            attrs.append('AUDIO="audio"')
        lines.append("#EXT-X-STREAM-INF:" + ",".join(attrs))
        lines.append(variant.uri)
    return "\n".join(lines) + "\n"


# -- DASH -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DashTrack:
    rendition: Rendition
    mime: str  # video/mp4 or audio/mp4
    init_uri: str
    presentation_offset: int  # ns: the media time shown at the Period's start


def dash_mpd_head(
    *,
    dynamic: bool,
    first_ns: int,
    end_ns: int,
    window_ns: int,
    target_ns: int,
    published_tai: int,
) -> str:
    """The MPD element and its Period, up to where the AdaptationSets go.

    Static: the Period lasts from the first segment's start to the last one's end. Dynamic:
    ``availabilityStartTime`` is chosen so that a segment's time on the Flow's timeline,
    counted from it, is its UTC wall-clock time (TAI timelines) or so that the live edge is now
    (other timelines)."""
    attrs = {
        "xmlns": "urn:mpeg:dash:schema:mpd:2011",
        "profiles": "urn:mpeg:dash:profile:isoff-live:2011",
        "minBufferTime": duration_iso(2 * NS),
    }
    if dynamic:
        attrs["type"] = "dynamic"
        attrs["availabilityStartTime"] = _ast(end_ns, published_tai)
        attrs["publishTime"] = utc_iso(published_tai)
        attrs["minimumUpdatePeriod"] = duration_iso(max(NS, target_ns // 2))
        attrs["timeShiftBufferDepth"] = duration_iso(window_ns)
        attrs["suggestedPresentationDelay"] = duration_iso(3 * target_ns)
    else:
        attrs["type"] = "static"
        attrs["mediaPresentationDuration"] = duration_iso(max(0, end_ns - first_ns))
    text = '<?xml version="1.0" encoding="UTF-8"?>\n<MPD'
    text += "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items()) + ">\n"
    text += '  <Period id="0" start="PT0S">\n'
    return text


def _ast(end_ns: int, published_tai: int) -> str:
    """An availabilityStartTime, as UTC, such that media time t (ns on the Flow's timeline) is
    available at AST + t: for a TAI timeline, the instant TAI zero is in UTC now (the current
    leap-second offset applied); otherwise the live edge lands on now."""
    reference = end_ns if is_wall_clock(end_ns) else published_tai
    origin_utc = tai_to_utc(reference) - end_ns
    whole, frac = divmod(origin_utc, NS)
    stamp = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=whole)).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac // 1_000_000:03d}Z"


def dash_adaptation_open(track: DashTrack, index: int) -> str:
    r = track.rendition
    set_attrs = {
        "id": str(index),
        "contentType": r.kind,
        "mimeType": track.mime,
        "segmentAlignment": "true",
        "startWithSAP": "1",
    }
    if r.kind == "audio":
        set_attrs["lang"] = "und"
    rep = {"id": r.flow_id, "bandwidth": str(max(1, r.bandwidth or 0))}
    if r.codecs:
        rep["codecs"] = r.codecs
    if r.width and r.height:
        rep["width"], rep["height"] = str(r.width), str(r.height)
    if r.frame_rate:
        f = r.frame_rate
        rep["frameRate"] = f"{f.numerator}/{f.denominator}" if f.denominator != 1 else str(f.numerator)
    if r.sample_rate:
        rep["audioSamplingRate"] = str(r.sample_rate)
    text = "    <AdaptationSet" + "".join(f" {k}={quoteattr(v)}" for k, v in set_attrs.items()) + ">\n"
    text += "      <Representation" + "".join(f" {k}={quoteattr(v)}" for k, v in rep.items()) + ">\n"
    if r.kind == "video" and r.transfer in _TRANSFERS:
        # DASH-IF IOP: PQ is essential (a player that cannot show it must skip it); HLG shows
        # acceptably as SDR, so it is supplemental. SDR, the default, needs no saying.
        code, kind = _TRANSFERS[r.transfer]
        if kind:
            text += f'        <{kind} schemeIdUri="urn:mpeg:mpegB:cicp:TransferCharacteristics" value="{code}"/>\n'
    if r.kind == "audio" and r.channels:
        text += (
            '        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011"'
            f' value="{r.channels}"/>\n'
        )
    text += f'        <SegmentList timescale="{NS}" presentationTimeOffset="{track.presentation_offset}">\n'
    text += f"          <Initialization sourceURL={quoteattr(track.init_uri)}/>\n"
    return text


class SegmentTimeline:
    """``SegmentTimeline`` entries, written a segment at a time: ``t`` where the timeline jumps
    (and first), ``d`` always, ``r`` for runs of equal durations. Times are media times (the
    Flow's less ``ts_offset``)."""

    def __init__(self) -> None:
        self.run: list[int] | None = None  # [t, d, repeats]
        self.expected: int | None = None

    def head(self) -> str:
        return "          <SegmentTimeline>\n"

    def add(self, item: PlayItem) -> str:
        t = item.start - item.ts_offset
        d = item.end - item.start
        out = ""
        if self.run is not None and t == self.expected and d == self.run[1]:
            self.run[2] += 1
        else:
            if self.run is not None:
                out = _s(self.run)
            self.run = [t, d, 0]
        self.expected = t + d
        return out

    def tail(self) -> str:
        return (_s(self.run) if self.run is not None else "") + "          </SegmentTimeline>\n"


def dash_timeline(items: Iterable[PlayItem]) -> str:
    timeline = SegmentTimeline()
    return timeline.head() + "".join(timeline.add(i) for i in items) + timeline.tail()


def _s(run: list[int]) -> str:
    repeat = f' r="{run[2]}"' if run[2] else ""
    return f'            <S t="{run[0]}" d="{run[1]}"{repeat}/>\n'


def dash_segment_url(item: PlayItem) -> str:
    return f"          <SegmentURL media={quoteattr(item.uri)}/>\n"


def dash_adaptation_close() -> str:
    return "        </SegmentList>\n      </Representation>\n    </AdaptationSet>\n"


def dash_mpd_tail() -> str:
    return "  </Period>\n</MPD>\n"

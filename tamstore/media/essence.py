"""What a Flow says about its media: the ``essence_parameters`` ingest reads from a stream.

Everything here comes from the stream's parameters as FFmpeg reads them on opening the input
(its configuration record and, for interlacing, the pictures it probes), never from decoding
the whole input. A property the input leaves unspecified is left out of the Flow rather than
guessed: a Flow that says BT.709 when its source never said so misleads an editor more than
one that says nothing.

The enumerations (``colorspace``, ``transfer_characteristic``, ``interlace_mode``,
``component_type``) are TAMS's, after NMOS IS-04; the numbers they come from are FFmpeg's,
which are those of ITU-T H.273 (colour) and of FFmpeg's own ``AVFieldOrder``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

__all__ = ["audio_parameters", "avc_parameters", "pcm_bits", "pcm_frame_bytes", "video_parameters"]

# H.273 colour primaries -> TAMS colorspace (BT.601 comes as PAL's 5 or NTSC's 6).
_PRIMARIES = {1: "BT709", 5: "BT601", 6: "BT601", 9: "BT2020"}
# H.273 matrix coefficients, for a stream that gives its matrix but not its primaries.
_MATRICES = {1: "BT709", 5: "BT601", 6: "BT601", 9: "BT2020", 10: "BT2020"}
# H.273 transfer characteristics -> TAMS transfer_characteristic.
_TRANSFERS = {1: "SDR", 4: "SDR", 5: "SDR", 6: "SDR", 13: "SDR", 14: "SDR", 15: "SDR", 16: "PQ", 18: "HLG"}
# FFmpeg's AVFieldOrder -> TAMS interlace_mode: by the field shown first (TB and BT code one
# field first and show the other first).
_FIELD_ORDERS = {1: "progressive", 2: "interlaced_tff", 3: "interlaced_bff", 4: "interlaced_bff", 5: "interlaced_tff"}


def video_parameters(stream: Any) -> dict[str, Any]:
    """A video stream's ``essence_parameters`` (flow-video.json), as far as the input says."""
    ctx = stream.codec_context
    params: dict[str, Any] = {"frame_width": ctx.width, "frame_height": ctx.height}
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        params["frame_rate"] = {"numerator": rate.numerator, "denominator": rate.denominator}
    else:  # no rate the input tells: a Flow without frame_rate must say it is variable
        params["vfr"] = True
    interlace = _FIELD_ORDERS.get(int(ctx.field_order or 0))
    if interlace is not None:
        params["interlace_mode"] = interlace
    params.update(_colour(ctx))
    params.update(_samples(ctx))
    sar = ctx.sample_aspect_ratio
    if sar and ctx.width and ctx.height:
        params["pixel_aspect_ratio"] = _ratio(Fraction(sar))
        params["aspect_ratio"] = _ratio(Fraction(ctx.width, ctx.height) * Fraction(sar))
    avc = avc_parameters(ctx.extradata) if ctx.name == "h264" else None
    if avc is not None:
        params["avc_parameters"] = avc
    return params


# FFmpeg's names of AAC profiles -> MPEG-4 audio object types (``mp4_oti``; mp4a.40.N).
_AAC_OBJECT_TYPES = {"Main": 1, "LC": 2, "SSR": 3, "LTP": 4, "HE-AAC": 5, "HE-AACv2": 29, "LD": 23, "ELD": 39}


def audio_parameters(stream: Any) -> dict[str, Any]:
    """An audio stream's ``essence_parameters`` (flow-audio.json): its rate and channels, and
    its coded frame size and, for AAC, its audio object type (``mp4_oti``: 2 for AAC-LC, 5 for
    HE-AAC), which players need to be told in the codecs string."""
    ctx = stream.codec_context
    params: dict[str, Any] = {"sample_rate": ctx.sample_rate, "channels": ctx.channels}
    if ctx.name.startswith("pcm_"):  # channels interleaved
        params["bit_depth"] = pcm_bits(ctx.name)
        params["unc_parameters"] = {"unc_type": "interleaved"}
        return params
    codec: dict[str, int] = {}
    if ctx.frame_size and ctx.frame_size > 0:
        codec["coded_frame_size"] = ctx.frame_size
    if ctx.name == "aac":
        oti = _aac_object_type(ctx.extradata) or _AAC_OBJECT_TYPES.get(ctx.profile or "")
        if oti is not None:
            codec["mp4_oti"] = oti
    if codec:
        params["codec_parameters"] = codec
    return params


def pcm_bits(codec_name: str) -> int:
    """The bits of each sample of an FFmpeg integer PCM codec (``pcm_s24le``: 24)."""
    return int(codec_name[5:7])


def pcm_frame_bytes(ctx: Any) -> int:
    """The bytes of one sample of every channel of a PCM stream (its codec context): PCM
    packets are whole runs of them, so bytes count samples and cut anywhere between them."""
    return int(ctx.channels) * pcm_bits(ctx.name) // 8


def _aac_object_type(extradata: bytes | None) -> int | None:
    """The audio object type an MP4 AudioSpecificConfig starts with (5 bits; 31 escapes to 6
    more). SBR signalled in it explicitly (type 5 or 29 first) is reported as such."""
    if not extradata or len(extradata) < 2:
        return None
    first = extradata[0] >> 3
    if first == 31:
        return 32 + ((extradata[0] & 0x07) << 3 | extradata[1] >> 5)
    return first or None


def _colour(ctx: Any) -> dict[str, str]:
    """``colorspace`` and ``transfer_characteristic``. BT.2020 primaries with an HDR transfer
    (PQ or HLG) are BT.2100, which is what the two together make."""
    out: dict[str, str] = {}
    transfer = _TRANSFERS.get(int(ctx.color_trc or 0))
    space = _PRIMARIES.get(int(ctx.color_primaries or 0)) or _MATRICES.get(int(ctx.colorspace or 0))
    if space == "BT2020" and transfer in ("PQ", "HLG"):
        space = "BT2100"
    if space is not None:
        out["colorspace"] = space
    if transfer is not None:
        out["transfer_characteristic"] = transfer
    return out


def _samples(ctx: Any) -> dict[str, Any]:
    """``bit_depth``, ``component_type`` and chroma subsampling, from the pixel format."""
    if not ctx.pix_fmt or not ctx.width or not ctx.height:
        return {}
    try:
        fmt = av.VideoFormat(ctx.pix_fmt, ctx.width, ctx.height)
    except (ValueError, av.FFmpegError):
        return {}
    name = fmt.name
    out: dict[str, Any] = {"bit_depth": fmt.components[0].bits}
    if name.startswith(("yuv", "nv", "p0", "p2", "p4")) and len(fmt.components) >= 3:
        chroma = fmt.components[1]
        out["component_type"] = "YCbCr"
        if chroma.width and chroma.height:
            out["horiz_chroma_subs"] = ctx.width // chroma.width
            out["vert_chroma_subs"] = ctx.height // chroma.height
    elif name.startswith(("rgb", "bgr", "gbr", "argb", "abgr")):
        out["component_type"] = "RGB"
    return out


def _ratio(value: Fraction) -> dict[str, int]:
    return {"numerator": value.numerator, "denominator": value.denominator}


def avc_parameters(extradata: bytes | None) -> dict[str, int] | None:
    """H.264's profile, constraint flags and level bytes (the Flow's ``avc_parameters``, and the
    ``avc1.PPCCLL`` codecs string players want) from the stream's configuration: an MP4
    ``avcC`` record, or a sequence parameter set after a start code (MPEG-TS)."""
    data = extradata or b""
    if len(data) >= 4 and data[0] == 1:
        return {"profile": data[1], "flags": data[2], "level": data[3]}
    at = data.find(b"\x00\x00\x01")
    while at >= 0 and at + 7 <= len(data):
        if data[at + 3] & 0x1F == 7:  # NAL unit type 7: sequence parameter set
            return {"profile": data[at + 4], "flags": data[at + 5], "level": data[at + 6]}
        at = data.find(b"\x00\x00\x01", at + 3)
    return None

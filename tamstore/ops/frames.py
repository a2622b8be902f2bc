"""Still frames of a video Flow, on request (tamstore extension): a thumbnail at any time.

``GET /x-tamstore/frames/{flow_id}.jpg?at=TS[&width=W]`` finds the segment holding ``at`` (one
indexed read), fetches its Object (and init Object) from a backend that holds it, decodes from
the segment's start to the frame shown at ``at`` (the object's own time: ``at`` less the
segment's ``ts_offset``) and encodes it as JPEG, in a worker thread: decoding is CPU work and
never runs on the event loop. At most ``SLOTS`` decodes run at once per process (more wait, and
give up with a 503 after ``WAIT``), and the last ``CACHED`` frames made are kept.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from tamstore.domain.errors import BadRequest, NotFound, Unavailable
from tamstore.domain.paging import PageRequest
from tamstore.ops import access
from tamstore.ops.context import Context
from tamstore.ops.flows import require_flow
from tamstore.store.media.base import MediaStore
from tamstore.store.metadata.objects import instances_of

__all__ = ["MAX_WIDTH", "frame_jpeg"]

NS = 1_000_000_000
MAX_WIDTH = 1920
SLOTS = 2
WAIT = 10.0  # seconds a request waits for a decoding slot
CACHED = 256

_slots: asyncio.Semaphore | None = None
_cache: collections.OrderedDict[tuple[Any, ...], bytes] = collections.OrderedDict()


@dataclass(frozen=True)
class _Source:
    object_id: str
    init_object_id: str | None
    media_time: int  # ns, on the object's own timeline
    backends: dict[str, MediaStore]  # object id -> a backend holding it


async def frame_jpeg(ctx: Context, flow_id: str, at: int, width: int | None) -> bytes:
    if width is not None and not 16 <= width <= MAX_WIDTH:
        raise BadRequest(f"width must be between 16 and {MAX_WIDTH}")
    source = await _locate(ctx, flow_id, at)
    key = (source.object_id, source.init_object_id, source.media_time, width)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    global _slots
    _slots = _slots or asyncio.Semaphore(SLOTS)
    try:
        await asyncio.wait_for(_slots.acquire(), WAIT)
    except TimeoutError:
        raise Unavailable("too many frames being made at once; try again shortly") from None
    try:
        jpeg = await asyncio.to_thread(_extract, await _media(source), source.media_time, width)
    finally:
        _slots.release()
    _cache[key] = jpeg
    while len(_cache) > CACHED:
        _cache.popitem(last=False)
    return jpeg


async def _locate(ctx: Context, flow_id: str, at: int) -> _Source:
    async with ctx.store.read() as tx:
        flow = await require_flow(tx, flow_id)
        if flow.format == "urn:x-nmos:format:multi":
            members = await tx.get_flows(m["id"] for m in json.loads(flow.doc).get("flow_collection") or [])
            video = [m for m in members.values() if m.format == "urn:x-nmos:format:video" and access.allows(m)]
            if not video:
                raise BadRequest(f"Flow {flow_id} collects no video Flow")
            flow = video[0]
        elif flow.format != "urn:x-nmos:format:video":
            raise BadRequest(f"Flow {flow_id} is {flow.format}: frames come from video Flows")
        page = await tx.list_segments(flow.id, PageRequest(1), lo=at, hi=at + 1, object_id=None)
        if not page.items:
            raise NotFound(f"Flow {flow.id} has no segment at {at // NS}:{at % NS}")
        row = page.items[0]
        instances = page.extra["instances"]
    instances_by_object = {row.object_id: instances_of(row, instances)}
    if row.init_object_id:
        instances_by_object[row.init_object_id] = instances.get(row.init_object_id, ())
    backends: dict[str, Any] = {}
    for object_id, its_instances in instances_by_object.items():
        held = ctx.holding(its_instances)
        if not held:
            raise NotFound(f"Object {object_id} is on no storage backend of this service")
        backends[object_id] = held[0]
    return _Source(row.object_id, row.init_object_id, at - (row.ts_offset or 0), backends)


async def _media(source: _Source) -> bytes:
    """The segment's bytes, its init Object's first, each read on its backend's own threads (an
    S3 bucket that does not answer holds none of the shared ones)."""
    data = b""
    for object_id in filter(None, (source.init_object_id, source.object_id)):
        backend = source.backends[object_id]
        try:
            data += await backend.run_blocking(_read, backend, object_id)
        except FileNotFoundError:
            raise NotFound(f"the bytes of Object {object_id} are missing from its storage backend") from None
        except Unavailable:
            raise
        except Exception as exc:  # a backend that cannot be read now: the client may retry
            raise Unavailable(f"Object {object_id} cannot be read now ({type(exc).__name__})") from None
    return data


def _read(backend: MediaStore, object_id: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="tamstore-frame-") as scratch:
        path = Path(scratch) / "part"
        backend.download_to(object_id, path)
        return path.read_bytes()


def _extract(data: bytes, media_time: int, width: int | None) -> bytes:
    chosen = None
    try:
        with av.open(io.BytesIO(data)) as opened:
            container: Any = opened
            stream = container.streams.video[0]
            base = Fraction(stream.time_base or Fraction(1, 90000))
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                shown = frame.pts * base * NS
                if chosen is not None and shown > media_time:
                    break
                chosen = frame
    except (av.FFmpegError, IndexError) as exc:
        raise Unavailable(f"the segment's media cannot be decoded ({exc})") from None
    if chosen is None:
        raise NotFound("no frame to show there")
    height = chosen.height
    if width is not None and width != chosen.width:
        height = max(2, round(chosen.height * width / chosen.width / 2) * 2)
    picture = chosen.reformat(width=width or chosen.width, height=height, format="yuvj420p")
    encoder: Any = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = picture.width, picture.height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    packets = encoder.encode(picture) + encoder.encode(None)
    return b"".join(bytes(p) for p in packets)

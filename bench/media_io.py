"""Benchmarks of ``tamstore ingest`` and ``tamstore export`` beside their floor: the same remux
done by PyAV to local files, with no server (the segmenter writing its segments to disk, and a
plain remux of the input to one output file)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import av

from tamstore.client import AsyncTamsClient
from tamstore.domain.timerange import TimeRange
from tamstore.media.export import export
from tamstore.media.ingest import IngestOptions, ingest
from tamstore.media.segmenter import NS, Segmenter
from tamstore.media.sync import SyncOptions, select_flows, sync

__all__ = ["bench_ingest_export", "bench_sync"]

Row = tuple[str, str, str, str]


def _segment_to_files(source: Path, out: Path) -> tuple[float, int, int]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    segmenter = Segmenter(str(source))
    count = size = 0
    try:
        for cut in segmenter.segments():
            (out / f"{count}.ts").write_bytes(cut.data)
            count, size = count + 1, size + len(cut.data)
    finally:
        segmenter.close()
    return time.perf_counter() - t0, count, size


def _concatenate(segments: Path, target: Path) -> float:
    """The segment files remuxed into one file: what an export does, without HTTP or a server."""
    t0 = time.perf_counter()
    files = sorted(segments.glob("*.ts"), key=lambda f: int(f.stem))
    with av.open(str(target), "w") as dst:
        streams: dict[str, object] = {}
        pending = []
        for f in files:
            src = av.open(str(f))
            stream = src.streams[0]
            if stream.type not in streams:
                streams[stream.type] = dst.add_stream_from_template(stream)
            pending.append((src, stream))
        for src, stream in pending:
            for packet in src.demux(stream):
                if packet.size:
                    packet.stream = streams[stream.type]
                    dst.mux(packet)
            src.close()
    return time.perf_counter() - t0


def bench_ingest_export(url: str, source: Path, scratch: Path) -> list[Row]:
    size = source.stat().st_size
    floor_ingest, segments, segment_bytes = _segment_to_files(source, scratch / "floor-segments")
    floor_export = _concatenate(scratch / "floor-segments", scratch / "floor.mp4")

    # A cut 0.5 s into a segment at each end of a range of about 10 s (or half of a short input).
    seconds = 10 if segments >= 16 else 1
    clip = TimeRange(3 * NS // 2, 3 * NS // 2 + seconds * NS)

    async def run() -> tuple[float, float, float, float]:
        async with AsyncTamsClient(url) as client:
            t0 = time.perf_counter()
            result = await ingest(client, str(source), IngestOptions(name=f"bench-{time.time_ns()}"))
            t1 = time.perf_counter()
            await export(client, result.flow_id, scratch / "export.mp4")
            t2 = time.perf_counter()
            await export(client, result.flow_id, scratch / "clip.mp4", clip)
            t3 = time.perf_counter()
            await export(client, result.flow_id, scratch / "exact.mp4", clip, exact=True)
            return t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3

    ingest_s, export_s, clip_s, exact_s = asyncio.run(run())
    mb = size / 1e6

    def rate(seconds: float) -> str:
        return f"{mb / seconds:.1f} MB/s, {segments / seconds:.0f} seg/s"

    return [
        (
            f"ingest {mb:.0f} MB, {segments} segments (floor: PyAV segmenting to files)",
            rate(ingest_s),
            rate(floor_ingest),
            f"{floor_ingest / ingest_s:.2f} of floor",
        ),
        (
            f"export {mb:.0f} MB to .mp4 (floor: PyAV remux of the segment files into one)",
            rate(export_s),
            rate(floor_export),
            f"{floor_export / export_s:.2f} of floor",
        ),
        (
            f"export {seconds} s cut 0.5 s into segments, --exact (beside: the same at segment boundaries)",
            f"{exact_s * 1000:.0f} ms",
            f"{clip_s * 1000:.0f} ms",
            f"{exact_s / clip_s:.1f}x the time",
        ),
    ]


def _raw_copy(media_root: Path, out: Path) -> tuple[float, int, int]:
    """Every Object file of the source's media directory written to another directory, each
    fsynced before it counts, as the target's filesystem backend does: the floor of a sync."""
    files = [f for f in media_root.rglob("*") if f.is_file() and f.suffix != ".id" and ".tmp" not in f.parts]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    size = 0
    for i, f in enumerate(files):
        data = f.read_bytes()
        with open(out / str(i), "wb") as dst:
            dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        size += len(data)
    return time.perf_counter() - t0, len(files), size


def bench_sync(source_url: str, source_media: Path, target_url: str, media: Path, scratch: Path) -> list[Row]:
    """``tamstore sync`` of an ingested input from one served tamstore to another, beside a raw
    copy of the same Object files between the two stores' disks."""

    async def run() -> tuple[float, int, int]:
        async with AsyncTamsClient(source_url) as source, AsyncTamsClient(target_url) as target:
            await ingest(source, str(media), IngestOptions(name="bench-sync"))
            flows = await select_flows(source, [], [], True)
            t0 = time.perf_counter()
            done = await sync(source, target, flows, SyncOptions(jobs=8))
            return time.perf_counter() - t0, done.segments, done.bytes

    seconds, segments, size = asyncio.run(run())
    floor_s, files, floor_size = _raw_copy(source_media, scratch / "raw-copy")

    def rate(s: float, count: int, nbytes: int) -> str:
        return f"{nbytes / s / 1e6:.1f} MB/s, {count / s:.0f} seg/s"

    return [
        (
            f"sync {size / 1e6:.0f} MB, {segments} segments (floor: the {files} Object files copied, fsynced)",
            rate(seconds, segments, size),
            rate(floor_s, files, floor_size),
            f"{(size / seconds) / (floor_size / floor_s):.2f} of floor",
        )
    ]

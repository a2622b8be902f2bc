"""The upload writer: bytes in order, bounded memory while the disk lags, failures reported,
and an abandoned upload's thread stopped."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tamstore.store.media import file_writer
from tamstore.store.media.file_writer import BackgroundFileWriter
from tamstore.store.media.filesystem import FilesystemMediaStore


async def test_every_chunk_is_written_in_order(tmp_path: Path) -> None:
    chunks = [os.urandom(n) for n in (1, 65536, 7, 300_000, 0, 12345)] * 40
    target = tmp_path / "object"
    async with BackgroundFileWriter(target) as f:
        for chunk in chunks:
            await f.write(chunk)
        await f.close()
    assert target.read_bytes() == b"".join(chunks)


async def test_a_slow_disk_holds_the_upload_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the disk lags, ``write`` returns only once no more than MAX_QUEUED bytes wait in
    memory. (The slow disk is a fake: a real one cannot be had on
    demand.)"""
    monkeypatch.setattr(file_writer, "MAX_QUEUED", 256 * 1024)
    real = file_writer._write_all

    def slow(fd: int, chunks: list[bytes]) -> int:
        time.sleep(0.005)
        return real(fd, chunks)

    monkeypatch.setattr(file_writer, "_write_all", slow)
    chunk = os.urandom(64 * 1024)
    most = 0
    async with BackgroundFileWriter(tmp_path / "object") as f:
        for _ in range(64):
            await f.write(chunk)
            most = max(most, f._queued)
        await f.close()
    assert 0 < most <= 256 * 1024
    assert (tmp_path / "object").stat().st_size == 64 * len(chunk)


async def test_a_failure_on_the_disk_reaches_the_upload(tmp_path: Path) -> None:
    target = tmp_path / "missing-directory" / "object"  # open() fails on the writer thread
    with pytest.raises(FileNotFoundError):
        async with BackgroundFileWriter(target) as f:
            for _ in range(10):
                await f.write(b"x" * 1000)
            await f.close()


async def test_an_abandoned_upload_stops_its_thread(tmp_path: Path) -> None:
    target = tmp_path / "object"
    with pytest.raises(ConnectionResetError):
        async with BackgroundFileWriter(target) as f:
            await f.write(b"x" * 1000)
            raise ConnectionResetError("the client went away")
    assert f._finished is not None and f._finished.done()
    target.unlink()  # the file was closed: the caller removes it


async def test_no_more_uploads_are_written_at_once_than_the_store_allows(tmp_path: Path) -> None:
    """Each upload being written may hold MAX_QUEUED bytes: the store writes at most
    ``uploads_at_once`` at a time, and the next one starts when one finishes."""
    store = FilesystemMediaStore(tmp_path / "media", b"k" * 32, url_timeout=60, uploads_at_once=2)
    release = [asyncio.Event() for _ in range(3)]
    started: list[int] = []

    def body(i: int) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            started.append(i)
            yield b"x" * 1000
            await release[i].wait()

        return chunks()

    uploads = [asyncio.create_task(store.write(f"object-{i}", body(i))) for i in range(3)]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert sorted(started) == [0, 1]  # the third waits for a turn
    release[0].set()
    await uploads[0]
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert sorted(started) == [0, 1, 2]
    release[1].set()
    release[2].set()
    assert await asyncio.gather(*uploads) == [1000, 1000, 1000]

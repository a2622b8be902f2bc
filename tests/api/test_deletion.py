"""Deletion (CHECKLIST §7.4, §11; ADR 0004; AppNote 0019): inline and asynchronous, reference-
counted Objects, the recovery window, and cleanup of orphaned media."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import loader
from tamstore.config import Settings
from tamstore.testing import SpecSchemas, app_client
from tests.conftest import add_segments, allocate, media_request, put_flow, stored_bytes


async def _wait_done(client: httpx.AsyncClient, location: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        doc = (await client.get(location)).json()
        if doc["status"] in ("done", "error") or time.monotonic() > deadline:
            return doc  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)


def _load(settings: Settings, flow_id: str, n: int) -> None:
    """Segments straight into the database (fast), as the API would have written them."""
    if settings.database_url:
        asyncio.get_event_loop_policy()
        return asyncio.run(loader.load_postgres(settings.database_url, [(flow_id, n, {})]))  # type: ignore[func-returns-value]
    loader.load_sqlite(settings.data_dir / "tamstore.db", [(flow_id, n, {})])
    return None


@pytest.mark.slow
def test_deleting_a_flow_of_100000_segments_runs_in_the_background(settings: Settings, schemas: SpecSchemas) -> None:
    flow_id = str(uuid.uuid4())

    async def run() -> None:
        async with app_client(settings, workers=True) as client:
            await asyncio.to_thread(_load, settings, flow_id, 100_000)
            r = await client.delete(f"/flows/{flow_id}")
            assert r.status_code == 202
            schemas.check("deletion-request.json", r.json())
            assert r.json()["delete_flow"] is True
            location = r.headers["location"]
            assert location.startswith("http://testserver/flow-delete-requests/")
            again = await client.delete(f"/flows/{flow_id}")  # asking twice: the same request
            assert again.status_code == 202 and again.json()["id"] == r.json()["id"]
            # reads keep working while the worker deletes
            page = await client.get(f"/flows/{flow_id}/segments?limit=10&reverse_order=true")
            assert page.status_code == 200
            doc = await _wait_done(client, location)
            schemas.check("deletion-request.json", doc)
            assert doc["status"] == "done", doc
            assert (await client.get(f"/flows/{flow_id}")).status_code == 404
            assert (await client.get(f"/flows/{flow_id}/segments")).json() == []
            assert (await client.get(f"/objects/{flow_id[:8]}%2F5")).status_code == 404
            listing = await client.get("/flow-delete-requests")
            schemas.check_items("deletion-request.json", listing.json())
            assert r.json()["id"] in [d["id"] for d in listing.json()]
            assert listing.headers["x-paging-count"] == str(len(listing.json()))

    asyncio.run(run())


async def test_small_deletions_finish_inline(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0, 1])
    assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
    assert (await client.get(f"/flow-delete-requests/{uuid.uuid4()}")).status_code == 404
    assert (await client.get("/flow-delete-requests?sort_by=size")).status_code == 400


async def test_large_segment_deletion_reports_progress(settings: Settings, schemas: SpecSchemas) -> None:
    settings = dataclasses.replace(settings, inline_delete_limit=5)
    async with app_client(settings, workers=True) as client:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], list(range(30)))
        r = await client.delete(f"/flows/{flow['id']}/segments?timerange=[10:0_")
        assert r.status_code == 202
        assert r.json()["delete_flow"] is False and r.json()["timerange_to_delete"] == "[10:0_"
        doc = await _wait_done(client, r.headers["location"])
        assert doc["status"] == "done" and doc["timerange_remaining"] == "()"
        assert "expiry" in doc
        left = (await client.get(f"/flows/{flow['id']}/segments")).json()
        assert [s["timerange"] for s in left][-1] == "[9:0_10:0)"
        by_expiry = await client.get("/flow-delete-requests?sort_by=expiry&reverse_order=true")
        assert by_expiry.status_code == 200 and by_expiry.headers["x-paging-reverse-order"] == "true"


async def test_shared_object_survives_until_its_last_flow_goes(client: httpx.AsyncClient) -> None:
    a = await put_flow(client)
    b = await put_flow(client)
    [obj] = await allocate(client, a["id"])
    assert (await media_request(client, "PUT", obj["put_url"]["url"], content=b"shared")).status_code == 200
    seg = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
    assert (await client.post(f"/flows/{a['id']}/segments", json=seg)).status_code == 201
    assert (await client.post(f"/flows/{b['id']}/segments", json=seg)).status_code == 201
    assert (await client.delete(f"/flows/{a['id']}")).status_code == 204
    doc = (await client.get(f"/objects/{obj['object_id']}")).json()
    assert doc["referenced_by_flows"] == [b["id"]]
    assert await stored_bytes(client, obj["object_id"]) == b"shared"
    assert (await client.delete(f"/flows/{b['id']}/segments")).status_code == 204
    assert (await client.get(f"/objects/{obj['object_id']}")).status_code == 404
    assert await stored_bytes(client, obj["object_id"]) is None


async def test_init_objects_go_with_their_last_media_object(client: httpx.AsyncClient) -> None:
    flow = {**(await put_flow(client)), "container": "video/mp4"}
    flow["essence_parameters"] = {**flow["essence_parameters"], "init_segments": True}
    assert (await client.put(f"/flows/{flow['id']}", json=flow)).status_code == 204
    [init] = await allocate(client, flow["id"], content_type="video/mp4")
    media = await allocate(client, flow["id"], 2)
    body = [
        {"object_id": m["object_id"], "timerange": f"[{i}:0_{i + 1}:0)", "init_object_id": init["object_id"]}
        for i, m in enumerate(media)
    ]
    assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    assert (await client.delete(f"/flows/{flow['id']}/segments?timerange=[0:0_1:0)")).status_code == 204
    assert (await client.get(f"/objects/{init['object_id']}")).status_code == 200
    assert (await client.delete(f"/flows/{flow['id']}/segments")).status_code == 204
    assert (await client.get(f"/objects/{init['object_id']}")).status_code == 404


async def test_restore_inside_the_recovery_window(settings: Settings) -> None:
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        from tamstore.ops import deletion

        flow = await put_flow(client, label="precious")
        oids = await add_segments(client, flow["id"], [0, 1, 2])
        assert (await client.delete(f"/flows/{flow['id']}/segments?timerange=[1:0_3:0)")).status_code == 204
        assert len((await client.get(f"/flows/{flow['id']}/segments")).json()) == 1
        assert (await client.get(f"/objects/{oids[1]}")).status_code == 200  # kept for the window
        assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
        assert (await client.get(f"/flows/{flow['id']}")).status_code == 404
        assert (await client.get(f"/sources/{flow['source_id']}")).status_code == 404
        listed = await deletion.list_deleted(ctx)
        assert [d["what"] for d in listed] == ["flow", "segments"]
        await deletion.restore(ctx, listed[0]["id"])  # the flow (and its last segment)
        got = (await client.get(f"/flows/{flow['id']}?include_timerange=true")).json()
        assert got["label"] == "precious" and got["timerange"] == "[0:0_1:0)"
        assert (await client.get(f"/sources/{flow['source_id']}")).status_code == 200
        await deletion.restore(ctx, listed[1]["id"])  # then the two segments
        segs = (await client.get(f"/flows/{flow['id']}/segments")).json()
        assert [s["object_id"] for s in segs] == oids
        assert (await client.get(f"/objects/{oids[2]}")).json()["referenced_by_flows"] == [flow["id"]]
        # after the window everything goes for good
        assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
        assert await deletion.purge_recovery_window(ctx, everything=True) == 1
        assert await deletion.list_deleted(ctx) == []
        assert (await client.get(f"/objects/{oids[0]}")).status_code == 404


async def test_an_object_in_a_younger_batch_outlives_an_older_batch(settings: Settings) -> None:
    """Purging one expired batch keeps an Object that a batch still in the window holds."""
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        from tamstore.ops import deletion

        a, b = await put_flow(client), await put_flow(client)
        [obj] = await allocate(client, a["id"])
        assert (await media_request(client, "PUT", obj["put_url"]["url"], content=b"kept")).status_code == 200
        seg = {"object_id": obj["object_id"], "timerange": "[0:0_1:0)"}
        for flow in (a, b):
            assert (await client.post(f"/flows/{flow['id']}/segments", json=seg)).status_code == 201
        assert (await client.delete(f"/flows/{b['id']}/segments")).status_code == 204  # the older batch
        await asyncio.sleep(1.1)
        assert (await client.delete(f"/flows/{a['id']}/segments")).status_code == 204  # the younger one
        ctx.settings = dataclasses.replace(ctx.settings, recovery_window=1)
        assert await deletion.purge_recovery_window(ctx) == 1  # only the older batch has expired
        assert await stored_bytes(client, obj["object_id"]) == b"kept"
        [younger] = await deletion.list_deleted(ctx)
        await deletion.restore(ctx, younger["id"])
        assert (await client.get(f"/objects/{obj['object_id']}")).json()["referenced_by_flows"] == [a["id"]]


async def test_restore_refuses_to_overwrite(settings: Settings) -> None:
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        from tamstore.domain.errors import BadRequest
        from tamstore.ops import deletion

        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0])
        assert (await client.delete(f"/flows/{flow['id']}/segments")).status_code == 204
        await add_segments(client, flow["id"], [0])  # something new took its place
        [batch] = await deletion.list_deleted(ctx)
        with pytest.raises(BadRequest):
            await deletion.restore(ctx, batch["id"])
        assert len(await deletion.list_deleted(ctx)) == 1


def _cli(*args: str, settings: Settings, stdin: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    env_args = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        env_args += ["--database-url", settings.database_url]
    return subprocess.run(
        [sys.executable, "-m", "tamstore", "admin", *args, *env_args],
        capture_output=True,
        text=True,
        stdin=stdin,
        timeout=60,
    )


async def test_cleanup_finds_orphans_and_dry_run_deletes_nothing(settings: Settings) -> None:
    settings = dataclasses.replace(settings, min_object_timeout=300)
    async with app_client(settings) as client:
        flow = await put_flow(client)
        [kept, orphan] = await allocate(client, flow["id"], 2)
        for o in (kept, orphan):
            assert (await media_request(client, "PUT", o["put_url"]["url"], content=b"bytes")).status_code == 200
        seg = {"object_id": kept["object_id"], "timerange": "[0:0_1:0)"}
        assert (await client.post(f"/flows/{flow['id']}/segments", json=seg)).status_code == 201
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        stray = await _plant_stray_media(ctx)
        store = ctx.store
        from sqlalchemy import update

        from tamstore.store.metadata import tables as t

        async with store.write() as tx:
            await tx.conn.execute(update(t.objects).where(t.objects.c.id == orphan["object_id"]).values(allocated_at=0))

    cli_settings = [
        "--min-age",
        "0",
        "--min-object-timeout",
        "300",
        "--presigned-url-timeout",
        "300",
        *_storage_args(settings),
    ]
    dry = await asyncio.to_thread(_cli, "cleanup", "--dry-run", *cli_settings, settings=settings)
    assert dry.returncode == 0, dry.stderr
    assert orphan["object_id"] in dry.stdout and stray in dry.stdout
    assert kept["object_id"] not in dry.stdout
    async with app_client(settings) as client:
        assert await stored_bytes(client, orphan["object_id"]) == b"bytes"
    refused = await asyncio.to_thread(_cli, "cleanup", *cli_settings, settings=settings)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    done = await asyncio.to_thread(_cli, "cleanup", "--yes", *cli_settings, settings=settings)
    assert done.returncode == 0, done.stderr
    async with app_client(settings) as client:
        assert await stored_bytes(client, orphan["object_id"]) is None
        assert await stored_bytes(client, kept["object_id"]) == b"bytes"
    again = await asyncio.to_thread(_cli, "cleanup", "--dry-run", *cli_settings, settings=settings)
    assert "nothing to clean up" in again.stdout


async def _plant_stray_media(ctx: Any) -> str:
    """Bytes with no Object record, made to look old; returns how cleanup will name them."""
    import os

    old = time.time() - 7200
    fs = ctx.filesystem
    if fs is not None:
        stray = fs.root / "ab" / "cd" / ("0" * 64)
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"nobody's")
        for p in fs.root.rglob("*"):
            if p.is_file():
                os.utime(p, (old, old))
        return str(stray)
    [s3] = ctx.backends.values()
    await asyncio.to_thread(s3.client.put_object, Bucket=s3.bucket, Key="not-an-object-id!", Body=b"nobody's")
    return "not-an-object-id!"


def _storage_args(settings: Settings) -> list[str]:
    if settings.s3_bucket:
        return ["--s3-bucket", settings.s3_bucket, "--s3-endpoint-url", str(settings.s3_endpoint_url)]
    return []


async def test_admin_deleted_and_restore_commands(settings: Settings) -> None:
    settings = dataclasses.replace(settings, recovery_window=3600)
    async with app_client(settings) as client:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0, 1])
        assert (await client.delete(f"/flows/{flow['id']}")).status_code == 204
    listed = await asyncio.to_thread(_cli, "deleted", "--recovery-window", "3600", settings=settings)
    assert listed.returncode == 0 and flow["id"] in listed.stdout
    batch = listed.stdout.split()[0]
    restored = await asyncio.to_thread(_cli, "restore", batch, "--recovery-window", "3600", settings=settings)
    assert restored.returncode == 0, restored.stderr
    assert "2 segments" in restored.stdout
    missing = await asyncio.to_thread(_cli, "restore", "nope", settings=settings)
    assert missing.returncode != 0 and "nope" in missing.stderr
    async with app_client(settings) as client:
        assert len((await client.get(f"/flows/{flow['id']}/segments")).json()) == 2


def pending_request(flow_id: str, request_id: str | None = None) -> dict[str, Any]:
    """A flow-delete-request row for all of the Flow's segments, as the API would make it."""
    from tamstore.ops.context import now_us

    return {
        "id": request_id or str(uuid.uuid4()),
        "flow_id": flow_id,
        "timerange_to_delete": "_",
        "delete_flow": False,
        "status": "created",
        "created": now_us(),
        "updated": now_us(),
    }


async def test_two_workers_never_claim_the_same_request(settings: Settings) -> None:
    from tamstore.app import open_context
    from tamstore.ops.context import now_us

    async with app_client(settings) as client:
        flow = await put_flow(client)
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        for _ in range(2):
            async with ctx.store.write() as tx:
                await tx.insert_delete_request(pending_request(flow["id"]))
        other = await open_context(settings)
        try:
            first_claimed = asyncio.Event()
            release = asyncio.Event()
            claims: list[str] = []

            async def worker_a() -> None:
                async with ctx.store.write() as tx:
                    row = await tx.claim_delete_request("a", now_us(), now_us() + 60_000_000)
                    claims.append(row.id)
                    first_claimed.set()
                    await release.wait()  # hold the transaction (and its row lock) open

            async def worker_b() -> None:
                await first_claimed.wait()
                async with other.store.write() as tx:
                    row = await tx.claim_delete_request("b", now_us(), now_us() + 60_000_000)
                    claims.append(row.id)

            a = asyncio.create_task(worker_a())
            b = asyncio.create_task(worker_b())
            await asyncio.sleep(0.5)
            release.set()
            await asyncio.gather(a, b)
            assert len(claims) == 2 and claims[0] != claims[1]
        finally:
            await other.store.close()


@pytest.mark.slow
def test_a_killed_worker_leaves_a_request_the_next_one_finishes(tmp_path: Path, database_url: str | None) -> None:
    import signal

    from tests.live import LiveServer

    env = {"TAMSTORE_INLINE_DELETE_LIMIT": "10", "TAMSTORE_WORKER_LEASE": "1"}
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    server = LiveServer(settings.data_dir, database_url, **env).start()
    flow_id = str(uuid.uuid4())
    _load(settings, flow_id, 60_000)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.delete(f"/flows/{flow_id}")
        assert r.status_code == 202
        location = r.headers["location"].replace("http://127.0.0.1", "http://127.0.0.1")
        while c.get(location).json()["timerange_remaining"] == "_":
            time.sleep(0.01)
        server.kill(signal.SIGKILL)
    server = LiveServer(settings.data_dir, database_url, **env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            path = "/flow-delete-requests/" + r.json()["id"]
            deadline = time.monotonic() + 120
            while (doc := c.get(path).json())["status"] != "done" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert doc["status"] == "done"
            assert c.get(f"/flows/{flow_id}").status_code == 404
    finally:
        server.stop()


async def test_admin_check_and_stats(settings: Settings) -> None:
    async with app_client(settings) as client:
        flow = await put_flow(client)
        [obj, lost] = await allocate(client, flow["id"], 2)
        for o in (obj, lost):
            assert (await media_request(client, "PUT", o["put_url"]["url"], content=b"data")).status_code == 200
        body = [{"object_id": o["object_id"], "timerange": f"[{i}:0_{i + 1}:0)"} for i, o in enumerate((obj, lost))]
        assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
    args = _storage_args(settings)
    ok = await asyncio.to_thread(_cli, "check", *args, settings=settings)
    assert ok.returncode == 0 and "consistent" in ok.stdout, ok.stdout + ok.stderr
    stats = await asyncio.to_thread(_cli, "stats", *args, settings=settings)
    assert stats.returncode == 0
    import json

    figures = json.loads(stats.stdout)
    assert figures["flows"] == 1 and figures["segments"] == 2 and figures["storage"][0]["objects"] == 2
    async with app_client(settings) as client:  # lose one Object's bytes behind tamstore's back
        [backend] = client.app.state.ctx.backends.values()  # type: ignore[attr-defined]
        await backend.delete([lost["object_id"]])
    bad = await asyncio.to_thread(_cli, "check", *args, settings=settings)
    assert bad.returncode == 1 and f"missing media: Object {lost['object_id']}" in bad.stdout


async def test_a_worker_that_lost_its_lease_stops_quietly(settings: Settings) -> None:
    """Another worker took the request over: the first one's chunk rolls back, nothing is
    recorded as an error, and the request stays with the new holder."""
    from tamstore.ops import deletion
    from tamstore.ops.context import now_us

    async with app_client(settings) as client:
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0, 1, 2])
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        request_id = str(uuid.uuid4())
        async with ctx.store.write() as tx:
            await tx.insert_delete_request(pending_request(flow["id"], request_id))
            mine = await tx.claim_delete_request("a", now_us(), now_us())  # a lease already over
        async with ctx.store.write() as tx:
            taken = await tx.claim_delete_request("b", now_us(), now_us() + 60_000_000)
        assert mine.id == taken.id == request_id
        with pytest.raises(deletion._LeaseLost):
            await deletion._carry_out(ctx, mine, "a", 60_000_000)
        assert len((await client.get(f"/flows/{flow['id']}/segments")).json()) == 3
        doc = (await client.get(f"/flow-delete-requests/{request_id}")).json()
        assert doc["status"] != "error" and "error" not in doc


async def test_a_chunk_that_fails_leaves_no_bytes_of_the_chunks_before_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's chunks commit one by one and each one's bytes go after it commits. When a
    later chunk fails, the bytes of those that committed are gone all the same, and the failed
    chunk's segments keep theirs."""
    from tamstore.ops import deletion
    from tamstore.ops.context import now_us

    monkeypatch.setattr(deletion, "CHUNK", 2)
    monkeypatch.setattr(deletion, "CHUNK_POSTGRESQL", 2)
    async with app_client(settings) as client:
        flow = await put_flow(client)
        objs = await allocate(client, flow["id"], 5)
        for o in objs:
            assert (await media_request(client, "PUT", o["put_url"]["url"], content=b"data")).status_code == 200
        body = [{"object_id": o["object_id"], "timerange": f"[{i}:0_{i + 1}:0)"} for i, o in enumerate(objs)]
        assert (await client.post(f"/flows/{flow['id']}/segments", json=body)).status_code == 201
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        async with ctx.store.write() as tx:
            await tx.insert_delete_request(pending_request(flow["id"]) | {"delete_flow": True})
            request = await tx.claim_delete_request("a", now_us(), now_us() + 60_000_000)

        async def fails(*args: Any) -> None:  # the last chunk's transaction fails as it ends
            raise RuntimeError("the database went away")

        monkeypatch.setattr(deletion, "_drop_flow", fails)
        with pytest.raises(RuntimeError):
            await deletion._carry_out(ctx, request, "a", 60_000_000)
        left = [s["object_id"] for s in (await client.get(f"/flows/{flow['id']}/segments")).json()]
        assert left == [objs[4]["object_id"]]
        assert [await stored_bytes(client, o["object_id"]) for o in objs] == [None] * 4 + [b"data"]


async def test_a_finished_request_is_purged_by_the_workers_pass_once_it_expires(settings: Settings) -> None:
    """A worker reads whether anything is due before it takes the write lock: a request to carry
    out, or a finished one past ``delete_request_retention``, which that pass then purges."""
    from tamstore.ops import deletion

    settings = dataclasses.replace(settings, inline_delete_limit=1, delete_request_retention=1)
    async with app_client(settings) as client:
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        flow = await put_flow(client)
        await add_segments(client, flow["id"], [0, 1, 2])
        r = await client.delete(f"/flows/{flow['id']}")
        assert r.status_code == 202, r.text
        path = f"/flow-delete-requests/{r.json()['id']}"
        assert await deletion.run_next_delete_request(ctx, "me")  # carried out
        assert not await deletion.run_next_delete_request(ctx, "me")  # nothing due
        assert (await client.get(path)).json()["status"] == "done"
        await asyncio.sleep(1.1)
        assert (await client.get(path)).status_code == 404  # (no longer listed, still stored)
        assert await _stored_requests(ctx) == 1
        assert not await deletion.run_next_delete_request(ctx, "me")  # nothing to carry out, one to purge
        assert await _stored_requests(ctx) == 0


async def _stored_requests(ctx: Any) -> int:
    from sqlalchemy import func, select

    from tamstore.store.metadata import tables as t

    async with ctx.store.read() as tx:
        return int((await tx.conn.execute(select(func.count()).select_from(t.flow_delete_requests))).scalar_one())

"""Operating tamstore (issue: analytics, metrics, logs, health, configuration)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tamstore.config import Settings
from tamstore.testing import app_client
from tests.conftest import add_segments, allocate, audio_flow, media_request, new_id, put_flow
from tests.live import LiveServer


async def test_analytics_on_a_known_store(client: httpx.AsyncClient) -> None:
    a = await put_flow(client)
    b = await put_flow(client, source_id=a["source_id"])
    audio = audio_flow(container="audio/aac")
    audio_id = audio["id"]
    assert (await client.put(f"/flows/{audio_id}", json=audio)).status_code == 201
    objs = await allocate(client, a["id"], 2)
    for o in objs:
        assert (await media_request(client, "PUT", o["put_url"]["url"], content=b"x" * 1000)).status_code == 200
    body = [{"object_id": o["object_id"], "timerange": f"[{i * 10}:0_{i * 10 + 10}:0)"} for i, o in enumerate(objs)]
    assert (await client.post(f"/flows/{a['id']}/segments", json=body)).status_code == 201
    await add_segments(client, b["id"], [0, 1, 2, 5])  # a gap from 3 to 5
    # Uploads through tamstore's own media URLs are measured as they arrive; uploads straight to
    # an S3 bucket are learnt afterwards by housekeeping (run here rather than waited for).
    from tamstore.ops.analytics import learn_sizes

    learnt = await learn_sizes(client.app.state.ctx)  # type: ignore[attr-defined]
    assert learnt == (0 if client.app.state.ctx.filesystem else 2)  # type: ignore[attr-defined]
    known = 2000
    usage = (await client.get("/x-tamstore/analytics/flows?group_by=format")).json()
    video = next(g for g in usage["groups"] if g["format"] == "urn:x-nmos:format:video")
    assert video == {
        "format": "urn:x-nmos:format:video",
        "flows": 2,
        "segments": 6,
        "media_hours": round(24 / 3600, 6),
        "stored_bytes": known,
    }
    assert usage["totals"]["flows"] == 3
    by_source = (await client.get(f"/x-tamstore/analytics/flows?source_id={a['source_id']}")).json()
    assert by_source["totals"]["segments"] == 6
    later = (await client.get("/x-tamstore/analytics/flows?timerange=[15:0_")).json()
    assert later["totals"]["flows"] == 1
    assert (await client.get("/x-tamstore/analytics/flows?group_by=colour")).status_code == 400
    storage = (await client.get("/x-tamstore/analytics/storage")).json()
    [backend] = storage["backends"]
    assert backend["objects"] == 6 and backend["bytes"] == known
    timeline = (await client.get(f"/x-tamstore/analytics/flows/{b['id']}/timeline?timerange=[0:0_10:0)")).json()
    assert timeline["segments"] == 4 and timeline["gaps"] == ["[3:0_5:0)", "[6:0_10:0)"]
    assert timeline["coverage"] == 0.4 and timeline["segment_duration"]["mean_seconds"] == 1.0
    # the same range in five parts of 2 s, for drawing: [0, 3) and [5, 6) are covered
    drawn = (await client.get(f"/x-tamstore/analytics/flows/{b['id']}/timeline?timerange=[0:0_10:0)&buckets=5")).json()
    assert drawn["coverage_buckets"] == [1.0, 0.5, 0.5, 0.0, 0.0]
    whole = (await client.get(f"/x-tamstore/analytics/flows/{b['id']}/timeline")).json()
    assert whole["timerange"] == "[0:0_6:0)" and whole["gaps"] == ["[3:0_5:0)"]
    # deleting brings the counters down again
    assert (await client.delete(f"/flows/{a['id']}")).status_code == 204
    storage = (await client.get("/x-tamstore/analytics/storage")).json()
    assert storage["backends"][0]["objects"] == 4 and storage["backends"][0]["bytes"] == 0
    usage = (await client.get("/x-tamstore/analytics/flows")).json()
    assert usage["totals"]["segments"] == 4


async def test_metrics_after_known_traffic(client: httpx.AsyncClient) -> None:
    flow = await put_flow(client)
    await add_segments(client, flow["id"], [0, 1, 2])
    for _ in range(3):
        await client.get("/flows")
    await client.get(f"/flows/{new_id()}")
    r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("tamstore_requests_total", (("method", "GET"), ("route", "/flows"), ("status", "200")))] == 3
    assert (
        samples[("tamstore_requests_total", (("method", "GET"), ("route", "/flows/{flow_id}"), ("status", "404")))] == 1
    )
    assert samples[("tamstore_segments_registered_total", ())] == 3
    count = samples[("tamstore_request_duration_seconds_count", (("method", "GET"), ("route", "/flows")))]
    assert count == 3
    stored = [v for (name, _), v in samples.items() if name == "tamstore_stored_objects"]
    assert stored == [3]
    assert samples[("tamstore_deletion_backlog", ())] == 0


async def test_health_and_readiness(settings: Settings) -> None:
    async with app_client(settings) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        r = await client.get("/readyz")
        assert r.status_code == 200 and all(v == "ok" for v in r.json()["checks"].values())
        [backend] = client.app.state.ctx.backends.values()  # type: ignore[attr-defined]
        fs = client.app.state.ctx.filesystem  # type: ignore[attr-defined]
        if fs is not None:
            fs.root.rename(fs.root.with_name("gone"))  # the media directory disappears
        else:
            bucket, backend.bucket = backend.bucket, "no-such-bucket"  # the bucket is not there
        r = await client.get("/readyz")
        storage = next(v for k, v in r.json()["checks"].items() if k.startswith("storage"))
        assert r.status_code == 503 and "unavailable" in storage and r.json()["checks"]["database"] == "ok"
        where = str(fs.root) if fs is not None else backend.client.meta.endpoint_url
        assert where not in r.text, "anyone may read /readyz: it names states, not paths or addresses"
        if fs is not None:
            fs.root.with_name("gone").rename(fs.root)
        else:
            backend.bucket = bucket
        assert (await client.get("/readyz")).status_code == 200


def test_json_request_logs(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", TAMSTORE_LOG_FORMAT="json").start()
    try:
        httpx.get(server.url + "/flows?access_token=sekrit", headers={"X-Request-ID": "req-42"})
        httpx.get(server.url + "/nothing/here")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.stderr_text.splitlines() if line.startswith("{")]
    [flows] = [entry for entry in lines if entry.get("request_id") == "req-42"]
    assert flows["method"] == "GET" and flows["route"] == "/flows" and flows["status"] == 200
    assert flows["latency_ms"] >= 0
    assert any(entry.get("route") == "unmatched" and entry["status"] == 404 for entry in lines)
    assert "sekrit" not in server.stderr_text


async def test_request_log_lines_are_written_together_at_the_end_of_a_loop_turn() -> None:
    """The request log's own writer: one JSON or text line per request, all of a turn's lines
    in one write once the turn is over; request ids differ from request to request."""
    import asyncio
    import io

    from tamstore.api.observability import PIPE_BUF, RequestLog, new_request_id

    writes: list[bytes] = []

    class Stream(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            writes.append(bytes(data))
            return len(data)

    fields = {"method": "GET", "route": "/flows", "path": "/flows", "status": 200, "latency_ms": 1.25}
    log = RequestLog()
    log.configure(Stream(), json=True)
    log.write({**fields, "request_id": "a", "principal": None})
    log.write({**fields, "request_id": "b", "principal": "newsdesk"})
    assert writes == []  # not before the turn is over
    await asyncio.sleep(0)
    [both] = writes
    first, second = (json.loads(line) for line in both.splitlines())
    assert first["request_id"] == "a" and "principal" not in first and first["msg"] == "request"
    assert second["principal"] == "newsdesk" and second["status"] == 200 and second["time"].endswith("Z")
    log.configure(Stream(), json=False)
    log.write({**fields, "request_id": "c", "principal": None})
    await asyncio.sleep(0)
    assert writes[-1].decode().endswith(" INFO tamstore.requests: GET /flows 200 1.2ms\n")
    forged = "/flows\n2026-12-04 00:00:00,000 INFO tamstore.requests: DELETE /flows 204 0.1ms"
    log.write({**fields, "path": forged, "request_id": "d", "principal": None})  # GET /flows%0A...
    await asyncio.sleep(0)
    assert writes[-1].count(b"\n") == 1 and b"\\n2026" in writes[-1]
    before = len(writes)
    for i in range(200):  # a busy turn: whole lines, a pipe's atomic write size at most
        log.write({**fields, "request_id": f"r{i}", "principal": None})
    await asyncio.sleep(0)
    busy = writes[before:]
    assert len(busy) > 1 and all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in busy)
    assert sum(w.count(b"\n") for w in busy) == 200
    assert len({new_request_id() for _ in range(1000)}) == 1000


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tamstore", *args], capture_output=True, text=True, timeout=60)


def test_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    r = run("serve", "--log-format", "yaml", "--data-dir", str(tmp_path))
    assert r.returncode != 0 and "log_format" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("portt = 80\n")
    r = run("--config", str(bad), "serve")
    assert r.returncode != 0 and "portt" in r.stderr
    good = tmp_path / "good.toml"
    good.write_text(f'port = 9123\ndata_dir = "{tmp_path}"\ndatabase_url = "postgresql://me:hunter2@db/tams"\n')
    r = run("--config", str(good), "config", "show")
    assert r.returncode == 0 and "port = 9123" in r.stdout
    assert "hunter2" not in r.stdout and "me:***@db" in r.stdout

"""The event stream (issue 21): ``GET /x-tamstore/events`` read by a real SSE client from real
server processes on each backend pairing: filters, resuming with ``Last-Event-ID``, events
across processes, slow readers, heartbeats, expired ids, authentication."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from tamstore.auth import hash_secret
from tamstore.config import Settings
from tests.conftest import audio_flow, new_id, video_flow
from tests.live import LiveServer
from tests.sse import SseClient


def _segments(c: httpx.Client, flow_id: str, starts: list[int], length: int = 1) -> None:
    objs = c.post(f"/flows/{flow_id}/storage", json={"limit": len(starts)}).json()["media_objects"]
    body = [
        {"object_id": o["object_id"], "timerange": f"[{s}:0_{s + length}:0)"} for o, s in zip(objs, starts, strict=True)
    ]
    assert c.post(f"/flows/{flow_id}/segments", json=body).status_code == 201


def test_every_event_type_arrives_with_its_filters(server: LiveServer) -> None:
    everything = SseClient(server.url + "/x-tamstore/events")
    video = video_flow()
    segments_of_video = SseClient(
        server.url + f"/x-tamstore/events?events=flows/segments_added,flows/segments_deleted&flow_ids={video['id']}"
        "&presigned=true"
    )
    with httpx.Client(base_url=server.url) as c:
        assert c.put(f"/flows/{video['id']}", json=video).status_code == 201
        other = audio_flow(container="video/mp2t")
        assert c.put(f"/flows/{other['id']}", json=other).status_code == 201
        assert c.put(f"/flows/{video['id']}/label", json="news").status_code == 204
        _segments(c, video["id"], [0, 1])
        _segments(c, other["id"], [0])
        assert c.delete(f"/flows/{video['id']}/segments", params={"timerange": "[1:0_2:0)"}).status_code == 204
        assert c.put(f"/sources/{video['source_id']}/label", json="n").status_code == 204
        assert c.delete(f"/flows/{other['id']}").status_code in (200, 204)
    kinds = [e.event for e in everything.wait_for(12)]
    assert kinds == [
        "sources/created",
        "flows/created",
        "sources/created",
        "flows/created",
        "flows/updated",
        "flows/segments_added",
        "flows/segments_added",
        "flows/segments_deleted",
        "sources/updated",
        "flows/segments_deleted",  # deleting a Flow deletes its segments first
        "flows/deleted",
        "sources/deleted",  # and its Source, which nothing else uses
    ]
    ids = [e.id for e in everything.events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # the log's order, each once
    mine = segments_of_video.wait_for(2)
    assert [e.event for e in mine] == ["flows/segments_added", "flows/segments_deleted"]
    added = mine[0].data
    assert added["event_type"] == "flows/segments_added" and added["event"]["flow_id"] == video["id"]
    assert [s["timerange"] for s in added["event"]["segments"]] == ["[0:0_1:0)", "[1:0_2:0)"]
    assert all(u["presigned"] for s in added["event"]["segments"] for u in s["get_urls"])
    time.sleep(0.3)
    assert len(segments_of_video.events) == 2  # nothing of the other Flow, no other type
    everything.close()
    segments_of_video.close()


def test_resuming_after_a_disconnect_gives_each_missed_event_once(server: LiveServer) -> None:
    first = SseClient(server.url + "/x-tamstore/events?events=flows/created")
    with httpx.Client(base_url=server.url) as c:
        for _ in range(3):
            flow = video_flow()
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
        seen = first.wait_for(3)
        first.close()
        missed = []
        for _ in range(5):
            flow = video_flow()
            missed.append(flow["id"])
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
    again = SseClient(
        server.url + "/x-tamstore/events?events=flows/created", headers={"Last-Event-ID": str(seen[-1].id)}
    )
    got = again.wait_for(5)
    assert [e.data["event"]["flow"]["id"] for e in got] == missed
    time.sleep(0.3)
    assert len(again.events) == 5
    with httpx.Client(base_url=server.url) as c:  # and it goes on live after the replay
        flow = video_flow()
        assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
    assert again.wait_for(6)[-1].data["event"]["flow"]["id"] == flow["id"]
    again.close()
    # ?after= does the same
    by_query = SseClient(server.url + f"/x-tamstore/events?events=flows/created&after={seen[-1].id}")
    assert [e.data["event"]["flow"]["id"] for e in by_query.wait_for(6)][:5] == missed
    by_query.close()


def test_an_event_reaches_a_client_of_another_process(settings: Settings) -> None:
    """Two servers on one database (SQLite file, or PostgreSQL): a change made through one
    reaches a stream client of the other, at once (no polling interval to wait out)."""
    one = LiveServer.serving(settings)
    two = LiveServer.serving(settings)
    try:
        client = SseClient(two.url + "/x-tamstore/events?events=flows/created")
        delays = []
        with httpx.Client(base_url=one.url) as c:
            for i in range(5):
                flow = video_flow()
                started = time.monotonic()
                assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
                event = client.wait_for(i + 1)[-1]
                assert event.data["event"]["flow"]["id"] == flow["id"]
                delays.append(event.received - started)
        assert sorted(delays)[2] < 0.5, delays  # woken, not found by the 1 s fallback poll
        client.close()
    finally:
        two.stop()
        one.stop()


def test_a_slow_reader_is_cut_off_while_others_keep_receiving(settings: Settings) -> None:
    live = LiveServer.serving(settings, TAMSTORE_EVENT_STREAM_BUFFER_KIB="64")
    try:
        host, port = "127.0.0.1", live.port
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect((host, port))
        slow.sendall(f"GET /x-tamstore/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        reader = SseClient(live.url + "/x-tamstore/events?events=flows/segments_added")
        flow = video_flow()
        with httpx.Client(base_url=live.url, timeout=60) as c:
            assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
            for i in range(60):  # ~60 events of 500 segments: megabytes the slow one never reads
                _segments(c, flow["id"], list(range(i * 500, (i + 1) * 500)))
        assert len(reader.wait_for(60, timeout=60)) == 60  # the others got everything
        slow.settimeout(20)
        received = b""
        while True:
            chunk = slow.recv(1 << 20)
            if not chunk or b"slow_consumer" in received[-4096:] + chunk:
                received += chunk
                break
            received += chunk
        assert b"event: error" in received and b"slow_consumer" in received
        slow.close()
        reader.close()
    finally:
        live.stop()


def test_heartbeats_expired_and_unknown_ids(settings: Settings) -> None:
    live = LiveServer.serving(settings, TAMSTORE_EVENT_STREAM_HEARTBEAT="1", TAMSTORE_WEBHOOK_EVENT_RETENTION="1")
    try:
        quiet = SseClient(live.url + "/x-tamstore/events")
        with httpx.Client(base_url=live.url) as c:
            for _ in range(3):
                flow = video_flow()
                assert c.put(f"/flows/{flow['id']}", json=flow).status_code == 201
        quiet.wait_for(6)
        deadline = time.monotonic() + 5
        while not quiet.comments and time.monotonic() < deadline:
            time.sleep(0.05)
        assert quiet.comments and quiet.comments[0].startswith(": heartbeat")
        newest = quiet.events[-1].id
        assert newest is not None
        # retention 1 s: the worker purges all but the newest within its next passes
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            expired = SseClient(live.url + "/x-tamstore/events?after=1")
            expired.ended.wait(5)
            if expired.events and expired.events[0].data.get("type") == "events_expired":
                break
            expired.close()
            time.sleep(0.5)
        error = expired.events[0]
        assert error.event == "error" and error.data["type"] == "events_expired" and expired.ended.is_set()
        unknown = SseClient(live.url + f"/x-tamstore/events?after={newest + 1000}")
        unknown.ended.wait(5)
        assert unknown.events[0].data["type"] == "unknown_event_id"
        resumed = SseClient(live.url + f"/x-tamstore/events?after={newest}")  # the newest is kept
        time.sleep(0.3)
        assert resumed.events == [] and not resumed.ended.is_set()
        for bad in ("?after=-1", "?events=flows/nope", "?flow_ids=junk"):
            r = httpx.get(live.url + "/x-tamstore/events" + bad)
            assert r.status_code == 400 and {"type", "summary", "time"} <= set(r.json()), bad
        r = httpx.get(live.url + "/x-tamstore/events", headers={"Last-Event-ID": "x"})
        assert r.status_code == 400
        metrics = httpx.get(live.url + "/metrics").text
        assert "tamstore_event_stream_clients 2.0" in metrics  # quiet and resumed
        quiet.close()
        resumed.close()
    finally:
        live.stop()


def test_the_stream_needs_read_scope(settings: Settings, tmp_path: Path) -> None:
    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(f'[[clients]]\nclient_id = "c"\nclient_secret = "{hash_secret("s")}"\n')
    live = LiveServer.serving(settings, TAMSTORE_AUTH="bearer", TAMSTORE_AUTH_FILE=str(auth_file))
    try:
        assert httpx.get(live.url + "/x-tamstore/events").status_code == 401
        token = httpx.post(
            live.url + "/x-tamstore/oauth2/token", data={"grant_type": "client_credentials"}, auth=("c", "s")
        ).json()["access_token"]
        client = SseClient(live.url + f"/x-tamstore/events?access_token={token}")
        assert client.status == 200
        source = new_id()
        flow = video_flow(source_id=source)
        assert (
            httpx.put(
                f"{live.url}/flows/{flow['id']}", json=flow, headers={"Authorization": f"Bearer {token}"}
            ).status_code
            == 201
        )
        assert [e.event for e in client.wait_for(2)] == ["sources/created", "flows/created"]
        client.close()
    finally:
        live.stop()


def test_streams_past_the_limit_are_refused(settings: Settings) -> None:
    """At most ``event_stream_max_clients`` streams per process: one more is a 503 in the spec's
    error shape, and a place frees when a client goes."""
    live = LiveServer.serving(settings, TAMSTORE_EVENT_STREAM_MAX_CLIENTS="2")
    try:
        first = SseClient(live.url + "/x-tamstore/events")
        second = SseClient(live.url + "/x-tamstore/events")
        refused = httpx.get(live.url + "/x-tamstore/events")
        assert refused.status_code == 503 and {"type", "summary", "time"} <= set(refused.json())
        second.close()
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and "tamstore_event_stream_clients 1.0" not in httpx.get(live.url + "/metrics").text
        ):
            time.sleep(0.1)
        third = SseClient(live.url + "/x-tamstore/events")
        assert third.status == 200 and not third.ended.is_set()
        first.close()
        third.close()
    finally:
        live.stop()
